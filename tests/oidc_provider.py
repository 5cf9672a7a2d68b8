"""A real OpenID Connect provider for the SSO tests: panva's npm `oidc-provider`, run with node on
127.0.0.1 (tests/oidc/provider.mjs), and a browser that follows its sign-in forms."""

from __future__ import annotations

import json
import re
import secrets
import select
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

FOLDER = Path(__file__).parent / "oidc"
START_TIMEOUT = 30.0


@dataclass(frozen=True)
class OidcProvider:
    issuer: str
    client_id: str
    client_secret: str

    async def add_account(self, sub: str, email: str | None, *, verified: bool = True) -> None:
        """Register a person the provider will sign in as `sub`."""
        async with httpx.AsyncClient() as client:
            response = await client.post(
                f"{self.issuer}/test/accounts",
                json={"sub": sub, "email": email, "email_verified": verified},
            )
        assert response.status_code == 204, response.text

    def add_account_sync(self, sub: str, email: str | None, *, verified: bool = True) -> None:
        """`add_account` for synchronous tests (the browser tests)."""
        response = httpx.post(
            f"{self.issuer}/test/accounts",
            json={"sub": sub, "email": email, "email_verified": verified},
        )
        assert response.status_code == 204, response.text


@contextmanager
def run_provider(redirect_uri: str) -> Iterator[OidcProvider]:
    """Start the provider with one client whose redirect URI is the app's callback."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH (make install brings Node.js)")
    if not (FOLDER / "node_modules" / "oidc-provider").is_dir():
        pytest.skip("tests/oidc/node_modules is missing: run `make install` (npm ci there)")
    client_id = "fragments-test"
    client_secret = secrets.token_urlsafe(24)
    env = {
        "PATH": "/usr/bin:/bin",
        "OIDC_CLIENT_ID": client_id,
        "OIDC_CLIENT_SECRET": client_secret,
        "OIDC_REDIRECT_URI": redirect_uri,
    }
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [node, "provider.mjs"],
            cwd=FOLDER,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=log,
        )
        assert process.stdout is not None
        assert process.stdin is not None
        try:
            ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT)
            line = process.stdout.readline() if ready else b""
            if not line:
                log.seek(0)
                raise RuntimeError(f"the OIDC provider did not start: {log.read().decode()}")
            yield OidcProvider(json.loads(line)["issuer"], client_id, client_secret)
        finally:
            # Closing stdin ends the provider (it exits on end of input).
            process.stdin.close()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            process.stdout.close()


_ACTION = re.compile(r'<form[^>]*action="([^"]+)"', re.IGNORECASE)
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', re.IGNORECASE)


CALLBACK_PATH = "/api/auth/oidc/callback"


async def follow(
    client: httpx.AsyncClient, response: httpx.Response, *, into_callback: bool = True
) -> httpx.Response:
    """Follow redirects until a page, a redirect to the app's page (`/#...`), or (when not
    `into_callback`) a redirect to the app's callback is reached."""
    while response.is_redirect:
        target = response.url.join(response.headers["location"])
        if target.path == "/" and target.fragment:
            return response
        if target.path == CALLBACK_PATH and not into_callback:
            return response
        response = await client.get(target)
    return response


async def submit_form(
    client: httpx.AsyncClient,
    page: httpx.Response,
    fields: dict[str, str],
    *,
    into_callback: bool = True,
) -> httpx.Response:
    """Post the page's form, with its hidden inputs and these fields, as a browser would."""
    action = _ACTION.search(page.text)
    assert action is not None, page.text
    data = dict(_HIDDEN.findall(page.text)) | fields
    response = await client.post(page.url.join(action.group(1)), data=data)
    return await follow(client, response, into_callback=into_callback)


def page_fragment(response: httpx.Response) -> dict[str, str]:
    """The `#key=value` the app sent the page to."""
    assert response.is_redirect, (response.status_code, response.text)
    target = response.url.join(response.headers["location"])
    assert target.path == "/", target
    key, _, value = target.fragment.partition("=")
    return {key: value}
