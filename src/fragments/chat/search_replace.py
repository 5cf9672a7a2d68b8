"""Search/replace edit blocks: parsed from a model's answer and applied to code, locally.

A block names text of the current code and what replaces it::

    <<<<<<< SEARCH
    lines copied from the current code
    =======
    the lines that take their place
    >>>>>>> REPLACE

Blocks apply in order, each to the result of the ones before. A block's SEARCH must occur
exactly once: first as written (exact), then comparing lines with their whitespace collapsed
(whitespace-tolerant: a model that re-indents or drops trailing spaces still lands), in which
case the replacement is re-indented by the indentation difference of the first line. Anything
else (no block, no match, two matches, an empty SEARCH) is a `PatchError` naming the block,
never a guess: the caller falls back to a full rewrite.

Pure functions, no I/O. Every search is `str.find`/`str.count` over the whole text (linear in C)
rather than a Python loop over candidate positions, so hostile inputs (huge code, thousands of
identical lines) stay cheap; sizes are capped before any work.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

# Caps on what a model's edit may ask for: far above any real fragment edit, low enough that
# applying one is a few milliseconds whatever the input.
MAX_BLOCKS = 100
MAX_EDIT_CHARS = 400_000
MAX_CODE_CHARS = 2_000_000

_SEARCH = re.compile(r"^<{5,9} ?SEARCH[ \t]*$")
_DIVIDER = re.compile(r"^={5,9}[ \t]*$")
_REPLACE = re.compile(r"^>{5,9} ?REPLACE[ \t]*$")
# A file path alone on the line before a block, as models write it: `app/page.tsx`,
# **app/page.tsx**, FILE: app/page.tsx, --- app/page.tsx.
_PATH = re.compile(
    r"^(?:FILE:|File:|---)?\s*[`*]*(?P<path>[\w.@()\[\]-]+(?:/[\w.@()\[\]-]+)*)[`*:]*$"
)
# What an answer that is an edit starts with (also while it is still streaming).
EDIT_OPENING = "<<<<<<< SEARCH"

PatchFailure = Literal["format", "too_large", "empty_search", "no_match", "ambiguous"]


class PatchError(ValueError):
    """The edit cannot be applied; `block` is its 1-based number (0: the edit as a whole)."""

    def __init__(self, reason: PatchFailure, block: int, detail: str) -> None:
        super().__init__(detail)
        self.reason: PatchFailure = reason
        self.block = block
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Block:
    search: str
    replace: str
    # The file it edits, when the line before its SEARCH named one (multi-file fragments).
    path: str | None = None


@dataclass(frozen=True, slots=True)
class Applied:
    """The new code, and how many blocks needed the whitespace-tolerant match."""

    code: str
    tolerant: int


def looks_like_edit(code: str) -> bool:
    """The `code` field holds search/replace blocks (or the start of one, while streaming)
    rather than a program: it opens with a SEARCH marker, or with a file path and then one."""
    head = code[:400].lstrip()
    if not head:
        return False
    lines = head.split("\n", 2)
    first = lines[0].rstrip()
    if EDIT_OPENING.startswith(first) or _SEARCH.match(first) is not None:
        return True
    if path_named(first) is None:
        return False
    if len(lines) == 1:
        return True  # a path still streaming: what follows tells
    second = lines[1].strip()
    return EDIT_OPENING.startswith(second) or _SEARCH.match(second) is not None


def parse_blocks(text: str) -> list[Block]:
    """Every block of `text`, in order; text outside blocks is ignored. `PatchError("format")`
    when there is none or one is left open."""
    if len(text) > MAX_EDIT_CHARS:
        raise PatchError("too_large", 0, f"The edit is longer than {MAX_EDIT_CHARS} characters.")
    blocks: list[Block] = []
    search: list[str] | None = None
    replace: list[str] | None = None
    path: str | None = None
    before = ""
    for line in text.replace("\r\n", "\n").split("\n"):
        if search is None:
            if _SEARCH.match(line):
                search = []
                path = path_named(before)
            elif line.strip():
                before = line
            continue
        if replace is None:
            if _DIVIDER.match(line):
                replace = []
            elif _SEARCH.match(line) or _REPLACE.match(line):
                raise PatchError("format", len(blocks) + 1, "A block has no ======= divider.")
            else:
                search.append(line)
            continue
        if _REPLACE.match(line):
            blocks.append(Block("\n".join(search), "\n".join(replace), path))
            before = ""
            if len(blocks) > MAX_BLOCKS:
                raise PatchError("too_large", 0, f"The edit has more than {MAX_BLOCKS} blocks.")
            search = replace = None
        else:
            replace.append(line)
    if search is not None:
        raise PatchError("format", len(blocks) + 1, "A block is not closed by >>>>>>> REPLACE.")
    if not blocks:
        raise PatchError("format", 0, "The edit has no SEARCH/REPLACE block.")
    return blocks


def path_named(line: str) -> str | None:
    """The file path a line names on its own, or None (prose, code, nothing)."""
    found = _PATH.match(line.strip()) if len(line) <= 300 else None
    if found is None or "." not in found["path"].rsplit("/", 1)[-1]:
        return None
    return found["path"]


def apply_blocks(code: str, blocks: list[Block]) -> Applied:
    """`code` with every block applied in order; `PatchError` at the first that does not."""
    if len(code) > MAX_CODE_CHARS:
        raise PatchError("too_large", 0, f"The code is longer than {MAX_CODE_CHARS} characters.")
    tolerant = 0
    for number, block in enumerate(blocks, start=1):
        code, was_tolerant = _apply_one(code, block, number)
        tolerant += was_tolerant
    return Applied(code, tolerant)


def apply_edit(code: str, edit: str) -> Applied:
    """Parse `edit` and apply its blocks to `code`."""
    return apply_blocks(code, parse_blocks(edit))


def contains_replacements(code: str, blocks: list[Block]) -> bool:
    """Every block's replacement appears in `code` (whitespace collapsed): a merge made
    elsewhere (Morph) kept what the edit wrote."""
    haystack = "\n" + "\n".join(_normal(x) for x in code.split("\n")) + "\n"
    for block in blocks:
        wanted = _trimmed(block.replace.split("\n"))
        if wanted and "\n" + "\n".join(_normal(x) for x in wanted) + "\n" not in haystack:
            return False
    return True


def _apply_one(code: str, block: Block, number: int) -> tuple[str, bool]:
    search = block.search
    if not search.strip():
        raise PatchError("empty_search", number, f"Block {number} has an empty SEARCH.")
    found = code.count(search)
    if found == 1:
        return code.replace(search, block.replace, 1), False
    if found > 1:
        raise PatchError(
            "ambiguous", number, f"Block {number}'s SEARCH occurs {found} times in the code."
        )
    return _apply_tolerant(code, block, number), True


def _normal(line: str) -> str:
    return " ".join(line.split())


def _trimmed(lines: list[str]) -> list[str]:
    """Without blank lines at either end (models add or drop them around a block)."""
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]


def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip())]


def _apply_tolerant(code: str, block: Block, number: int) -> str:
    lines = code.split("\n")
    wanted = _trimmed(block.search.split("\n"))
    # Whole lines, compared with whitespace collapsed, found by one substring search over the
    # normalised text framed by newlines (so a match starts and ends on line boundaries).
    haystack = "\n" + "\n".join(_normal(x) for x in lines) + "\n"
    needle = "\n" + "\n".join(_normal(x) for x in wanted) + "\n"
    first = haystack.find(needle)
    if first < 0:
        raise PatchError(
            "no_match", number, f"Block {number}'s SEARCH does not match the current code."
        )
    if haystack.find(needle, first + 1) >= 0:
        raise PatchError(
            "ambiguous", number, f"Block {number}'s SEARCH matches several places in the code."
        )
    # The line the match starts on: the haystack's newlines up to the match's own, less one.
    start_line = haystack.count("\n", 0, first + 1) - 1
    matched = lines[start_line : start_line + len(wanted)]
    replacement = _reindent(block.replace.split("\n"), wanted, matched)
    return "\n".join([*lines[:start_line], *replacement, *lines[start_line + len(wanted) :]])


def _reindent(replace: list[str], search: list[str], matched: list[str]) -> list[str]:
    """The replacement shifted as far as the code's indentation differs from the SEARCH's."""
    replace = _trimmed(replace)
    have = _indent(search[0]) if search else ""
    real = _indent(matched[0]) if matched else ""
    if have == real:
        return replace
    if real.startswith(have):
        extra = real[len(have) :]
        return [extra + line if line.strip() else line for line in replace]
    if have.startswith(real):
        cut = len(have) - len(real)
        return [line[cut:] if len(_indent(line)) >= cut else line.lstrip() for line in replace]
    return replace
