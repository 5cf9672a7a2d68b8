"""The cost bench's counting fake models Anthropic's prefix cache, and a short run of the bench
through /api/chat shows windowing and caching at work."""

from __future__ import annotations

import pytest
from bench import cost


def test_the_fake_reads_the_prefix_marked_in_the_previous_request() -> None:
    fake = cost.CountingAnthropic()
    mark = {"type": "ephemeral"}
    first = {
        "system": [{"type": "text", "text": "S" * 400, "cache_control": mark}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "u" * 40}]},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "a" * 80, "cache_control": mark}],
            },
            {"role": "user", "content": [{"type": "text", "text": "n" * 40}]},
        ],
    }
    assert fake.count(first) == (140, 0, 130)  # nothing cached yet: writes to the last mark
    second = {
        "system": first["system"],
        "messages": [
            *first["messages"][:2],
            {"role": "user", "content": [{"type": "text", "text": "n" * 40}]},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "b" * 80, "cache_control": mark}],
            },
            {"role": "user", "content": [{"type": "text", "text": "m" * 40}]},
        ],
    }
    # Reads the 130 tokens up to the earlier mark (the mark itself may move), writes 30 more.
    assert fake.count(second) == (170, 130, 30)
    changed = {**second, "system": [{"type": "text", "text": "T" * 400, "cache_control": mark}]}
    assert fake.count(changed)[1] == 0


@pytest.mark.anyio
async def test_a_short_bench_run_through_the_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cost, "TURNS", 8)
    runs = await cost.measure()
    off, on = runs.full, runs.windowed
    assert len(off.counts) == len(on.counts) == 8
    assert on.counts[0].input == off.counts[0].input
    assert on.counts[-1].input < off.counts[-1].input / 2
    assert on.counts[-1].read > 0
    assert sum(c.cost for c in on.counts) < sum(c.cost for c in off.counts)
    # The app priced the answers from the provider's reported usage, at the same prices.
    assert on.reported_cost[-1] == pytest.approx(on.counts[-1].cost, rel=0.02)
    # The turn-10-style breakdown accounts for every token the fake counted.
    assert sum(cost.breakdown(on.bodies[-1]).values()) == on.counts[-1].input
    # Routing: the first turn makes the app on Sonnet, every edit goes to Haiku.
    assert [c.model for c in runs.routed.counts] == [cost.MODEL] + ["claude-haiku-4-5"] * 7
    assert runs.routed.average(output=True) < on.average(output=True)
    # Only conversation_id sent: the server's history is windowed the same way, and the
    # window moving at turn 8 (7 earlier exchanges, 5 kept) asked the cheap model for a summary.
    assert runs.stored.counts[-1].input < off.counts[-1].input / 2
    assert [c.model for c in runs.stored.summaries] == ["claude-haiku-4-5"]
    assert runs.stored.average(output=False) > sum(c.input_cost for c in runs.stored.counts) / 8
