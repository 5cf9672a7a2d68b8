"""An E2B sandbox as this process knows it, how one is created (with retries), and how the
SDK's errors are told apart."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field

import structlog
from e2b import (
    AuthenticationException,
    InvalidArgumentException,
    NotFoundException,
    SandboxException,
    SandboxNotRunningException,
    TemplateException,
)
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
)

from fragments.config import Settings
from fragments.sandbox.e2b.sdk import Sandbox, SandboxSDK
from fragments.sandbox.templates import Template

log = structlog.get_logger(__name__)

# Errors another attempt cannot fix: a bad key, a template E2B does not have, bad input.
_PERMANENT = (AuthenticationException, InvalidArgumentException, TemplateException)


@dataclass(eq=False)
class E2BSandbox:
    """One live E2B sandbox."""

    sdk: Sandbox
    template: Template
    owner: str | None
    # Seconds E2B keeps it after its last use (raised by `extend`).
    lifetime: float
    installed: set[str] = field(default_factory=set)
    # Runs on one sandbox are serialized, as in the local backend.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def id(self) -> str:
        return self.sdk.sandbox_id


def timeout_seconds(seconds: float) -> int:
    """E2B takes whole seconds, at least one."""
    return max(1, math.ceil(seconds))


def is_gone(exc: BaseException) -> bool:
    """True when an SDK error says the sandbox no longer exists (killed, or its timeout ran
    out); the SDK reports a sandbox killed during a request with a plain TimeoutException."""
    if isinstance(exc, NotFoundException | SandboxNotRunningException):
        return True
    return isinstance(exc, SandboxException) and "killed" in str(exc)


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, Exception) and not isinstance(exc, _PERMANENT)


def _log_retry(state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    log.warning("e2b_create_retry", attempt=state.attempt_number, error=str(error)[:300])


async def create_sandbox(
    sdk: SandboxSDK, settings: Settings, template: Template, owner: str | None, key: str
) -> E2BSandbox:
    """A new sandbox from the E2B template named like ours, tagged {template, owner}; retried
    `sandbox_start_retries` times (1, 2, 4 x the backoff), then the last error is raised."""
    backoff = settings.sandbox_retry_backoff_seconds
    metadata: dict[str, str] = {"template": template.id}
    if owner is not None:
        metadata["owner"] = owner
    async for attempt in AsyncRetrying(
        stop=stop_after_attempt(settings.sandbox_start_retries + 1),
        wait=wait_exponential(multiplier=backoff, min=backoff, max=4 * backoff),
        retry=retry_if_exception(_retryable),
        before_sleep=_log_retry,
        reraise=True,
    ):
        with attempt:
            created = await sdk.create(
                template=template.id,
                timeout=timeout_seconds(settings.sandbox_lifetime_seconds),
                metadata=metadata,
                api_key=key,
                domain=settings.e2b_domain,
            )
    log.info("e2b_sandbox_created", sandbox_id=created.sandbox_id, template=template.id)
    return E2BSandbox(created, template, owner, settings.sandbox_lifetime_seconds)
