"""History windowing: what of a conversation the model sees on each request.

The last `keep` exchanges (a user message and the answer to it) go verbatim, older ones are
condensed into a running summary, earlier versions of the code are replaced by a short reference,
and the current fragment's code is sent exactly once, in the last user turn. The window moves in
steps of `step` exchanges, so the summary (and with it the cached prompt prefix) changes only
every `step` turns: between moves `keep` to `keep + step - 1` exchanges are verbatim.

Order (stable first, for prefix caches): system and tools (the wire's), the summary (the first
user turn's first part), the verbatim exchanges, then the current code and the new message. Every
turn before the last is identical on the next request until the window moves, so `cache_turns`
tells the wire where the stable prefix ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fragments.chat.prompt import to_turns
from fragments.llm.types import Turn
from fragments.schemas import CodePart, Fragment, Message, TextPart

SUMMARY_HEADING = "Summary of earlier turns:"
CURRENT_CODE_HEADING = "Current code"


def code_reference(version: int) -> str:
    """What stands for an answer's code in the history: the code itself is sent once, as the
    current version, so an earlier answer only says which version it was."""
    return f"(v{version})"


@dataclass(frozen=True)
class Exchange:
    """One user message and the answer to it (None while unanswered)."""

    user: Message
    answer: Message | None = None
    # 1-based version of the fragment in `answer`, counted over the whole conversation.
    version: int | None = None


@dataclass(frozen=True)
class Window:
    turns: tuple[Turn, ...]
    # Leading turns identical on the next request (until the window moves).
    cache_turns: int
    # Exchanges the summary must cover (the oldest ones), and those not yet in `summary_turns`.
    folded: int
    to_fold: tuple[Exchange, ...] = field(default=())
    # The conversation's latest fragment (the one this request edits), if any.
    latest: Fragment | None = None


def exchanges(history: list[Message]) -> list[Exchange]:
    """Group messages into exchanges; assistant messages without a user before them attach
    to an empty user message."""
    out: list[Exchange] = []
    version = 0
    for message in history:
        if message.role == "user":
            out.append(Exchange(message))
            continue
        if message.object is not None:
            version += 1
        if out and out[-1].answer is None:
            last = out.pop()
            out.append(Exchange(last.user, message, version if message.object else None))
        else:
            empty = Message(role="user", content=[])
            out.append(Exchange(empty, message, version if message.object else None))
    return out


def folded_count(n: int, keep: int, step: int) -> int:
    """How many of `n` past exchanges the summary covers: a multiple of `step`, leaving at
    least `keep` verbatim."""
    step = max(1, step)
    if n <= keep:
        return 0
    return ((n - keep) // step) * step


def message_text(message: Message, limit: int | None = None) -> str:
    text = " ".join(
        p.text.strip() for p in message.content if isinstance(p, (TextPart, CodePart)) and p.text
    )
    text = " ".join(text.split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def extractive_summary(
    previous: str | None, items: list[Exchange], *, first_index: int, max_chars: int
) -> str:
    """A deterministic summary made locally (no model call): a line per exchange with the
    request and the version it produced (an answer's commentary mostly restates the request;
    an answer without a fragment is kept, shortened), the oldest dropped first beyond
    `max_chars` (the first line, usually the original request, is kept)."""
    lines = [line for line in (previous or "").splitlines() if line.strip()]
    for offset, item in enumerate(items):
        asked = message_text(item.user, 120) or "(no text)"
        line = f"- {first_index + offset}. {asked}"
        fragment = item.answer.object if item.answer is not None else None
        if fragment is not None:
            line += f" → v{item.version}"
        elif item.answer is not None:
            line += f" → {message_text(item.answer, 90)}"
        lines.append(line)
    while len(lines) > 2 and sum(len(x) + 1 for x in lines) > max_chars:
        del lines[1]
    return "\n".join(lines)[:max_chars]


def _answer_turn(item: Exchange) -> Turn | None:
    """An earlier answer as its commentary and a reference to its version: the title,
    template, path and code are the current version's, sent once in the last turn."""
    answer = item.answer
    if answer is None:
        return None
    fragment = answer.object
    if fragment is None:
        text = message_text(answer)
        return Turn("assistant", (text,)) if text else None
    commentary = " ".join(fragment.commentary.split())
    ref = code_reference(item.version or 0)
    return Turn("assistant", (f"{commentary} {ref}" if commentary else ref,))


def current_code(fragment: Fragment, version: int) -> str:
    """The current fragment's code, sent once, before the user's new message, with what the
    next version must keep (template, path, title, extra packages)."""
    facts = [f"v{version}", fragment.template]
    if fragment.title:
        facts.append(f"“{fragment.title}”")
    if fragment.additional_dependencies:
        facts.append("extra packages: " + ", ".join(fragment.additional_dependencies))
    if fragment.port is not None:
        facts.append(f"port {fragment.port}")
    head = f"{CURRENT_CODE_HEADING} ({'; '.join(facts)})"
    if fragment.files:
        parts = [f"{head}:"]
        for entry in fragment.files:
            parts.append(f"--- {entry.file_path}\n{entry.file_content}")
        return "\n".join(parts)
    path = fragment.file_path or "main file"
    return f"{head}, {path}:\n{fragment.code}"


def build_window(
    history: list[Message],
    current: Message,
    *,
    keep: int,
    step: int,
    summary: str | None,
    summary_turns: int,
    multimodal: bool,
    max_image_bytes: int,
) -> Window:
    """The windowed turns for `history` (every earlier message) and the new user message.

    `summary` covers the first `summary_turns` exchanges; if the window needs more folded,
    `to_fold` lists the exchanges to add (the caller folds them and calls again, or uses
    `extractive_summary`). The turns returned use `summary` as given.
    """
    items = exchanges(history)
    folded = folded_count(len(items), keep, step)
    covered = min(summary_turns, folded) if summary else 0
    to_fold = tuple(items[covered:folded])
    verbatim = items[folded:]
    latest: tuple[Fragment, int] | None = None
    for item in items:
        if item.answer is not None and item.answer.object is not None:
            latest = (item.answer.object, item.version or 0)

    turns: list[Turn] = []
    if summary and folded:
        turns.append(Turn("user", (f"{SUMMARY_HEADING}\n{summary}",)))
    for item in verbatim:
        user_turns = to_turns([item.user], multimodal=multimodal, max_image_bytes=max_image_bytes)
        turns.extend(user_turns)
        answer = _answer_turn(item)
        if answer is not None:
            turns.append(answer)
    cache_turns = len(turns)
    new = to_turns([current], multimodal=multimodal, max_image_bytes=max_image_bytes)
    parts = new[0].parts if new else ()
    if latest is not None:
        parts = (current_code(*latest), *parts)
    turns.append(Turn("user", parts))
    return Window(
        tuple(turns), cache_turns, folded, to_fold, latest[0] if latest is not None else None
    )
