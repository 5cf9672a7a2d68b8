"""Edits as patches: when a fragment exists, the model writes only what changes.

The answer keeps the fragment's JSON shape (same tool schema, same UI); in an edit, its `code`
holds search/replace blocks (see `search_replace.py`) instead of the whole program. Once the
answer is complete they are merged into the current code:

1. by Morph (`llm/morph.py`), for platform-paid requests when `MORPH_API_KEY` is set, behind
   the `edit:morph` circuit breaker; the blocks' replacements, joined by "... existing code ..."
   markers, are Morph's lazy edit snippet. A merge that lost a replacement is not trusted;
2. else, or when Morph fails, locally: each block exact, then whitespace-tolerant;
3. when the blocks do not apply, the model is asked once for the whole program (a `reset`
   event, then the rewrite streams as any answer does).

While the edit streams, partials show the current code (the blocks are no program to show);
the merged fragment then goes out as the last partial and as the `fragment` event.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import PurePosixPath

import structlog

from fragments.chat.accounting import billed_to
from fragments.chat.finalize import parse_fragment
from fragments.chat.search_replace import (
    Block,
    PatchError,
    apply_blocks,
    contains_replacements,
    looks_like_edit,
    parse_blocks,
)
from fragments.config import Settings
from fragments.llm.errors import LLMError
from fragments.llm.morph import MORPH_BREAKER, MORPH_PROVIDER, MorphClient, MorphError
from fragments.llm.types import (
    AnswerSink,
    Attempt,
    EditOutcome,
    Fallback,
    ModelCall,
    ModelStreamer,
    StreamResult,
)
from fragments.observability import metrics
from fragments.observability.context import current_tier
from fragments.resilience import BreakerOpen, BreakerRegistry, CircuitBreaker
from fragments.schemas import Fragment

log = structlog.get_logger(__name__)

# In "auto" mode, shorter code is rewritten whole: the blocks' own overhead (markers, repeated
# context lines) and the risk of a failed patch outweigh the saving below about this size.
AUTO_MIN_CHARS = 1200

EDIT_RULES = """
This request changes the current code. In code, write only SEARCH/REPLACE blocks, not the
whole program:
<<<<<<< SEARCH
lines copied exactly from the current code
=======
the lines that take their place
>>>>>>> REPLACE
- Each SEARCH matches exactly one place; repeat an unchanged line or two around every change
in both SEARCH and REPLACE. One block per place, in file order.
- Fill every other field as usual (template, title, file_path, dependencies).
- To change most of the program, write it whole instead."""

REWRITE_NOTE = """
Your last edit could not be applied to the current code: write the complete program in code
this time (no SEARCH/REPLACE blocks)."""

_MARKERS = {
    ".py": "# ... existing code ...",
    ".vue": "// ... existing code ...",
    ".html": "<!-- ... existing code ... -->",
    ".css": "/* ... existing code ... */",
}


@dataclass(frozen=True, slots=True)
class EditPlan:
    """This request edits `base`; Morph (and its breaker) merges when given."""

    base: Fragment
    # What the user asked, Morph's instruction when the model wrote no commentary.
    request: str
    # The system prompt without the edit rules, for the one full rewrite.
    system: str
    morph: MorphClient | None = None
    breaker: CircuitBreaker | None = None


def plan_edit(
    settings: Settings,
    latest: Fragment | None,
    call: ModelCall,
    *,
    request: str,
    morph: MorphClient | None,
    breakers: BreakerRegistry | None,
) -> EditPlan | None:
    """How this turn edits the conversation's latest fragment; None: the model writes it whole
    (a new app, rewrite mode, a multi-file fragment, or short code in auto mode)."""
    mode = settings.edit_mode
    if latest is None or mode == "rewrite" or latest.files or not latest.code.strip():
        return None
    if mode == "auto" and len(latest.code) < AUTO_MIN_CHARS:
        return None
    # Morph is paid by the platform: a caller's own key or server gets local application only.
    use_morph = morph is not None and billed_to(call) == "platform"
    return EditPlan(
        base=latest,
        request=request,
        system=call.system,
        morph=morph if use_morph else None,
        breaker=breakers.breaker(MORPH_BREAKER) if use_morph and breakers is not None else None,
    )


def edit_call(call: ModelCall) -> ModelCall:
    """`call` asking for search/replace blocks."""
    return dataclasses.replace(call, system=call.system + EDIT_RULES)


def lazy_snippet(blocks: list[Block], file_path: str) -> str:
    """Morph's update snippet: each replacement between "... existing code ..." markers, in the
    comment syntax of the file's language."""
    marker = _MARKERS.get(PurePosixPath(file_path).suffix.lower(), "// ... existing code ...")
    parts = [marker]
    for block in blocks:
        parts += [block.replace.strip("\n"), marker]
    return "\n".join(parts)


def merged_fragment(base: Fragment, edited: Fragment, code: str) -> Fragment:
    """The edit's fields with the merged code; what an edit left empty keeps the base's."""
    fragment = edited.model_copy(update={"code": code, "files": []})
    for name in ("template", "title", "description", "file_path"):
        if not getattr(fragment, name):
            setattr(fragment, name, getattr(base, name))
    if fragment.port is None:
        fragment.port = base.port
    if not fragment.additional_dependencies and base.additional_dependencies:
        # Dropping a package is rarely the point of an edit; keeping one installed is harmless.
        fragment.additional_dependencies = list(base.additional_dependencies)
        fragment.has_additional_dependencies = base.has_additional_dependencies
        fragment.install_dependencies_command = base.install_dependencies_command
    return fragment


def partial_code(base: Fragment, fragment: Fragment) -> None:
    """While an edit streams, a partial shows the current code in place of the blocks."""
    if not fragment.code.strip() or looks_like_edit(fragment.code):
        fragment.code = base.code
        if not fragment.file_path:
            fragment.file_path = base.file_path


class _Copy:
    """Forwards to the chat layer's sink and keeps the answer's text for the merge."""

    __slots__ = ("parts", "sink")

    def __init__(self, sink: AnswerSink) -> None:
        self.sink = sink
        self.parts: list[str] = []

    def started(
        self, provider: str, model: str, fallback: bool, reason: Fallback | None = None
    ) -> None:
        self.sink.started(provider, model, fallback, reason)

    def delta(self, text: str) -> None:
        self.parts.append(text)
        self.sink.delta(text)

    def reset(self, reason: str) -> None:
        self.parts.clear()
        self.sink.reset(reason)

    def abandoned(self, attempt: Attempt) -> None:
        self.sink.abandoned(attempt)

    def text(self) -> str:
        return "".join(self.parts)


class EditingStreamer:
    """A `ModelStreamer` for one edit request: streams the model's edit, merges it into the
    plan's base, and falls back to one full rewrite when it does not apply."""

    def __init__(self, inner: ModelStreamer, plan: EditPlan) -> None:
        self.inner = inner
        self.plan = plan

    async def stream(self, call: ModelCall, sink: AnswerSink) -> StreamResult:
        copy = _Copy(sink)
        result = await self.inner.stream(call, copy)
        edited = parse_fragment(copy.text())
        if edited is None:
            return result  # finalize says why it is not a fragment
        if not looks_like_edit(edited.code):
            return dataclasses.replace(result, edit="model_rewrite")
        merged = await self._merge(edited, sink)
        if merged is not None:
            fragment, outcome = merged
            return dataclasses.replace(result, text=fragment.model_dump_json(), edit=outcome)
        # One full rewrite; the edit's tokens are still paid for, charged to its model.
        sink.abandoned(Attempt(result.provider, result.model, result.usage, result.cost_usd))
        sink.reset("edit_not_applied")
        rewrite = dataclasses.replace(call, system=self.plan.system + REWRITE_NOTE)
        again = _Copy(sink)
        result = await self.inner.stream(rewrite, again)
        written = parse_fragment(again.text())
        if written is not None and looks_like_edit(written.code):
            # Told to write it whole, the model sent blocks again: they may still apply here.
            try:
                applied = apply_blocks(self.plan.base.code, parse_blocks(written.code))
            except PatchError as exc:
                raise LLMError(
                    "invalid_output",
                    "The model's edit could not be applied to the current code; try rephrasing "
                    "the request.",
                ) from exc
            fragment = merged_fragment(self.plan.base, written, applied.code)
            return dataclasses.replace(result, text=fragment.model_dump_json(), edit="rewrite")
        return dataclasses.replace(result, edit="rewrite")

    async def _merge(
        self, edited: Fragment, sink: AnswerSink
    ) -> tuple[Fragment, EditOutcome] | None:
        base = self.plan.base
        try:
            blocks = parse_blocks(edited.code)
        except PatchError as exc:
            log.info("edit_not_applied", reason=exc.reason, block=exc.block)
            return None
        merged = await self._morph(edited, blocks, sink)
        if merged is not None:
            return merged_fragment(base, edited, merged), "morph"
        try:
            applied = apply_blocks(base.code, blocks)
        except PatchError as exc:
            log.info("edit_not_applied", reason=exc.reason, block=exc.block, blocks=len(blocks))
            return None
        log.info("edit_applied", by="search_replace", blocks=len(blocks), tolerant=applied.tolerant)
        return merged_fragment(base, edited, applied.code), "search_replace"

    async def _morph(self, edited: Fragment, blocks: list[Block], sink: AnswerSink) -> str | None:
        """Morph's merge, or None (not configured, breaker open, failed, or untrustworthy)."""
        plan = self.plan
        if plan.morph is None or plan.breaker is None:
            return None
        base = plan.base
        instruction = (edited.commentary or plan.request).strip()[:1000]
        began = time.monotonic()
        try:
            async with plan.breaker.guard():
                merged = await plan.morph.merge(
                    instruction=instruction,
                    code=base.code,
                    update=lazy_snippet(blocks, edited.file_path or base.file_path),
                )
        except BreakerOpen as exc:
            log.info("edit_morph_skipped", retry_after=round(exc.retry_after, 1))
            return None
        except MorphError as exc:
            log.warning("edit_morph_failed", error=str(exc))
            metrics.breaker_state(MORPH_BREAKER, await plan.breaker.state())
            return None
        metrics.breaker_state(MORPH_BREAKER, await plan.breaker.state())
        # Morph's tokens are charged to it, beside the model's answer, and counted in the
        # model metrics (cost alerts include it). Its failures are not: they show as the
        # breaker and the logs, and do not fail the answer.
        usage = merged.usage
        sink.abandoned(Attempt(MORPH_PROVIDER, plan.morph.model, usage, merged.cost_usd))
        metrics.llm_answer(
            MORPH_PROVIDER,
            plan.morph.model,
            outcome="ok",
            tier=current_tier(),
            first_token_seconds=None,
            answer_seconds=time.monotonic() - began,
            tokens={"input": usage.input_tokens, "output": usage.output_tokens},
            cost_usd=merged.cost_usd,
        )
        if not contains_replacements(merged.code, blocks):
            # Morph answered, so it is up (no breaker failure); its merge is just not used.
            log.warning("edit_morph_rejected", blocks=len(blocks))
            return None
        log.info("edit_applied", by="morph", blocks=len(blocks))
        return merged.code

    async def aclose(self) -> None:
        await self.inner.aclose()
