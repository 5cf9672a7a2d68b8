"""Structured logging: one JSON object a line on stdout, via structlog.

Every line carries the request's context when it is logged while a request is served
(`request_id`, `user_id`, `team_id`: see `observability.context`) and the `trace_id` of the
active OpenTelemetry span when there is one. Fields whose names say they hold a secret
(passwords, tokens, keys, cookies, authorization headers) are replaced by a marker, wherever
they come from. The standard library's loggers (uvicorn's, SQLAlchemy's, ...) are rendered the
same way by `stdlib_logging_config`, which `fragments serve` hands to uvicorn.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog
from pydantic import SecretStr
from structlog.typing import EventDict, Processor, WrappedLogger

from fragments.config import Settings
from fragments.observability.context import current_request

_configured = False

REDACTED = "[redacted]"
# Lower-case field names that never reach a log line with their value. A substring match on
# "token" would also hide `input_tokens`, so the names are listed whole.
SECRET_FIELDS = frozenset(
    {
        "password",
        "new_password",
        "token",
        "access_token",
        "refresh_token",
        "api_key",
        "apikey",
        "secret",
        "secret_key",
        "authorization",
        "cookie",
        "set-cookie",
        "set_cookie",
        "x-api-key",
        "dsn",
    }
)


def _redact(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """Replace the value of every field named like a secret (see SECRET_FIELDS)."""
    hidden = SECRET_FIELDS.intersection(event)
    for name in hidden:
        event[name] = REDACTED
    return event


# The app's own secrets (provider keys, signing keys, tokens from the settings): no line may
# hold one, whatever field it hides in (a provider's error body quoting the key, say).
_known_secrets: set[str] = set()
# Shorter values would match ordinary words.
_MIN_SECRET_CHARS = 8


def register_secrets(settings: Settings) -> None:
    """Scrub every secret setting's value from log lines from now on."""
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if isinstance(value, SecretStr):
            secret = value.get_secret_value()
            if len(secret) >= _MIN_SECRET_CHARS:
                _known_secrets.add(secret)


def _scrub(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """Replace known secrets (the settings', the request's own) inside string values."""
    info = current_request()
    extra = info.secrets if info is not None else None
    if not _known_secrets and not extra:
        return event
    secrets = [*_known_secrets, *(extra or ())]
    for key, value in event.items():
        if isinstance(value, str):
            for secret in secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            event[key] = value
    return event


def _add_request(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """The served request's id and caller, unless the line names its own."""
    info = current_request()
    if info is not None:
        event.setdefault("request_id", info.request_id)
        if info.user_id is not None:
            event.setdefault("user_id", info.user_id)
        if info.team_id is not None:
            event.setdefault("team_id", info.team_id)
    return event


def _trace_id_reader() -> Callable[[], str | None]:
    """Reads the active span's trace id when OpenTelemetry is installed; else nothing."""
    try:
        from opentelemetry import trace
    except ImportError:  # tracing is optional: no package, no field
        return lambda: None

    get_span = trace.get_current_span

    def read() -> str | None:
        context = get_span().get_span_context()
        if not context.is_valid:
            return None
        return format(context.trace_id, "032x")

    return read


# Resolved once, at import: the processors below must be plain module functions (uvicorn
# pickles its logging configuration into each worker process).
_read_trace_id = _trace_id_reader()


def _add_trace(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    trace_id = _read_trace_id()
    if trace_id is not None:
        event.setdefault("trace_id", trace_id)
    return event


def shared_processors() -> list[Processor]:
    """What every line goes through before rendering, structlog's and the standard library's."""
    return [
        structlog.contextvars.merge_contextvars,
        _add_request,
        _add_trace,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso"),
        _redact,
        _scrub,
    ]


class _CurrentStdout:
    """Whatever `sys.stdout` is when a line is written: loggers are cached on first use, and a
    redirected stdout (a test's capture, an embedding program) must still get the lines."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def configure_logging(level: int = logging.INFO) -> None:
    """Configure structlog once per process."""
    global _configured
    if _configured:
        return
    structlog.configure(
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStdout()),  # type: ignore[arg-type]
        processors=[
            *shared_processors(),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        cache_logger_on_first_use=True,
    )
    _configured = True


def _access_fields(_logger: WrappedLogger, _name: str, event: EventDict) -> EventDict:
    """uvicorn's access record as fields; the query string is dropped (it may hold a token).
    Other records' positional arguments are already in their message."""
    args = event.pop("positional_args", None)
    record = event.get("_record")
    if record is None or record.name != "uvicorn.access":
        return event
    if isinstance(args, tuple) and len(args) == 5:
        client, method, path, http_version, status = args
        event["event"] = "http_access"
        event["client"] = str(client)
        event["method"] = str(method)
        event["path"] = str(path).split("?", 1)[0]
        event["http_version"] = str(http_version)
        event["status"] = status
    else:  # an unknown shape: the message may hold a query string, so it is not logged
        event["event"] = "http_access"
    return event


def stdlib_logging_config(level: str = "info") -> dict[str, Any]:
    """A `logging.config.dictConfig` for uvicorn (`log_config=`): its loggers, the root logger
    and so every library's, rendered as the app's JSON lines on stdout."""
    formatter: MutableMapping[str, Any] = {
        "()": structlog.stdlib.ProcessorFormatter,
        "foreign_pre_chain": [*shared_processors(), _access_fields],
        "pass_foreign_args": True,
        "processors": [
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
    }
    upper = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": formatter},
        "handlers": {
            "stdout": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stdout",
            }
        },
        "loggers": {
            "uvicorn": {"handlers": ["stdout"], "level": upper, "propagate": False},
            "uvicorn.error": {"handlers": ["stdout"], "level": upper, "propagate": False},
            "uvicorn.access": {"handlers": ["stdout"], "level": upper, "propagate": False},
        },
        "root": {"handlers": ["stdout"], "level": "WARNING"},
    }
