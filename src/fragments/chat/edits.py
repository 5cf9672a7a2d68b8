"""Edits as patches: when a fragment exists, the model writes only what changes.

The answer keeps the fragment's JSON shape (same tool schema, same UI); in an edit, its `code`
holds search/replace blocks (see `search_replace.py`) instead of the whole program (for a
multi-file fragment, each block after the path of its file). Once the
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
from fragments.schemas import FileEntry, Fragment

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

# Added for a fragment of several files (`files`).
MULTI_FILE_RULE = """
- Put the file's path alone on the line before each block; for a new file, an empty SEARCH
and its whole content as REPLACE. Leave files empty."""

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
    (a new app, rewrite mode, or short code in auto mode)."""
    mode = settings.edit_mode
    if latest is None or mode == "rewrite":
        return None
    size = sum(len(f.file_content) for f in latest.files) if latest.files else len(latest.code)
    if size == 0 or (mode == "auto" and size < AUTO_MIN_CHARS):
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


def edit_call(call: ModelCall, plan: EditPlan) -> ModelCall:
    """`call` asking for search/replace blocks."""
    rules = EDIT_RULES + (MULTI_FILE_RULE if plan.base.files else "")
    return dataclasses.replace(call, system=call.system + rules)


def lazy_snippet(blocks: list[Block], file_path: str) -> str:
    """Morph's update snippet: each replacement between "... existing code ..." markers, in the
    comment syntax of the file's language."""
    marker = _MARKERS.get(PurePosixPath(file_path).suffix.lower(), "// ... existing code ...")
    parts = [marker]
    for block in blocks:
        parts += [block.replace.strip("\n"), marker]
    return "\n".join(parts)


def merged_fragment(
    base: Fragment, edited: Fragment, code: str, files: list[FileEntry] | None = None
) -> Fragment:
    """The edit's fields with the merged code (or files); what an edit left empty keeps the
    base's."""
    fragment = edited.model_copy(update={"code": code, "files": files or []})
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
        if not fragment.files:
            fragment.files = base.files


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
        merged = await self._merge(edited, sink, morph=True)
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
            merged = await self._merge(written, sink, morph=False)
            if merged is None:
                raise LLMError(
                    "invalid_output",
                    "The model's edit could not be applied to the current code; try rephrasing "
                    "the request.",
                )
            fragment = merged[0]
            return dataclasses.replace(result, text=fragment.model_dump_json(), edit="rewrite")
        return dataclasses.replace(result, edit="rewrite")

    async def _merge(
        self, edited: Fragment, sink: AnswerSink, *, morph: bool
    ) -> tuple[Fragment, EditOutcome] | None:
        """The edited fragment with every block merged, and by whom; None when they do not
        apply."""
        base = self.plan.base
        try:
            blocks = parse_blocks(edited.code)
            targets = _targets(base, blocks)
        except PatchError as exc:
            log.info("edit_not_applied", reason=exc.reason, block=exc.block)
            return None
        merged: dict[str, str] = {}
        by_morph = existing = 0
        for path, (current, wanted) in targets.items():
            if current is None:
                merged[path] = _new_file(wanted)
                continue
            existing += 1
            text = await self._morph(edited, path, current, wanted, sink) if morph else None
            if text is not None:
                by_morph += 1
            else:
                try:
                    text = apply_blocks(current, wanted).code
                except PatchError as exc:
                    log.info(
                        "edit_not_applied", reason=exc.reason, block=exc.block, blocks=len(blocks)
                    )
                    return None
            merged[path] = text
        outcome: EditOutcome = "morph" if by_morph and by_morph == existing else "search_replace"
        log.info("edit_applied", by=outcome, blocks=len(blocks), files=len(merged))
        if not base.files:
            return merged_fragment(base, edited, next(iter(merged.values()))), outcome
        files = [
            FileEntry(file_path=f.file_path, file_content=merged.pop(f.file_path, f.file_content))
            for f in base.files
        ]
        files += [FileEntry(file_path=p, file_content=c) for p, c in merged.items()]
        return merged_fragment(base, edited, "", files), outcome

    async def _morph(
        self, edited: Fragment, path: str, code: str, blocks: list[Block], sink: AnswerSink
    ) -> str | None:
        """Morph's merge of one file, or None (not configured, breaker open, failed, or
        untrustworthy)."""
        plan = self.plan
        if plan.morph is None or plan.breaker is None:
            return None
        instruction = (edited.commentary or plan.request).strip()[:1000]
        began = time.monotonic()
        try:
            async with plan.breaker.guard():
                merged = await plan.morph.merge(
                    instruction=instruction, code=code, update=lazy_snippet(blocks, path)
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
        return merged.code

    async def aclose(self) -> None:
        await self.inner.aclose()


def _targets(base: Fragment, blocks: list[Block]) -> dict[str, tuple[str | None, list[Block]]]:
    """The blocks by the file they edit, with its current content (None: a new file). A
    single-file fragment takes every block; in a multi-file one a block names its file (or
    the only one), and a file that does not exist yet is written by empty SEARCHes only."""
    if not base.files:
        return {base.file_path or "main": (base.code, blocks)}
    contents = {f.file_path: f.file_content for f in base.files}
    only = base.files[0].file_path if len(base.files) == 1 else None
    targets: dict[str, tuple[str | None, list[Block]]] = {}
    for number, block in enumerate(blocks, start=1):
        path = block.path or only
        if path is None:
            raise PatchError("format", number, f"Block {number} does not name its file.")
        if path not in contents and block.search.strip():
            raise PatchError("no_match", number, f"Block {number} edits a file that is not there.")
        targets.setdefault(path, (contents.get(path), []))[1].append(block)
    return targets


def _new_file(blocks: list[Block]) -> str:
    """A new file's content: its blocks' replacements, in order."""
    return "\n".join(block.replace for block in blocks).strip("\n") + "\n"
