"""The circuit breaker's rules, the same scenarios on memory (a fake clock) and on the shared
Redis (real time, short periods; a key prefix per test)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from fragments.redis_client import SharedRedis
from fragments.resilience import (
    BreakerConfig,
    BreakerOpen,
    BreakerRegistry,
    CircuitBreaker,
    Permit,
)

pytestmark = pytest.mark.anyio

SHARED_REDIS = "redis://127.0.0.1:6379/0"
# Short enough for real-time Redis tests, long enough that a slow machine never crosses one
# by accident between two steps of a test.
WINDOW = 1.5
OPEN = 0.8


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    """A way to make breakers and to let time pass, on one store."""

    make: Callable[[BreakerConfig], CircuitBreaker]
    advance: Callable[[float], Awaitable[None]]
    redis: SharedRedis | None


@pytest.fixture(params=["memory", "redis"])
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    if request.param == "memory":
        clock = FakeClock()

        async def tick(seconds: float) -> None:
            clock.now += seconds

        def make_memory(config: BreakerConfig) -> CircuitBreaker:
            return CircuitBreaker("svc", config, None, clock=clock)

        yield Rig(make_memory, tick, None)
        return
    shared = SharedRedis.connect(SHARED_REDIS)
    try:
        await shared.client.ping()
    except OSError as exc:  # pragma: no cover - Redis runs on the dev and CI machines
        await shared.aclose()
        pytest.skip(f"Redis at 127.0.0.1:6379 is unreachable ({exc})")
    prefix = f"test:breaker:{uuid.uuid4().hex}:"

    def make_shared(config: BreakerConfig) -> CircuitBreaker:
        return CircuitBreaker("svc", config, shared, prefix=prefix)

    try:
        yield Rig(make_shared, asyncio.sleep, shared)
    finally:
        keys = [k async for k in shared.client.scan_iter(match=prefix + "*")]
        if keys:
            await shared.client.delete(*keys)
        await shared.aclose()


CONFIG = BreakerConfig(failures=3, window_seconds=WINDOW, open_seconds=OPEN)


async def fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        permit = await breaker.allow()
        await breaker.record_failure(permit)


async def test_opens_after_n_failures_within_the_window(rig: Rig) -> None:
    breaker = rig.make(CONFIG)
    await fail(breaker, 2)
    assert await breaker.state() == "closed"
    await breaker.allow()  # still lets calls through
    await fail(breaker)
    assert await breaker.state() == "open"
    with pytest.raises(BreakerOpen) as caught:
        await breaker.allow()
    assert 0 < caught.value.retry_after <= OPEN
    assert caught.value.status_code == 503
    assert caught.value.headers["Retry-After"] == "1"


async def test_failures_older_than_the_window_are_forgotten(rig: Rig) -> None:
    breaker = rig.make(CONFIG)
    await fail(breaker, 2)
    await rig.advance(WINDOW + 0.2)
    await fail(breaker, 2)
    assert await breaker.state() == "closed"  # 4 failures, never 3 within the window
    await fail(breaker)
    assert await breaker.state() == "open"


async def test_successes_do_not_reset_the_window(rig: Rig) -> None:
    """N failures in T seconds, not N in a row: successes between them change nothing."""
    breaker = rig.make(CONFIG)
    for _ in range(2):
        await fail(breaker)
        permit = await breaker.allow()
        await breaker.record_success(permit)
    await fail(breaker)
    assert await breaker.state() == "open"


async def test_half_open_lets_exactly_one_probe_and_its_success_closes(rig: Rig) -> None:
    breaker = rig.make(CONFIG)
    await fail(breaker, 3)
    await rig.advance(OPEN + 0.2)
    assert await breaker.state() == "half_open"
    probe = await breaker.allow()
    assert probe.probe
    for _ in range(5):
        with pytest.raises(BreakerOpen):
            await breaker.allow()
    await breaker.record_success(probe)
    assert await breaker.state() == "closed"
    permit = await breaker.allow()
    assert not permit.probe
    # Closed with an empty window: it takes N new failures to open again.
    await fail(breaker, 2)
    assert await breaker.state() == "closed"


async def test_a_failed_probe_opens_again(rig: Rig) -> None:
    breaker = rig.make(CONFIG)
    await fail(breaker, 3)
    await rig.advance(OPEN + 0.2)
    probe = await breaker.allow()
    assert await breaker.record_failure(probe) == "open"
    with pytest.raises(BreakerOpen):
        await breaker.allow()
    await rig.advance(OPEN + 0.2)
    assert (await breaker.allow()).probe  # a new probe after a new open period


async def test_only_the_probe_outcome_counts_while_tripped(rig: Rig) -> None:
    """A call let through before the breaker opened and failing late does not re-open a
    half-open breaker or take the probe's place; its late success does not close it."""
    breaker = rig.make(CONFIG)
    early = [await breaker.allow() for _ in range(2)]
    await fail(breaker, 3)
    await rig.advance(OPEN + 0.2)
    assert await breaker.record_failure(early[0]) == "half_open"
    await breaker.record_success(early[1])
    assert await breaker.state() == "half_open"
    assert (await breaker.allow()).probe


async def test_a_cancelled_probe_gives_its_lock_back(rig: Rig) -> None:
    breaker = rig.make(CONFIG)
    await fail(breaker, 3)
    await rig.advance(OPEN + 0.2)
    started = asyncio.Event()

    async def hang() -> None:
        async with breaker.guard():
            started.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hang())
    await started.wait()
    with pytest.raises(BreakerOpen):
        await breaker.allow()  # the hanging call holds the probe
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await breaker.state() == "half_open"
    assert (await breaker.allow()).probe


async def test_a_vanished_probe_frees_the_lock_after_its_timeout(rig: Rig) -> None:
    config = BreakerConfig(failures=1, window_seconds=WINDOW, open_seconds=OPEN)
    breaker = rig.make(config)
    await fail(breaker)
    await rig.advance(OPEN + 0.2)
    assert (await breaker.allow()).probe  # never reports back
    with pytest.raises(BreakerOpen):
        await breaker.allow()
    await rig.advance(config.probe_seconds + 0.2)
    assert (await breaker.allow()).probe


class Boom(Exception):
    pass


class CallerMistake(Exception):
    pass


async def test_guard_counts_failures_and_not_the_callers_mistakes(rig: Rig) -> None:
    breaker = rig.make(CONFIG)

    def is_failure(exc: BaseException) -> bool:
        return not isinstance(exc, CallerMistake)

    for _ in range(5):
        with pytest.raises(CallerMistake):
            async with breaker.guard(is_failure=is_failure):
                raise CallerMistake
    assert await breaker.state() == "closed"
    for _ in range(3):
        with pytest.raises(Boom):
            async with breaker.guard(is_failure=is_failure):
                raise Boom
    assert await breaker.state() == "open"
    ran = False
    with pytest.raises(BreakerOpen):
        async with breaker.guard():
            ran = True
    assert not ran  # failing fast: the block never runs
    await rig.advance(OPEN + 0.2)
    async with breaker.guard() as permit:
        assert permit.probe
    assert await breaker.state() == "closed"


async def test_concurrent_callers_see_one_probe(rig: Rig) -> None:
    """Two breaker objects on one store (two instances when it is Redis; in memory each
    instance has its own, so the test uses one object there)."""
    breaker = rig.make(CONFIG)
    other = rig.make(CONFIG) if rig.redis is not None else breaker
    await fail(breaker, 3)
    await rig.advance(OPEN + 0.2)

    async def try_one(b: CircuitBreaker) -> Permit | None:
        try:
            return await b.allow()
        except BreakerOpen:
            return None

    permits = await asyncio.gather(*(try_one(b) for b in [breaker, other] * 50))
    let_through = [p for p in permits if p is not None]
    assert len(let_through) == 1
    assert let_through[0].probe


async def test_registry_names_breakers_once_and_snapshots_their_states(rig: Rig) -> None:
    clock = FakeClock()
    prefix = f"test:breaker:{uuid.uuid4().hex}:"
    registry = BreakerRegistry(
        BreakerConfig(failures=1, window_seconds=WINDOW, open_seconds=OPEN),
        rig.redis,
        prefix=prefix,
        clock=clock,
    )
    a = registry.breaker("sandbox:local")
    assert registry.breaker("sandbox:local") is a
    registry.breaker("provider:openai")
    await fail(a)
    assert await registry.snapshot() == [
        {"name": "provider:openai", "state": "closed"},
        {"name": "sandbox:local", "state": "open"},
    ]
    if rig.redis is not None:
        await rig.redis.client.delete(*[k async for k in rig.redis.client.scan_iter(prefix + "*")])


async def test_redis_unreachable_falls_back_to_this_instances_breaker() -> None:
    """Nothing listens: every step answers from memory, no Redis error reaches the caller,
    and the one outage verdict is set (other users of the client skip Redis too)."""
    shared = SharedRedis.connect("redis://127.0.0.1:1/0")
    breaker = CircuitBreaker("svc", CONFIG, shared)
    try:
        await fail(breaker, 3)
        assert not shared.outage.up()
        assert await breaker.state() == "open"
        assert breaker.memory.state() == "open"
        with pytest.raises(BreakerOpen):
            await breaker.allow()
    finally:
        await shared.aclose()


async def test_redis_dying_between_allow_and_record_is_no_error() -> None:
    """A permit granted by Redis whose outcome arrives after Redis died is recorded in memory."""
    shared = SharedRedis.connect(SHARED_REDIS)
    prefix = f"test:breaker:{uuid.uuid4().hex}:"
    breaker = CircuitBreaker("svc", CONFIG, shared, prefix=prefix)
    try:
        permit = await breaker.allow()
        assert permit.shared
        await shared.client.aclose()
        shared.client = SharedRedis.connect("redis://127.0.0.1:1/0").client
        await breaker.record_failure(permit)
        await breaker.record_success(permit)
        await breaker.release(permit)
        assert breaker.memory.state() == "closed"  # one failure of three
        assert not shared.outage.up()
    finally:
        await shared.aclose()


def test_settings_feed_the_config() -> None:
    from fragments.config import Settings

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        breaker_failures=7,
        breaker_window_seconds=10,
        breaker_open_seconds=3,
    )
    config = BreakerConfig.from_settings(settings)
    assert (config.failures, config.window_seconds, config.open_seconds) == (7, 10.0, 3.0)
    assert config.probe_seconds == 3.0
    defaults = BreakerConfig.from_settings(Settings(_env_file=None))  # type: ignore[call-arg]
    assert (defaults.failures, defaults.window_seconds, defaults.open_seconds) == (5, 60.0, 30.0)
