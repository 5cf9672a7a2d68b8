"""Edits bench: a scripted 10-edit session through the real `/api/chat`, as full rewrites and as
patches (search/replace blocks applied locally, and merged by Morph).

The app runs in-process (lifespan on) against the fake Anthropic messages API and the fake
Morph apply API, both real HTTP servers on 127.0.0.1 (tests/fakes), so the measured path is
the real one: the edit prompt, the streamed answer, the merge, usage records and pricing. Each
session is one new account; its tokens and cost are read back from `GET /api/usage`.

The session starts from the ~3.2 KB sample Streamlit app and asks for ten small changes (a
title, a default, a new input, a chart type, ...). For each, the fake model answers either with
the whole new fragment (rewrite) or with the same fragment whose `code` holds one
search/replace block with a line of context on each side (patch). The fakes count tokens as
characters / 4 (the model's answer; Morph's prompt and merged file). Prices: Claude Sonnet
($3/M input, $15/M output), Morph v3 large ($0.90/M input, $1.90/M output). Every session must
end with the same code, checked.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import SecretStr
from tests.apps import app_client
from tests.fakes import SAMPLE_FRAGMENT, FakeAnthropic, FragmentReply
from tests.fakes.morph import FakeMorph

from fragments.config import Settings

MODEL = ("anthropic", "claude-sonnet-5-5")
Session = Literal["rewrite", "patch (local apply)", "patch (Morph)"]

# (what the user asks, a line of the current code, what replaces it)
EDITS: list[tuple[str, str, str]] = [
    (
        "Call it Mortgage calculator",
        'st.title("Loan calculator")',
        'st.title("Mortgage calculator")',
    ),
    (
        "Start at 300,000",
        '    principal = st.number_input("Amount", min_value=1000.0, value=250000.0, step=1000.0)',
        '    principal = st.number_input("Amount", min_value=1000.0, value=300000.0, step=1000.0)',
    ),
    (
        "Cap the rate at 12%",
        '    rate = st.slider("Yearly interest rate (%)", min_value=0.0, max_value=15.0, '
        "value=4.5)",
        '    rate = st.slider("Yearly interest rate (%)", min_value=0.0, max_value=12.0, '
        "value=4.5)",
    ),
    (
        "Let me pick the start year",
        '    years = st.slider("Duration (years)", min_value=1, max_value=40, value=25)',
        '    years = st.slider("Duration (years)", min_value=1, max_value=40, value=25)\n'
        '    start_year = st.number_input("Start year", min_value=2000, value=2026, step=1)',
    ),
    (
        "Say 'Paid off in'",
        'right.metric("Paid off after", f"{len(table) / 12:.1f} years")',
        'right.metric("Paid off in", f"{start_year + len(table) / 12:.0f}")',
    ),
    (
        "Make the balance a line chart",
        'st.area_chart(table.set_index("month")[["balance"]])',
        'st.line_chart(table.set_index("month")[["balance"]])',
    ),
    (
        "Side-by-side bars please",
        "st.bar_chart(yearly)",
        "st.bar_chart(yearly, stack=False)",
    ),
    (
        "Rename the expander to Full schedule",
        'with st.expander("Amortisation schedule"):',
        'with st.expander("Full schedule"):',
    ),
    (
        "Name the CSV mortgage_schedule.csv",
        'st.download_button("Download CSV", table.to_csv(index=False), file_name="schedule.csv")',
        'st.download_button("Download CSV", table.to_csv(index=False), '
        'file_name="mortgage_schedule.csv")',
    ),
    (
        "More points in the sensitivity chart",
        "rates = np.linspace(max(rate - 2, 0), rate + 2, 9)",
        "rates = np.linspace(max(rate - 2, 0), rate + 2, 17)",
    ),
]


def context_block(code: str, old: str, new: str) -> tuple[str, str]:
    """The block a careful model writes: the changed line with one unchanged line either side."""
    lines = code.split("\n")
    at = lines.index(old)
    before, after = lines[max(at - 1, 0)], lines[min(at + 1, len(lines) - 1)]
    search = f"{before}\n{old}\n{after}"
    replace = f"{before}\n{new}\n{after}"
    block = f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"
    return block, code.replace(search, replace, 1)


@dataclass
class Figures:
    session: Session
    turns: int
    model_output_tokens: int
    model_input_tokens: int
    morph_tokens: int
    cost_usd: float
    final_code: str


def _body(fragment: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Make a loan calculator"}]},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "Here."}],
                "object": fragment,
            },
            {"role": "user", "content": [{"type": "text", "text": text}]},
        ],
        "template": "streamlit-developer",
        "model": {"id": MODEL[1], "providerId": MODEL[0]},
    }


async def _session(
    session: Session, model: FakeAnthropic, morph: FakeMorph, data_dir: Path
) -> Figures:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data_dir,
        anthropic_api_key=SecretStr("bench-anthropic-key"),
        anthropic_base_url=model.base_url,
        openai_api_key=None,
        google_api_key=None,
        failover_chain="",
        response_cache=False,
        health_interval_seconds=0,
        rate_limits=False,
        edit_mode="rewrite" if session == "rewrite" else "patch",
        morph_api_key=SecretStr("bench-morph-key") if session == "patch (Morph)" else None,
        morph_base_url=morph.base_url,
    )
    fragment = dict(SAMPLE_FRAGMENT)
    async with app_client(settings) as client:
        signup = await client.post(
            "/api/auth/signup",
            json={
                "email": f"bench-{uuid.uuid4().hex[:8]}@example.com",
                "password": "bench password",
            },
        )
        client.headers["Authorization"] = f"Bearer {signup.json()['access_token']}"
        for text, old, new in EDITS:
            block, code = context_block(fragment["code"], old, new)
            answer = {**fragment, "commentary": f"I change it: {text.lower()}."}
            answer["code"] = code if session == "rewrite" else block
            model.script(FragmentReply(answer, chunk_size=64))
            response = await client.post("/api/chat", json=_body(fragment, text))
            final = _fragment_of(response.text)
            if final["code"] != code:
                raise RuntimeError(f"{session}: the edit {text!r} did not give the expected code")
            fragment = {**fragment, "code": final["code"], "commentary": answer["commentary"]}
        report = (await client.get("/api/usage?days=1")).json()
    items = report["items"]
    chat = [i for i in items if not i["model"].startswith("morph/")]
    return Figures(
        session=session,
        turns=len(EDITS),
        model_output_tokens=sum(i["output_tokens"] for i in chat),
        model_input_tokens=sum(i["input_tokens"] for i in chat),
        morph_tokens=sum(
            i["input_tokens"] + i["output_tokens"] for i in items if i["model"].startswith("morph/")
        ),
        cost_usd=sum(i["cost_usd"] for i in items),
        final_code=fragment["code"],
    )


def _fragment_of(sse: str) -> dict[str, Any]:
    name = ""
    for line in sse.replace("\r\n", "\n").split("\n"):
        if line.startswith("event:"):
            name = line[6:].strip()
        elif line.startswith("data:") and name == "fragment":
            found: dict[str, Any] = json.loads(line[5:])
            return found
        elif line.startswith("data:") and name == "error":
            raise RuntimeError(f"the chat failed: {line[5:]}")
    raise RuntimeError("the chat sent no fragment")


async def _measure() -> list[Figures]:
    results = []
    with FakeAnthropic() as model, FakeMorph() as morph, tempfile.TemporaryDirectory() as tmp:
        for session in ("rewrite", "patch (local apply)", "patch (Morph)"):
            data = Path(tmp) / session.split()[0] / str(len(results))
            results.append(await _session(session, model, morph, data))  # type: ignore[arg-type]
    return results


def run() -> None:
    results = _measure_sync()
    codes = {r.final_code for r in results}
    if len(codes) != 1:
        raise RuntimeError("the sessions ended with different code")
    rewrite = results[0]
    print(f"\nEdits: a scripted {len(EDITS)}-edit session of a 3.2 KB app, {MODEL[1]}")
    print(
        f"{'session':22} {'output tokens':>14} {'input tokens':>13} {'Morph tokens':>13} "
        f"{'cost USD':>10} {'output vs rewrite':>18} {'cost vs rewrite':>16}"
    )
    for r in results:
        print(
            f"{r.session:22} {r.model_output_tokens:>14,} {r.model_input_tokens:>13,} "
            f"{r.morph_tokens:>13,} {r.cost_usd:>10.4f} "
            f"{r.model_output_tokens / rewrite.model_output_tokens:>17.2f}x "
            f"{r.cost_usd / rewrite.cost_usd:>15.2f}x"
        )
    print("every session ended with the same code (checked)")


def _measure_sync() -> list[Figures]:
    return asyncio.run(_measure())


if __name__ == "__main__":
    run()
