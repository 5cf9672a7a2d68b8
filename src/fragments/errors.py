"""One error base and one handler: every HTTP error is JSON `{error, detail}`, never a trace."""

from __future__ import annotations

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = structlog.get_logger(__name__)


class FragmentsError(Exception):
    """Base of every error the app answers with; `code` is stable, `detail` is one sentence."""

    status_code: int = 500
    code: str = "internal"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        self.headers = headers or {}


class BadRequest(FragmentsError):
    """The caller sent something we cannot use."""

    status_code = 400
    code = "bad_request"


class PayloadTooLarge(FragmentsError):
    status_code = 413
    code = "payload_too_large"


class NotFound(FragmentsError):
    status_code = 404
    code = "not_found"


class UpstreamError(FragmentsError):
    """A dependency (provider, sandbox, database) failed; not the caller's fault."""

    status_code = 502
    code = "upstream_error"


def error_body(code: str, detail: str) -> dict[str, str]:
    return {"error": code, "detail": detail}


def _describe_validation(exc: RequestValidationError) -> tuple[str, str, int]:
    errors = exc.errors()
    for err in errors:
        if err.get("type") == "json_invalid":
            return "malformed_json", "The request body is not valid JSON.", 400
    if not errors:
        return "invalid_request", "The request does not match the expected schema.", 422
    first = errors[0]
    loc = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "body"
    msg = str(first.get("msg", "is invalid"))
    more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
    return "invalid_request", f"Field '{loc}': {msg}{more}.", 422


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception to the one JSON shape."""

    @app.exception_handler(FragmentsError)
    async def _fragments_error(_: Request, exc: FragmentsError) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.detail), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        code, detail, status = _describe_validation(exc)
        return JSONResponse(error_body(code, detail), status_code=status)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        code = codes.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else "The request failed."
        if exc.status_code == 404:
            detail = "There is nothing at this address."
        return JSONResponse(
            error_body(code, detail), status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", error=type(exc).__name__)
        return JSONResponse(
            error_body("internal", "Something went wrong on our side; please try again."),
            status_code=500,
        )
