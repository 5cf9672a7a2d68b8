"""Cost bench: a scripted 20-turn conversation through the real `/api/chat`, windowing off and on.

The app runs in-process (httpx ASGITransport, lifespan on) against a counting fake of the
Anthropic messages API served on a local port, so the real code path is measured: request
parsing, windowing, the Anthropic wire with its cache marks, usage and pricing.

The fake counts input tokens as characters / 4 of every text it is sent (tool definitions,
system blocks, message blocks). Caching is modelled like Anthropic's: the prompt is the sequence
tools → system → message blocks; a block carrying `cache_control` is a breakpoint; the previous
request's breakpoints are cached prefixes. A request reads from the cache the longest of those
prefixes that it starts with, and writes the rest up to its own last breakpoint.

The client is the original's: it sends the whole history every time (assistant messages carry
their fragment). Each user message is ~200 characters; each answer a ~200-character commentary
and a program of 4,000 characters growing by 200 a turn. Prices: Claude Sonnet ($3/M input,
$15/M output, $0.30/M cache read, $3.75/M cache write).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from bench.harness import free_port

TURNS = 20
SHOWN = (1, 5, 10, 15, 20)
MODEL = "claude-sonnet-5-5"
# List prices, USD per million tokens: input, output, cache read, cache write.
PRICES = {
    "claude-sonnet-5-5": (3.0, 15.0, 0.30, 3.75),
    "claude-haiku-4-5": (1.0, 5.0, 0.10, 1.25),
}
SUMMARY_MARK = "You keep a running summary"


def tokens(text: str) -> int:
    return len(text) // 4


def user_text(turn: int) -> str:
    base = (
        f"Turn {turn}: please change the sales dashboard so that it also shows "
        f"a breakdown by region number {turn}, keep the existing charts, and make the "
        "colours consistent with the rest of the page. "
    )
    return (base + "Thanks, and keep it fast. " * 8)[:200]


def program(turn: int) -> str:
    size = 4000 + 200 * (turn - 1)
    lines: list[str] = []
    i = 0
    while sum(len(x) + 1 for x in lines) < size:
        lines.append(f"value_{turn}_{i} = compute_metric(data, 'region_{i % 7}', window={i})")
        i += 1
    return "\n".join(lines)[:size]


def answer(turn: int) -> dict[str, Any]:
    commentary = (
        f"Version {turn}: I updated the dashboard to add the breakdown by region {turn}, "
        "kept the existing charts and aligned the colours. The metrics are computed once. "
    )
    return {
        "commentary": (commentary * 2)[:200],
        "template": "code-interpreter-v1",
        "title": "Sales dashboard",
        "description": "A sales dashboard with regional breakdowns.",
        "file_path": "script.py",
        "code": program(turn),
    }


# ---- the counting fake --------------------------------------------------------------------------


def _blocks(body: dict[str, Any]) -> list[tuple[str, bool]]:
    """The prompt in cache order as (serialised block, carries cache_control)."""
    out: list[tuple[str, bool]] = []
    for tool in body.get("tools") or []:
        plain = {k: v for k, v in tool.items() if k != "cache_control"}
        out.append((json.dumps(plain, sort_keys=True), "cache_control" in tool))
    system = body.get("system") or []
    if isinstance(system, str):
        system = [{"type": "text", "text": system}]
    for block in system:
        out.append((str(block.get("text", "")), "cache_control" in block))
    for message in body.get("messages") or []:
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        for block in content:
            plain = {k: v for k, v in block.items() if k != "cache_control"}
            text = block.get("text") if block.get("type") == "text" else json.dumps(plain)
            out.append((f"{message['role']}:{text}", "cache_control" in block))
    return out


def _text_tokens(serialised: str) -> int:
    role, sep, rest = serialised.partition(":")
    return tokens(rest if sep and role in ("user", "assistant") else serialised)


def breakdown(body: dict[str, Any]) -> dict[str, int]:
    """Tokens of one request by part: tools, system prompt, summary, verbatim user messages and
    answers, the current code, the new message (counted as the fake counts them)."""
    from fragments.chat.window import CURRENT_CODE_HEADING, SUMMARY_HEADING

    parts = dict.fromkeys(
        ("tools", "system", "summary", "verbatim user", "verbatim answers", "current code", "new"),
        0,
    )
    for text, _marked in _blocks(body):
        role, sep, _rest = text.partition(":")
        if not sep or role not in ("user", "assistant"):
            parts["tools" if text.startswith("{") else "system"] += tokens(text)
    messages = body.get("messages") or []
    for index, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        last = index == len(messages) - 1
        for block in content:
            text = block.get("text") or json.dumps(block)
            if message["role"] == "assistant":
                key = "verbatim answers"
            elif text.startswith(SUMMARY_HEADING):
                key = "summary"
            elif text.startswith(CURRENT_CODE_HEADING):
                key = "current code"
            else:
                key = "new" if last else "verbatim user"
            parts[key] += tokens(text)
    return parts


@dataclass
class Counts:
    input: int
    read: int
    write: int
    output: int
    model: str = MODEL

    @property
    def fresh(self) -> int:
        return self.input - self.read - self.write

    @property
    def input_cost(self) -> float:
        p_in, _, p_read, p_write = PRICES[self.model]
        return (self.fresh * p_in + self.read * p_read + self.write * p_write) / 1e6

    @property
    def cost(self) -> float:
        return self.input_cost + self.output * PRICES[self.model][1] / 1e6


def summary_reply(body: dict[str, Any]) -> dict[str, Any]:
    """What the cheap model answers to a summary request: ~400 characters of summary."""
    text = json.dumps(body.get("messages"))
    turns = text.count("Turn ")
    line = "The user builds a sales dashboard with regional breakdowns; colours kept consistent. "
    return {
        "commentary": (f"Summary of {turns} turns. " + line * 6)[:400],
        "template": "code-interpreter-v1",
        "code": "-",
    }


@dataclass
class CountingAnthropic:
    """ASGI app: `POST /v1/messages` answering the next scripted fragment as a tool call."""

    replies: list[dict[str, Any]] = field(default_factory=list)
    seen: list[Counts] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    # The summary requests (the cheap model condensing older turns), counted apart.
    summaries: list[Counts] = field(default_factory=list)
    # Per model (each model has its own cache): the prefixes marked in its previous request.
    _cached: dict[str, dict[str, int]] = field(default_factory=dict)

    def reset(self, replies: list[dict[str, Any]]) -> None:
        self.replies = replies
        self.seen, self.bodies, self.summaries, self._cached = [], [], [], {}

    def count(self, body: dict[str, Any]) -> tuple[int, int, int]:
        blocks = _blocks(body)
        cached = self._cached.get(str(body.get("model")), {})
        digest = hashlib.sha256()
        prefix_tokens = 0
        read = 0
        last_mark = 0
        marks: dict[str, int] = {}
        for text, marked in blocks:
            digest.update(hashlib.sha256(text.encode()).digest())
            prefix_tokens += _text_tokens(text)
            key = digest.hexdigest()
            if key in cached:
                read = prefix_tokens
            if marked:
                last_mark = prefix_tokens
                marks[key] = prefix_tokens
        total = prefix_tokens
        write = max(0, last_mark - read)
        # The prefixes marked in this request, for the next one to the same model.
        self._cached[str(body.get("model"))] = marks
        return total, read, write

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        body = json.loads(raw)
        total, read, write = self.count(body)
        system = body.get("system") or []
        is_summary = bool(system) and str(system[0].get("text", "")).startswith(SUMMARY_MARK)
        reply = json.dumps(summary_reply(body) if is_summary else self.replies.pop(0))
        output = tokens(reply)
        counts = Counts(total, read, write, output, str(body["model"]))
        if is_summary:
            self.summaries.append(counts)
        else:
            self.seen.append(counts)
            self.bodies.append(body)
        usage = {
            "input_tokens": total - read - write,
            "cache_read_input_tokens": read,
            "cache_creation_input_tokens": write,
            "output_tokens": 1,
        }

        def event(name: str, data: dict[str, Any]) -> bytes:
            return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

        start = {"type": "message", "role": "assistant", "model": body["model"], "usage": usage}
        events = [
            event("message_start", {"type": "message_start", "message": {"id": "m", **start}}),
            event(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "tool_use", "id": "t", "name": "fragment"},
                },
            ),
        ]
        for i in range(0, len(reply), 512):
            delta = {"type": "input_json_delta", "partial_json": reply[i : i + 512]}
            events.append(
                event(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                )
            )
        events += [
            event("content_block_stop", {"type": "content_block_stop", "index": 0}),
            event(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "tool_use"},
                    "usage": {"output_tokens": output},
                },
            ),
            event("message_stop", {"type": "message_stop"}),
        ]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await send({"type": "http.response.body", "body": b"".join(events)})


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the counting fake did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


# ---- the conversation ---------------------------------------------------------------------------


@dataclass
class Run:
    counts: list[Counts]
    reported_cost: list[float]
    bodies: list[dict[str, Any]] = field(default_factory=list)
    summaries: list[Counts] = field(default_factory=list)

    @property
    def routed(self) -> int:
        return sum(1 for c in self.counts if c.model != MODEL)

    def average(self, *, output: bool) -> float:
        """Average cost a request, the summary calls included."""
        every = [*self.counts, *self.summaries]
        return sum(c.cost if output else c.input_cost for c in every) / len(self.counts)


async def conversation(
    base_url: str,
    fake: CountingAnthropic,
    data: Path,
    *,
    window: bool,
    routing: bool = False,
    stored: bool = False,
) -> Run:
    """The scripted conversation. `stored`: a signed-in user whose client sends only the new
    message and `conversation_id` (the server has the history); otherwise an anonymous guest
    whose client sends the whole history, as the original's does."""
    from fragments.app import create_app
    from fragments.config import Settings

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data,
        anthropic_api_key="bench-key",
        anthropic_base_url=base_url,
        history_window=window,
        routing=routing,
        provider_retries=0,
        rate_limits=False,
        response_cache=False,
        # One provider, its costs: no failover steps and no health probes to the counting fake.
        failover_chain="",
        health_interval_seconds=0,
    )
    app = create_app(settings)
    fake.reset([answer(t) for t in range(1, TURNS + 1)])
    messages: list[dict[str, Any]] = []
    reported: list[float] = []
    conversation_id: str | None = None
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://bench", timeout=60) as c:
            headers: dict[str, str] = {}
            if stored:
                account = {"email": "bench@example.com", "password": "correct horse battery"}
                signup = await c.post("/api/auth/signup", json=account)
                signup.raise_for_status()
                headers["Authorization"] = f"Bearer {signup.json()['access_token']}"
            for turn in range(1, TURNS + 1):
                text_part = {"type": "text", "text": user_text(turn)}
                messages.append({"role": "user", "content": [text_part]})
                body: dict[str, Any] = {
                    "messages": messages[-1:] if stored else messages,
                    "template": "auto",
                    "model": {"id": MODEL, "providerId": "anthropic"},
                }
                if conversation_id is not None:
                    body["conversation_id"] = conversation_id
                response = await c.post("/api/chat", json=body, headers=headers)
                if response.status_code != 200 or "event: done" not in response.text:
                    detail = response.text[-500:]
                    raise RuntimeError(f"turn {turn}: {response.status_code} {detail}")
                text = response.text.replace("\r\n", "\n")
                fragment = json.loads(text.split("event: fragment\ndata: ")[1].split("\n")[0])
                usage = json.loads(text.split("event: usage\ndata: ")[1].split("\n")[0])
                done = json.loads(text.split("event: done\ndata: ")[1].split("\n")[0])
                if stored:
                    conversation_id = done["conversation_id"]
                reported.append(float(usage.get("cost_usd") or 0.0))
                messages.append(
                    {
                        "role": "assistant",
                        "content": [{"type": "text", "text": fragment["commentary"]}],
                        "object": fragment,
                    }
                )
    return Run(list(fake.seen), reported, list(fake.bodies), list(fake.summaries))


@dataclass
class Runs:
    full: Run
    windowed: Run
    routed: Run
    stored: Run
    stored_routed: Run


async def measure() -> Runs:
    fake = CountingAnthropic()
    with serve(fake) as url, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        full = await conversation(url, fake, root / "full", window=False)
        windowed = await conversation(url, fake, root / "windowed", window=True)
        routed = await conversation(url, fake, root / "routed", window=True, routing=True)
        stored = await conversation(url, fake, root / "stored", window=True, stored=True)
        stored_routed = await conversation(
            url, fake, root / "stored-routed", window=True, routing=True, stored=True
        )
    return Runs(full, windowed, routed, stored, stored_routed)


def report(runs: Runs) -> None:
    off, on = runs.full, runs.windowed
    print(
        f"\nCost: {TURNS}-turn conversation through /api/chat, Anthropic-format counting fake "
        "(tokens = characters / 4), Claude Sonnet prices unless routed"
    )
    print(
        f"{'turn':>4} {'full input':>10} {'windowed':>9} {'ratio':>6} {'uncached':>9} "
        f"{'ratio':>6} {'cache read':>10} {'$ full':>8} {'$ windowed':>10} {'$ w/ output':>11}"
    )
    for turn in SHOWN:
        a, b = off.counts[turn - 1], on.counts[turn - 1]
        print(
            f"{turn:>4} {a.input:>10,} {b.input:>9,} {b.input / a.input:>6.1%} "
            f"{b.fresh + b.write:>9,} {(b.fresh + b.write) / a.input:>6.1%} "
            f"{b.read / b.input:>10.1%} {a.input_cost:>8.4f} {b.input_cost:>10.4f} "
            f"{b.cost:>11.4f}"
        )
    worst = max(
        range(10, TURNS + 1), key=lambda t: on.counts[t - 1].input / off.counts[t - 1].input
    )
    print(
        f"largest ratio from turn 10 on: turn {worst}, "
        f"{on.counts[worst - 1].input / off.counts[worst - 1].input:.1%} (the window holds 5 or "
        "6 verbatim exchanges as it moves 2 at a time)"
    )
    total_in = sum(c.input for c in on.counts)
    read_share = sum(c.read for c in on.counts) / total_in
    print(f"cache-read share {read_share:.1%} of windowed input tokens")
    parts = breakdown(on.bodies[9])
    print(
        "windowed prompt at turn 10, tokens: "
        + ", ".join(f"{k} {v:,}" for k, v in parts.items())
        + f" (total {sum(parts.values()):,})"
    )
    print("average cost a request (input only / with output at the answering model's prices):")
    rows = (
        ("full history, Sonnet", off),
        ("windowed + cached, Sonnet", on),
        ("windowed + cached, routing auto", runs.routed),
        ("stored conversation (conversation_id only), Sonnet", runs.stored),
        ("stored conversation, routing auto", runs.stored_routed),
    )
    for label, run in rows:
        print(f"  {label:<52} ${run.average(output=False):.4f} / ${run.average(output=True):.4f}")
    routed = runs.routed
    print(
        f"routing auto: {routed.routed}/{len(routed.counts)} turns routed to claude-haiku-4-5 "
        f"({routed.routed / len(routed.counts):.0%}); ${routed.average(output=True):.4f} a "
        f"request with output vs ${on.average(output=True):.4f} without routing "
        f"({1 - routed.average(output=True) / on.average(output=True):.0%} less)"
    )
    stored = runs.stored
    print(
        "stored conversation, input tokens at turns "
        + ", ".join(f"{t}: {stored.counts[t - 1].input:,}" for t in SHOWN)
    )
    calls = stored.summaries
    print(
        f"  summary calls (cheap model, when the window moves): {len(calls)}, input "
        f"{sum(c.input for c in calls):,} and output {sum(c.output for c in calls):,} tokens, "
        f"${sum(c.cost for c in calls):.4f} in all (${sum(c.cost for c in calls) / TURNS:.4f} a "
        "request, counted in the averages above)"
    )
    n = len(on.counts)
    print(
        "cost the app reported (usage events): windowed "
        f"${sum(on.reported_cost) / n:.4f} a request, full ${sum(off.reported_cost) / n:.4f}, "
        f"routing auto ${sum(routed.reported_cost) / n:.4f}"
    )
    print(
        "uncached = fresh input + cache writes (what is billed at or above the input price); "
        "$ columns are input cost, '$ w/ output' adds the answer's output tokens"
    )


def run() -> None:
    report(asyncio.run(measure()))


if __name__ == "__main__":
    run()
