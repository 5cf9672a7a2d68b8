"""Provider health checks at the wire: each format's model listing against the fakes, states
from the answers, a provider going down and back seen within an interval, and one probe per
interval whatever the number of instances sharing Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from pydantic import SecretStr

from fragments.config import Settings
from fragments.llm.health import KEY_PREFIX, HealthBoard, ProviderStatus
from fragments.redis_client import SharedRedis
from tests.fakes import ErrorReply, FakeAnthropic, FakeGemini, FakeOpenAI
from tests.fakes.base import FakeProvider

pytestmark = pytest.mark.anyio

SHARED_REDIS = "redis://127.0.0.1:6379/0"
KEY = "sk-health-test-key"


@pytest.fixture
def fakes() -> Iterator[dict[str, FakeProvider]]:
    with FakeOpenAI() as openai, FakeAnthropic() as anthropic, FakeGemini() as gemini:
        yield {"openai": openai, "anthropic": anthropic, "google": gemini}


def board_settings(settings: Settings, fakes: dict[str, FakeProvider], interval: float) -> Settings:
    return settings.model_copy(
        update={
            "openai_api_key": SecretStr(KEY),
            "openai_base_url": fakes["openai"].base_url,
            "anthropic_api_key": SecretStr(KEY),
            "anthropic_base_url": fakes["anthropic"].base_url,
            "google_api_key": SecretStr(KEY),
            "google_base_url": fakes["google"].base_url,
            "health_interval_seconds": interval,
        }
    )


async def test_each_wire_format_is_probed_with_its_own_listing_and_key(
    settings: Settings, fakes: dict[str, FakeProvider]
) -> None:
    board = HealthBoard(board_settings(settings, fakes, 60))
    try:
        assert board.providers == ["anthropic", "openai", "google"]
        results = {s.provider: s for s in await board.check()}
        assert {p: s.status for p, s in results.items()} == {
            "anthropic": "up",
            "openai": "up",
            "google": "up",
        }
        assert all(s.latency_ms is not None and s.last_error is None for s in results.values())
        openai = fakes["openai"].listings[-1]
        assert (openai.method, openai.path) == ("GET", "/v1/models")
        assert openai.authorization == f"Bearer {KEY}"
        anthropic = fakes["anthropic"].listings[-1]
        assert anthropic.path == "/v1/models"
        assert anthropic.headers["x-api-key"] == KEY
        assert anthropic.headers["anthropic-version"]
        google = fakes["google"].listings[-1]
        assert google.path == "/v1beta/models"
        assert google.headers["x-goog-api-key"] == KEY
        # The chat fakes' request records are untouched by probes.
        assert all(not fake.requests for fake in fakes.values())
        assert await board.status("openai") == results["openai"]
        assert await board.all() == [results["anthropic"], results["openai"], results["google"]]
    finally:
        await board.aclose()


@pytest.mark.parametrize(
    ("status", "state", "error"),
    [
        (503, "down", "HTTP 503"),
        (529, "down", "HTTP 529"),
        (401, "down", "HTTP 401: the platform key is refused"),
        (429, "degraded", "HTTP 429: rate limited"),
        (400, "degraded", "HTTP 400"),
    ],
)
async def test_answers_become_states(
    settings: Settings, fakes: dict[str, FakeProvider], status: int, state: str, error: str
) -> None:
    for fake in fakes.values():
        fake.models_reply = ErrorReply(status, "listing failed")
    board = HealthBoard(board_settings(settings, fakes, 60))
    try:
        results = await board.check()
        assert [(s.status, s.last_error) for s in results] == [(state, error)] * 3
    finally:
        await board.aclose()


async def test_no_connection_is_down_and_no_key_is_not_checked(settings: Settings) -> None:
    # A port nothing listens on (a fake started and stopped).
    with FakeOpenAI() as gone:
        url = gone.base_url
    configured = settings.model_copy(
        update={"openai_api_key": SecretStr(KEY), "openai_base_url": url}
    )
    board = HealthBoard(configured)
    try:
        assert board.providers == ["openai"]  # Anthropic and Google have no platform key
        (result,) = await board.check()
        assert result.status == "down"
        assert result.last_error == "ConnectError"
        assert KEY not in result.to_json()
        assert url not in result.to_json()
    finally:
        await board.aclose()


async def wait_for(board: HealthBoard, provider: str, state: str, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = await board.status(provider)
        if found is not None and found.status == state:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{provider} never became {state}")


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[tuple[SharedRedis | None, str]]:
    """No Redis (each instance for itself), or the shared Redis under a prefix of its own."""
    if request.param == "memory":
        yield None, KEY_PREFIX
        return
    shared = SharedRedis.connect(SHARED_REDIS)
    try:
        await shared.client.ping()
    except OSError as exc:  # pragma: no cover - Redis runs on the dev and CI machines
        await shared.aclose()
        pytest.skip(f"Redis at 127.0.0.1:6379 is unreachable ({exc})")
    prefix = f"test:health:{uuid.uuid4().hex}:"
    try:
        yield shared, prefix
    finally:
        keys = [k async for k in shared.client.scan_iter(match=prefix + "*")]
        if keys:
            await shared.client.delete(*keys)
        await shared.aclose()


async def test_a_provider_going_down_and_back_is_seen_within_an_interval(
    settings: Settings,
    fakes: dict[str, FakeProvider],
    store: tuple[SharedRedis | None, str],
) -> None:
    redis, prefix = store
    board = HealthBoard(board_settings(settings, fakes, 0.3), redis, prefix=prefix)
    try:
        async with board.running():
            await wait_for(board, "openai", "up")
            seen = len(fakes["openai"].listings)
            fakes["openai"].models_reply = ErrorReply(503)
            await wait_for(board, "openai", "down")
            # The first probe after the outage began sees it (a probe already on its way when
            # it began may count one more): no hysteresis, so within one interval.
            assert len(fakes["openai"].listings) - seen <= 2
            assert (await board.status("anthropic") or _never()).status == "up"
            fakes["openai"].models_reply = None
            await wait_for(board, "openai", "up")
    finally:
        await board.aclose()


def _never() -> ProviderStatus:
    raise AssertionError("no status")


async def test_two_instances_sharing_redis_probe_once_per_interval(
    settings: Settings, fakes: dict[str, FakeProvider], store: tuple[SharedRedis | None, str]
) -> None:
    """Two boards (two app instances) tick in the same slot: one probes, both read its
    result. Left running for a few intervals, the fake sees at most one probe per interval with
    Redis, and one per instance per interval without it."""
    redis, prefix = store
    # A whole second per slot: on a loaded machine two ticks of 0.4 s slots kept landing in
    # different slots.
    interval = 1.0
    configured = board_settings(settings, fakes, interval)
    a = HealthBoard(configured, redis, prefix=prefix)
    b = HealthBoard(configured, redis, prefix=prefix)
    openai = fakes["openai"]
    try:
        # Both in one slot (retried if the slot turns between the two ticks).
        for _ in range(10):
            slot = int(time.time() // interval)
            probed = [await a.tick(), await b.tick()]
            if int(time.time() // interval) == slot:
                break
            a._last_slot = b._last_slot = None  # the slot turned: try again
        if redis is not None:
            assert sorted(probed) == [False, True]
            assert await a.status("openai") == await b.status("openai") is not None
        else:
            assert probed == [True, True]
        openai.reset()
        first = int(time.time() // interval)
        async with a.running(), b.running():
            await asyncio.sleep(interval * 3)
        slots = int(time.time() // interval) - first + 1
        probes = len(openai.listings)
        if redis is not None:
            assert 1 <= probes <= slots
        else:
            assert probes >= slots  # each instance probes for itself
    finally:
        await a.aclose()
        await b.aclose()


async def test_redis_down_each_instance_checks_and_remembers_for_itself(
    settings: Settings, fakes: dict[str, FakeProvider]
) -> None:
    shared = SharedRedis.connect("redis://127.0.0.1:1/0")  # nothing listens
    board = HealthBoard(board_settings(settings, fakes, 60), shared)
    try:
        assert await board.tick()
        assert not shared.outage.up()
        assert (await board.status("google") or _never()).status == "up"
        assert len(await board.all()) == 3
    finally:
        await board.aclose()
        await shared.aclose()


def test_statuses_read_back_and_junk_is_ignored() -> None:
    status = ProviderStatus("openai", "degraded", 12, "HTTP 429", "2026-12-04T19:00:00+00:00")
    assert ProviderStatus.from_json(status.to_json()) == status
    assert ProviderStatus.from_json("{not json") is None
    assert ProviderStatus.from_json('{"provider": "x", "status": "sideways"}') is None


async def test_the_app_checks_in_the_background_while_it_runs(
    settings: Settings, fakes: dict[str, FakeProvider]
) -> None:
    from fragments.app import create_app, state_of
    from tests.fakes.sandboxes import FakeSandboxes
    from tests.fakes.streamer import FakeStreamer

    app = create_app(
        board_settings(settings, fakes, 60), sandboxes=FakeSandboxes(), llm=FakeStreamer()
    )
    async with app.router.lifespan_context(app):
        board = state_of(app).health
        await wait_for(board, "google", "up")  # the first round runs at start-up
        assert [s.provider for s in await board.all()] == ["anthropic", "openai", "google"]
    listings = len(fakes["google"].listings)
    await asyncio.sleep(0.2)
    assert len(fakes["google"].listings) == listings  # stopped with the app
