"""Sentry: an unexpected error answers our 500 `internal` and is reported to the DSN's server,
here a local endpoint of the test's own that reads the envelope; nothing secret the request
carried (token, cookie, key, password, query) is in it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from fragments.observability.error_reports import FILTERED, scrub_event
from tests.observability.collector import Collector, Received
from tests.web.app_process import free_port, tail

SECRETS = {
    "token": "tok-3f9a1c-secret",
    "cookie": "cookie-77ab-secret",
    "key": "sk-key-5521-secret",
    "query": "query-9b1d-secret",
    "password": "password-0c4e-secret",
}


def _envelope_items(received: Received) -> list[dict[str, object]]:
    """The JSON items of a Sentry envelope (header line, then item header / payload pairs)."""
    lines = received.body.split(b"\n")
    items = []
    for line in lines[1:]:
        if line.strip().startswith(b"{"):
            items.append(json.loads(line))
    return items


def _events(received: list[Received]) -> list[dict[str, object]]:
    return [item for r in received for item in _envelope_items(r) if "exception" in item]


def test_an_unexpected_error_is_reported_without_secrets(tmp_path: Path) -> None:
    port = free_port()
    with Collector() as sentry:
        host = sentry.url.removeprefix("http://")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("FRAGMENTS_", "SENTRY_", "OTEL_", "POSTHOG_"))
            and not k.endswith(("_API_KEY", "_BASE_URL"))
        }
        env.update(
            FRAGMENTS_DATA_DIR=str(tmp_path),
            JUPYTER_PLATFORM_DIRS="1",
            SENTRY_DSN=f"http://publickey@{host}/1",
            SENTRY_ENVIRONMENT="test-env",
            FRAGMENTS_SANDBOX_POOL_SIZES="{}",
        )
        log_path = tmp_path / "server.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.observability.boom_app", str(port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=Path(__file__).resolve().parents[2],
            )
            try:
                url = f"http://127.0.0.1:{port}"
                deadline = time.monotonic() + 60
                while True:
                    if proc.poll() is not None:
                        pytest.fail(f"the app exited:\n{tail(log_path)}")
                    try:
                        if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                            break
                    except httpx.HTTPError:
                        pass
                    if time.monotonic() > deadline:
                        pytest.fail(f"the app did not start:\n{tail(log_path)}")
                    time.sleep(0.1)
                response = httpx.post(
                    f"{url}/api/boom?api_key={SECRETS['query']}",
                    json={"password": SECRETS["password"]},
                    headers={
                        "Authorization": f"Bearer {SECRETS['token']}",
                        "Cookie": f"session={SECRETS['cookie']}",
                        "X-Api-Key": SECRETS["key"],
                    },
                    timeout=10,
                )
                assert response.status_code == 500
                assert response.json()["error"] == "internal"
                assert "exploded" not in response.text
                envelopes = sentry.wait_for(lambda r: b'"exception"' in r.body)
            finally:
                proc.terminate()
                proc.wait(15)
    assert all(r.path == "/api/1/envelope/" for r in envelopes)
    (event,) = _events(envelopes)
    exception = event["exception"]
    assert isinstance(exception, dict)
    types = [value["type"] for value in exception["values"]]
    assert "DatabaseExploded" in types
    assert event["environment"] == "test-env"
    assert str(event["release"]).startswith("fragments@")
    raw = b"".join(r.body for r in sentry.received)
    for name, secret in SECRETS.items():
        assert secret.encode() not in raw, f"the {name} reached Sentry"
    request = event.get("request")
    assert isinstance(request, dict)
    assert "data" not in request
    assert "cookies" not in request


def test_the_scrubber_strips_what_authenticates() -> None:
    event = {
        "request": {
            "url": "https://app.example/api/x?api_key=abc",
            "headers": {"Authorization": "Bearer t", "X-Api-Key": "k", "Accept": "*/*"},
            "cookies": {"session": "s"},
            "data": {"messages": "a prompt"},
            "query_string": "api_key=abc",
        },
        "user": {"id": "u1", "ip_address": "10.0.0.1"},
        "breadcrumbs": {
            "values": [{"data": {"url": "https://p.example/v1?key=abc", "token": "t"}}]
        },
    }
    scrubbed = scrub_event(event)  # type: ignore[arg-type]
    request = scrubbed["request"]
    assert request["url"] == "https://app.example/api/x"
    assert request["headers"] == {
        "Authorization": FILTERED,
        "X-Api-Key": FILTERED,
        "Accept": "*/*",
    }
    assert set(request) == {"url", "headers"}
    assert scrubbed["user"] == {"id": "u1"}
    crumb = scrubbed["breadcrumbs"]["values"][0]["data"]
    assert crumb == {"url": "https://p.example/v1", "token": FILTERED}
