"""Streaming CPU per answer with traces off and on (OTLP/HTTP to a local endpoint), one run."""

from __future__ import annotations

import asyncio
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.chat_stream import MODEL, _closed_loop
from bench.harness import cpu_seconds, fake_provider, service
from bench.sse_client import chat_body


class _Sink(BaseHTTPRequestHandler):
    """An OTLP endpoint that reads and drops what it gets (its CPU is not the service's)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        return None


def _cpu_per_answer(provider_port: int, extra_env: dict[str, str], answers: int) -> float:
    with (
        tempfile.TemporaryDirectory() as tmp,
        service(provider_port, workers=1, data_dir=Path(tmp), extra_env=extra_env) as (port, p),
    ):
        body = chat_body(MODEL)
        asyncio.run(_closed_loop(port, body, 20, 4))  # warm-up
        before = cpu_seconds(p)
        results = asyncio.run(_closed_loop(port, body, answers, 8))
        assert all(r.ok for r in results), "a streamed answer failed"
        return (cpu_seconds(p) - before) / answers


@contextmanager
def otlp_sink() -> Iterator[str]:
    """A local OTLP/HTTP endpoint that drops what it gets; yields its base URL."""
    sink = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{sink.server_address[1]}"
    finally:
        sink.shutdown()


def tracing(answers: int = 200) -> None:
    """CPU of the service per streamed answer (24-char chunks), traces off versus on."""
    print("\n(obs) streaming CPU per answer: traces off vs on (OTLP/HTTP to a local endpoint)")
    with otlp_sink() as endpoint, fake_provider(24, 0.0) as fport:
        off = _cpu_per_answer(fport, {}, answers)
        on = _cpu_per_answer(fport, {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, answers)
    print(f"  off {off * 1000:6.1f} ms   on {on * 1000:6.1f} ms   on/off {on / off:5.2f}x")
