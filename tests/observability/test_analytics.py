"""Product analytics: sign-up, chat answered, sandbox run and publish reach a PostHog endpoint
of the test's own in the library's batches, with ids, template, provider/model, tokens and
durations, and never the prompt, the code, the e-mail or the password. Capturing never waits
on PostHog: with the endpoint holding every request unanswered, the app still serves."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import SecretStr

from fragments.config import Settings
from fragments.observability.analytics import Analytics, only_allowed
from tests.accounts import sign_up
from tests.apps import app_client
from tests.fakes import FakeOpenAI, FragmentReply
from tests.fakes.sample import SAMPLE_FRAGMENT
from tests.fakes.sandboxes import FakeSandboxes
from tests.observability.collector import Collector

pytestmark = pytest.mark.anyio

PROMPT = "PROMPT-MARKER-4a1f make me a dashboard"
CODE = "print('CODE-MARKER-9c2e')"


def _batch_events(collector: Collector) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for received in collector.received:
        body = json.loads(received.body)
        events += body.get("batch", [])
    return events


async def test_events_carry_figures_and_never_content(settings: Settings) -> None:
    fragment = {**SAMPLE_FRAGMENT, "code": CODE}
    reply = FragmentReply(fragment, input_tokens=50, output_tokens=40)
    with FakeOpenAI(default=reply) as fake, Collector() as posthog:
        configured = settings.model_copy(
            update={
                "posthog_api_key": SecretStr("phc_test_project_key"),
                "posthog_host": posthog.url,
                "openai_api_key": SecretStr("platform-key"),
                "openai_base_url": fake.base_url,
            }
        )
        # PostHog holds every request: the app must serve all the same.
        posthog.hold()
        sandboxes = FakeSandboxes(sandbox_id="sbxweb", url="http://preview/")
        async with app_client(configured, sandboxes=sandboxes) as client:
            account = await sign_up(client, "analytics")
            client.headers.update(account.headers)
            me = (await client.get("/api/auth/me")).json()
            conversation = (await client.post("/api/conversations", json={})).json()["id"]
            chat = await client.post(
                "/api/chat",
                json={
                    "messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}],
                    "template": "auto",
                    "model": {"id": "gpt-4.1", "providerId": "openai"},
                    "conversation_id": conversation,
                },
            )
            assert "event: done" in chat.text, chat.text
            done = chat.text.split("event: done")[1].split("data:")[1].split("\r\n")[0]
            fragment_id = json.loads(done)["fragment_id"]
            # The stored fragment runs (a web app: its preview is what gets published).
            run = await client.post(
                "/api/sandbox",
                json={"fragment_id": fragment_id, "conversation_id": conversation},
            )
            assert run.status_code == 200, run.text
            published = await client.post("/api/publish", json={"sandbox_id": "sbxweb"})
            assert published.status_code == 201, published.text
            # Every request was answered while PostHog had answered none.
            posthog.release()
        # Shutting down flushed the queue.
        posthog.wait_for(lambda r: r.path.startswith("/batch"))
    events = _batch_events(posthog)
    by_name = {e["event"]: e for e in events}
    assert set(by_name) == {"signed up", "chat answered", "sandbox run", "published"}
    assert {e["distinct_id"] for e in events} == {me["id"]}
    answered = by_name["chat answered"]["properties"]
    assert answered["provider"] == "openai"
    assert answered["model"] == "gpt-4.1"
    assert answered["template"] == SAMPLE_FRAGMENT["template"]
    assert (answered["input_tokens"], answered["output_tokens"]) == (50, 40)
    assert answered["conversation_id"] == conversation
    assert answered["duration_ms"] >= answered["first_token_ms"] >= 0
    run_props = by_name["sandbox run"]["properties"]
    assert (run_props["template"], run_props["backend"], run_props["outcome"]) == (
        SAMPLE_FRAGMENT["template"],
        "local",
        "ok",
    )
    assert by_name["signed up"]["properties"]["method"] == "password"
    raw = b"".join(r.body for r in posthog.received)
    for secret in ("PROMPT-MARKER", "CODE-MARKER", account.email, account.password):
        assert secret.encode() not in raw, secret


def test_unknown_properties_and_events_never_leave() -> None:
    event = {
        "event": "chat answered",
        "properties": {"model": "m", "prompt": "secret", "$lib": "posthog-python"},
    }
    assert only_allowed(event) == {
        "event": "chat answered",
        "properties": {"model": "m", "$lib": "posthog-python"},
    }
    assert only_allowed({"event": "something else", "properties": {}}) is None


async def test_without_a_key_nothing_is_sent(settings: Settings) -> None:
    analytics = Analytics.from_settings(settings)
    assert not analytics.enabled
    analytics.capture("sandbox run", "u1", "t1", template="x")
    await analytics.aclose()
