"""`/metrics` after scripted traffic, in both auth modes: request counts and latency histograms
by route template, model answers by outcome with their tokens and cost by tier, sandbox runs,
limit refusals, warm pool slots, active users and the budget; read with prometheus-client's
parser. And who may read them."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Mapping

import httpx
import pytest
from pydantic import SecretStr

from fragments.config import Settings
from fragments.observability import metrics
from tests.apps import app_client
from tests.chat.conftest import chat_body, parse_sse
from tests.chat.test_rate_limits import _wait_redis, private_redis
from tests.conftest import Backend, database_settings
from tests.databases import PgDatabase
from tests.fakes import ErrorReply, FakeOpenAI
from tests.fakes import FragmentReply as Reply
from tests.fakes.sandboxes import FakeSandboxes
from tests.modes import AuthMode, a_conversation, sign_in_for_mode
from tests.observability.metrics_text import Scrape, delta

pytestmark = pytest.mark.anyio

TOKEN = "scrape-" + uuid.uuid4().hex
LLM_BOUNDS = {"0.5", "1.0", "2.5", "5.0", "10.0", "15.0", "20.0", "30.0", "60.0", "+Inf"}
SANDBOX_BOUNDS = {"0.1", "0.5", "1.0", "2.5", "5.0", "10.0", "20.0", "60.0", "+Inf"}


class PooledSandboxes(FakeSandboxes):
    """The fake backend with a warm pool to report, as the local backend does."""

    def pool_slots(self) -> Mapping[tuple[str, str], int]:
        return {("code-interpreter-v1", "idle"): 2, ("code-interpreter-v1", "busy"): len(self.runs)}


async def scrape(client: httpx.AsyncClient) -> Scrape:
    response = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return Scrape(response.text)


def tier_of(mode: AuthMode) -> str:
    return "guest" if mode == "guests" else "free"


async def test_scripted_traffic_shows_in_the_metrics(
    chat_settings: Settings,
    auth_mode: AuthMode,
    fake_openai: FakeOpenAI,
    backend: Backend,
    pg_database: PgDatabase | None,
) -> None:
    fields = chat_settings.model_dump() | database_settings(backend, pg_database)
    fields |= {"metrics_token": TOKEN, "monthly_llm_budget_usd": 250.0}
    settings = Settings(_env_file=None, **fields)  # type: ignore[call-arg]
    sandboxes = PooledSandboxes(delay=0.01)
    async with app_client(settings, sandboxes=sandboxes) as client:
        await sign_in_for_mode(client, auth_mode)
        conversation = await a_conversation(client, "c-" + uuid.uuid4().hex[:8])
        before = await scrape(client)

        # Two answers, one provider failure.
        # Each its own question: the response cache would answer a repeated one.
        for n in range(2):
            fake_openai.script(Reply(input_tokens=1200, output_tokens=300, cache_read_tokens=1000))
            response = await client.post("/api/chat", json=chat_body(f"app {n}"))
            assert [e.name for e in parse_sse(response.text)][-1] == "done"
        fake_openai.script(ErrorReply(503, "overloaded"))
        response = await client.post("/api/chat", json=chat_body("app 3"))
        assert parse_sse(response.text)[-1].data["error"] == "provider_unavailable", response.text
        # A sandbox run, a conversation read, a path no route serves.
        run = await client.post(
            "/api/sandbox",
            json={
                "fragment": {"template": "code-interpreter-v1", "code": "print(1)"},
                "conversation_id": conversation,
            },
        )
        assert run.status_code == 200, run.text
        read = await client.get(f"/api/conversations/{conversation}")
        await client.get(f"/api/nothing-here/{conversation}")

        after = await scrape(client)

    chat = {"method": "POST", "route": "/api/chat", "status": "200"}
    assert delta(after, before, "fragments_http_requests_total", **chat) == 3
    route = "/api/conversations/{conversation_id}"
    read_labels = {"method": "GET", "route": route, "status": str(read.status_code)}
    assert delta(after, before, "fragments_http_requests_total", **read_labels) == 1
    unmatched = {"method": "GET", "route": "unmatched", "status": "404"}
    assert delta(after, before, "fragments_http_requests_total", **unmatched) == 1
    # Raw paths never become labels.
    assert not any(conversation in str(labels) for _, labels in after.samples)
    duration = "fragments_http_request_duration_seconds"
    assert delta(after, before, f"{duration}_count", method="POST", route="/api/chat") == 3
    assert after.types["fragments_http_request_duration_seconds"] == "histogram"

    model = {"provider": "openai", "model": "gpt-4.1"}
    assert delta(after, before, "fragments_llm_requests_total", **model, outcome="ok") == 2
    failed = {**model, "outcome": "provider_unavailable"}
    assert delta(after, before, "fragments_llm_requests_total", **failed) == 1
    assert delta(after, before, "fragments_llm_first_token_seconds_count", **model) == 2
    assert delta(after, before, "fragments_llm_answer_seconds_count", **model) == 2
    assert set(after.buckets("fragments_llm_first_token_seconds", **model)) >= LLM_BOUNDS
    assert set(after.buckets("fragments_llm_answer_seconds", **model)) >= LLM_BOUNDS
    answered = after.buckets("fragments_llm_answer_seconds", **model)
    assert answered["+Inf"] >= answered["60.0"] >= answered["0.5"]  # cumulative

    tier = tier_of(auth_mode)
    tokens = "fragments_llm_tokens_total"
    assert delta(after, before, tokens, **model, tier=tier, kind="input") == 2400
    assert delta(after, before, tokens, **model, tier=tier, kind="output") == 600
    assert delta(after, before, tokens, **model, tier=tier, kind="cache_read") == 2000
    cost = delta(after, before, "fragments_llm_cost_usd_total", **model, tier=tier)
    assert cost > 0

    template = {"template": "code-interpreter-v1", "backend": "local"}
    assert delta(after, before, "fragments_sandbox_runs_total", **template, outcome="ok") == 1
    assert delta(after, before, "fragments_sandbox_create_seconds_count", **template) == 1
    assert delta(after, before, "fragments_sandbox_run_seconds_count", **template) == 1
    assert set(after.buckets("fragments_sandbox_run_seconds", **template)) >= SANDBOX_BOUNDS
    assert set(after.buckets("fragments_sandbox_create_seconds", **template)) >= SANDBOX_BOUNDS

    slots = "fragments_pool_slots"
    assert after.value(slots, template="code-interpreter-v1", state="idle") == 2
    assert after.value(slots, template="code-interpreter-v1", state="busy") == 1
    assert after.value("fragments_llm_monthly_budget_usd") == 250.0
    assert after.value("fragments_active_users") >= 1


async def test_a_new_caller_is_an_active_user(
    chat_settings: Settings, auth_mode: AuthMode, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A window of its own: in one process with the rest of the suite, callers of earlier tests
    # leave the shared five-minute window while this test runs and the gauge may drop by one.
    monkeypatch.setattr(metrics, "ACTIVE", metrics.ActiveUsers())
    settings = chat_settings.model_copy(update={"metrics_token": SecretStr(TOKEN)})
    address = f"198.51.100.{uuid.uuid4().int % 250 + 1}"
    async with app_client(settings, client=(address, 4000)) as client:
        before = (await scrape(client)).value("fragments_active_users")
        await sign_in_for_mode(client, auth_mode)  # a new account in production
        await client.get("/api/conversations")
        after = (await scrape(client)).value("fragments_active_users")
    assert after - before >= 1


@pytest.mark.parametrize("storage", ["memory", "redis"])
async def test_limit_refusals_are_counted_by_kind(
    chat_settings: Settings, auth_mode: AuthMode, fake_openai: FakeOpenAI, storage: str
) -> None:
    with contextlib.ExitStack() as stack:
        redis_url = None
        if storage == "redis":
            port, _proc = stack.enter_context(private_redis())
            await _wait_redis(port)
            redis_url = f"redis://127.0.0.1:{port}/0"
        settings = chat_settings.model_copy(
            update={
                "metrics_token": SecretStr(TOKEN),
                "redis_url": redis_url,
                "rate_limit_guest_per_day": 1,
                "rate_limit_free_per_day": 1,
                "sandbox_limit_guest_per_day": 1,
                "sandbox_limit_free_per_day": 1,
            }
        )
        await _refusals(settings, fake_openai, auth_mode)


async def _refusals(settings: Settings, fake_openai: FakeOpenAI, auth_mode: AuthMode) -> None:
    address = f"203.0.113.{uuid.uuid4().int % 250 + 1}"
    async with app_client(settings, sandboxes=FakeSandboxes(), client=(address, 4000)) as client:
        await sign_in_for_mode(client, auth_mode)
        before = await scrape(client)
        fake_openai.script(Reply(), Reply())
        assert (await client.post("/api/chat", json=chat_body("one"))).status_code == 200
        assert (await client.post("/api/chat", json=chat_body("two"))).status_code == 429
        fragment = {"template": "code-interpreter-v1", "code": "1"}
        for expected in (200, 429):
            run = await client.post("/api/sandbox", json={"fragment": fragment})
            assert run.status_code == expected, run.text
        after = await scrape(client)
    refusals = "fragments_limit_refusals_total"
    assert delta(after, before, refusals, kind="rate_limit") == 1
    assert delta(after, before, refusals, kind="sandbox_limit") == 1
    assert delta(after, before, refusals, kind="budget") == 0


@pytest.mark.auth_modes("guests")
async def test_the_token_guards_the_metrics(chat_settings: Settings) -> None:
    settings = chat_settings.model_copy(update={"metrics_token": SecretStr(TOKEN)})
    async with app_client(settings) as client:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            response = await client.get("/metrics", headers=headers)
            assert response.status_code == 401
            assert response.json()["error"] == "unauthorized"
            assert isinstance(response.json()["detail"], str)
            assert response.headers["WWW-Authenticate"] == "Bearer"
        ok = await client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        assert "fragments_http_requests_total" in ok.text


@pytest.mark.parametrize(
    ("env", "port", "status"),
    [("development", None, 200), ("production", None, 404), ("development", 9464, 404)],
)
async def test_without_a_token_metrics_are_open_only_in_development(
    settings: Settings, env: str, port: int | None, status: int
) -> None:
    fields: dict[str, object] = {"env": env, "metrics_port": port}
    if env == "production":
        fields["secret_key"] = "a-private-random-secret-for-this-test"
    configured = Settings(_env_file=None, **(settings.model_dump() | fields))  # type: ignore[call-arg]
    async with app_client(configured) as client:
        response = await client.get("/metrics")
    assert response.status_code == status
    if status == 404:
        assert response.json()["error"] == "not_found"
    else:
        assert "fragments_http_requests_total" in response.text
