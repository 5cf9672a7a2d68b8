"""Builds the configured sandbox service."""

from __future__ import annotations

from fragments.config import Settings
from fragments.redis_client import SharedRedis
from fragments.resilience import BreakerRegistry
from fragments.sandbox.service import SandboxService


def check_backend(settings: Settings) -> None:
    """Refuse at start-up a backend that cannot work: E2B without a key."""
    key = settings.e2b_api_key
    if settings.sandbox_backend == "e2b" and (key is None or not key.get_secret_value()):
        raise RuntimeError(
            "FRAGMENTS_SANDBOX_BACKEND=e2b needs E2B_API_KEY (an API key from e2b.dev); "
            "set it, or use the local backend (FRAGMENTS_SANDBOX_BACKEND=local)."
        )


async def create_sandbox_service(
    settings: Settings,
    breakers: BreakerRegistry | None = None,
    redis: SharedRedis | None = None,
) -> SandboxService:
    """The sandbox backend the settings ask for: `local` (default) or `e2b` (which shares its
    sandboxes' ownership with the fleet through `redis`); its creation breaker
    (`sandbox:<backend>`) comes from the app's registry when given."""
    check_backend(settings)
    name = f"sandbox:{settings.sandbox_backend}"
    breaker = breakers.breaker(name) if breakers is not None else None
    if settings.sandbox_backend == "e2b":
        from fragments.sandbox.e2b import E2BSandboxService

        return E2BSandboxService(settings, breaker=breaker, redis=redis)
    from fragments.sandbox.local.service import LocalSandboxService

    return LocalSandboxService(settings, breaker=breaker)
