"""Warm web slots: the first app and every edit of a conversation are reloads in the running
server (Streamlit reruns, Gradio's reload mode), with the new code live when the URL is
answered; and the launchers' fixes hold (TCP_NODELAY on Streamlit's connections)."""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, unix_connect
from websockets.typing import Subprotocol

from fragments.config import Settings
from fragments.sandbox.local.build import TemplateEnv, build_template
from fragments.sandbox.local.service import LocalSandboxService
from fragments.sandbox.local.web import WebSandbox
from fragments.sandbox.local.web_boot import STREAMLIT_BOOT_SOURCE
from fragments.schemas import Fragment, WebResult

pytestmark = pytest.mark.anyio

STREAMLIT = "streamlit-developer"
GRADIO = "gradio-developer"
# A Streamlit BackMsg asking for a script run (`rerun_script` with an empty ClientState).
RERUN = b"Z\x00"


@pytest.fixture(scope="session")
def streamlit_env() -> TemplateEnv:
    return build_template(Settings(_env_file=None), STREAMLIT)


@pytest.fixture(scope="session")
def gradio_env() -> TemplateEnv:
    return build_template(Settings(_env_file=None), GRADIO)


async def _pooled(settings: Settings, template: str) -> LocalSandboxService:
    svc = LocalSandboxService(settings.model_copy(update={"sandbox_pool_sizes": {template: 1}}))
    await svc.check()
    async with asyncio.timeout(120):
        await svc.pool.wait_full()
    return svc


@pytest.fixture
async def streamlit_pool(
    sandbox_settings: Settings, streamlit_env: TemplateEnv
) -> AsyncIterator[LocalSandboxService]:
    svc = await _pooled(sandbox_settings, STREAMLIT)
    try:
        yield svc
    finally:
        await svc.aclose()


@pytest.fixture
async def gradio_pool(
    sandbox_settings: Settings, gradio_env: TemplateEnv
) -> AsyncIterator[LocalSandboxService]:
    svc = await _pooled(sandbox_settings, GRADIO)
    try:
        yield svc
    finally:
        await svc.aclose()


async def _serve(
    svc: LocalSandboxService, template: str, code: str
) -> tuple[WebResult, WebSandbox]:
    result = await svc.execute(Fragment(template=template, code=code), owner="talk")
    assert isinstance(result, WebResult)
    sandbox = svc.sandbox_for("talk")
    assert isinstance(sandbox, WebSandbox)
    return result, sandbox


async def _until_marker(ws: ClientConnection, marker: str) -> None:
    async with asyncio.timeout(30):
        while True:
            message = await ws.recv()
            if isinstance(message, bytes) and marker.encode() in message:
                return


async def test_a_warm_streamlit_slot_renders_the_owners_app_and_its_edits(
    streamlit_pool: LocalSandboxService,
) -> None:
    first, second = f"first-{secrets.token_hex(3)}", f"second-{secrets.token_hex(3)}"
    result, sandbox = await _serve(
        streamlit_pool, STREAMLIT, f"import streamlit as st\nst.title('{first}')\n"
    )
    assert result.error is None
    assert sandbox.starts == 1  # the pool's process, which rendered its placeholder once
    async with unix_connect(
        str(sandbox.socket),
        f"ws://127.0.0.1:{sandbox.port}/_stcore/stream",
        subprotocols=[Subprotocol("streamlit")],
    ) as ws:
        await ws.send(RERUN)
        await _until_marker(ws, first)  # not the placeholder the slot rendered before
        # An edit while the page is open: Streamlit's watcher reruns the new file by itself.
        result, _ = await _serve(
            streamlit_pool, STREAMLIT, f"import streamlit as st\nst.title('{second}')\n"
        )
        assert result.error is None
        await _until_marker(ws, second)
    assert sandbox.starts == 1


async def _gradio_call(client: httpx.AsyncClient, api: str, value: str) -> object:
    started = await client.post(f"/gradio_api/call/{api}", json={"data": [value]})
    event_id = started.json()["event_id"]
    stream = await client.get(f"/gradio_api/call/{api}/{event_id}")
    data = [line[5:] for line in stream.text.splitlines() if line.startswith("data:")]
    return json.loads(data[-1])


async def test_a_warm_gradio_slot_reloads_the_app_and_its_edits_in_place(
    gradio_pool: LocalSandboxService,
) -> None:
    def app(title: str, body: str) -> str:
        return (
            "import gradio as gr\n\n"
            f"def shout(s):\n    return {body}\n\n"
            f"demo = gr.Interface(fn=shout, inputs='text', outputs='text', title='{title}')\n"
        )

    first, second = f"first-{secrets.token_hex(3)}", f"second-{secrets.token_hex(3)}"
    result, sandbox = await _serve(gradio_pool, GRADIO, app(first, "s.upper()"))
    assert result.error is None, result.error
    transport = httpx.AsyncHTTPTransport(uds=str(sandbox.socket))
    base = f"http://127.0.0.1:{sandbox.port}"
    async with httpx.AsyncClient(transport=transport, base_url=base, timeout=30) as client:
        # The URL is answered once the new app is live: no waiting on the client's side.
        assert first in (await client.get("/config")).text
        assert await _gradio_call(client, "shout", "abc") == ["ABC"]

        result, _ = await _serve(gradio_pool, GRADIO, app(second, "s.lower() + '!'"))
        assert result.error is None, result.error
        assert second in (await client.get("/config")).text
        # The running queue runs the edited function, not the one it was started with.
        assert await _gradio_call(client, "shout", "ABC") == ["abc!"]

        broken = "import gradio as gr\nraise ValueError('broken-on-purpose')\n"
        result, _ = await _serve(gradio_pool, GRADIO, broken)
        assert result.url is None
        assert result.error is not None
        assert "broken-on-purpose" in result.error.value
        # The server keeps serving the last version that ran.
        assert second in (await client.get("/config")).text
    assert sandbox.starts == 1  # gradio was imported once, by the pool


def test_the_streamlit_launcher_turns_nagle_off(streamlit_env: TemplateEnv, tmp_path: Path) -> None:
    """Streamlit binds its socket with protocol 0, so asyncio would leave Nagle on for its
    connections (each kept-alive response then waits for a delayed ACK)."""
    probe = STREAMLIT_BOOT_SOURCE.split("from streamlit.web.cli import main")[0] + (
        "import asyncio\n"
        "\n"
        "async def probe():\n"
        "    sock = starlette_server._bind_socket('127.0.0.1', 0, 8)\n"
        "    accepted = asyncio.get_running_loop().create_future()\n"
        "    async def handle(reader, writer):\n"
        "        accepted.set_result(writer.get_extra_info('socket').getsockopt(\n"
        "            socket.IPPROTO_TCP, socket.TCP_NODELAY))\n"
        "        writer.close()\n"
        "    server = await asyncio.start_server(handle, sock=sock)\n"
        "    await asyncio.open_connection('127.0.0.1', sock.getsockname()[1])\n"
        "    print('NODELAY', await asyncio.wait_for(accepted, 10))\n"
        "    server.close()\n"
        "\n"
        "asyncio.run(probe())\n"
    )
    script = tmp_path / "probe.py"
    script.write_text(probe)
    done = subprocess.run(
        [str(streamlit_env.python), str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "NODELAY 1" in done.stdout
