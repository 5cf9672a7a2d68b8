"""The local search/replace applier: exact, whitespace-tolerant, and every way an edit fails."""

from __future__ import annotations

import pytest

from fragments.chat.search_replace import (
    MAX_BLOCKS,
    MAX_CODE_CHARS,
    MAX_EDIT_CHARS,
    Block,
    PatchError,
    apply_blocks,
    apply_edit,
    contains_replacements,
    looks_like_edit,
    parse_blocks,
)

CODE = """import streamlit as st

st.title("Loan calculator")
amount = st.number_input("Amount", value=1000)
rate = st.slider("Rate", 0.0, 10.0, 5.0)


def monthly(amount, rate, years):
    r = rate / 1200
    n = years * 12
    return amount * r / (1 - (1 + r) ** -n)


st.write(monthly(amount, rate, 10))
"""


def block(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


def test_exact_block_replaces_its_text_once() -> None:
    edit = block('st.title("Loan calculator")', 'st.title("Mortgage calculator")')
    applied = apply_edit(CODE, edit)
    assert 'st.title("Mortgage calculator")' in applied.code
    assert "Loan calculator" not in applied.code
    assert applied.code == CODE.replace("Loan calculator", "Mortgage calculator")
    assert applied.tolerant == 0


def test_whitespace_tolerant_match_reindents_the_replacement() -> None:
    # The model dropped the function body's indentation and added trailing spaces.
    edit = block(
        "r = rate / 1200   \nn = years * 12",
        "r = rate / 1200\nn = years * 12\nif r == 0:\n    return amount / n",
    )
    applied = apply_edit(CODE, edit)
    assert applied.tolerant == 1
    assert (
        "    r = rate / 1200\n    n = years * 12\n    if r == 0:\n        return amount / n\n"
        in (applied.code)
    )
    # Everything else is untouched.
    assert applied.code.startswith(CODE.split("def monthly")[0])
    assert applied.code.endswith("st.write(monthly(amount, rate, 10))\n")


def test_whitespace_tolerant_match_removes_extra_indentation() -> None:
    code = "def f():\n    return 1\n"
    edit = block("        return 1", "        x = 2\n        return x")
    assert apply_edit(code, edit).code == "def f():\n    x = 2\n    return x\n"


def test_several_blocks_apply_in_order_each_on_the_last_result() -> None:
    edit = (
        block(
            'amount = st.number_input("Amount", value=1000)',
            'amount = st.number_input("A", value=5)',
        )
        + "some prose between blocks is ignored\n"
        + block('amount = st.number_input("A", value=5)', 'amount = st.number_input("B", value=7)')
        + block(
            "st.write(monthly(amount, rate, 10))", "st.metric('Monthly', monthly(amount, rate, 10))"
        )
    )
    assert len(parse_blocks(edit)) == 3
    code = apply_edit(CODE, edit).code
    assert 'st.number_input("B", value=7)' in code
    assert "st.metric('Monthly'" in code
    assert "st.write(" not in code


def test_a_block_can_delete_lines() -> None:
    edit = block('rate = st.slider("Rate", 0.0, 10.0, 5.0)\n', "")
    assert "st.slider" not in apply_edit(CODE, edit).code


def test_no_match_names_the_block() -> None:
    edit = block("st.title('x')", "st.title('y')") + block("does not exist", "z")
    with pytest.raises(PatchError) as caught:
        apply_edit(CODE, block('st.title("Loan calculator")', "st.title('x')") + edit)
    assert caught.value.reason == "no_match"
    assert caught.value.block == 3


def test_ambiguous_exact_match_is_refused() -> None:
    with pytest.raises(PatchError) as caught:
        apply_edit(CODE, block("amount", "total"))
    assert caught.value.reason == "ambiguous"
    assert caught.value.block == 1


def test_ambiguous_tolerant_match_is_refused() -> None:
    code = "if a:\n    x = 1\nif b:\n  x = 1\n"
    with pytest.raises(PatchError) as caught:
        apply_edit(code, block("x  =  1", "x = 2"))
    assert caught.value.reason == "ambiguous"


def test_empty_search_is_refused() -> None:
    with pytest.raises(PatchError) as caught:
        apply_edit(CODE, block("   ", "print('hi')"))
    assert caught.value.reason == "empty_search"


@pytest.mark.parametrize(
    "text",
    [
        "no blocks at all, just a program",
        "<<<<<<< SEARCH\nx\n=======\ny\n",  # never closed
        "<<<<<<< SEARCH\nx\n>>>>>>> REPLACE\n",  # no divider
        "",
    ],
)
def test_malformed_edits_are_format_errors(text: str) -> None:
    with pytest.raises(PatchError) as caught:
        apply_edit(CODE, text)
    assert caught.value.reason == "format"


def test_marker_variants_and_crlf_parse() -> None:
    edit = "<<<<<<<SEARCH\r\nst.title\r\n=========\r\nst.header\r\n>>>>>>>REPLACE\r\n"
    assert parse_blocks(edit) == [Block("st.title", "st.header")]


def test_looks_like_edit_while_streaming_and_when_complete() -> None:
    assert looks_like_edit("<<<")
    assert looks_like_edit("\n  <<<<<<< SEA")
    assert looks_like_edit(block("a", "b"))
    assert not looks_like_edit("")
    assert not looks_like_edit("import streamlit as st")
    assert not looks_like_edit("<!DOCTYPE html>\n<html>")


def test_contains_replacements_checks_every_block() -> None:
    blocks = [Block("x = 1", "x = 2"), Block("y = 1", "  y  =  3")]
    assert contains_replacements("x = 2\ny = 3\n", blocks)
    assert not contains_replacements("x = 2\ny = 1\n", blocks)


def test_hostile_sizes_are_refused_before_any_work() -> None:
    with pytest.raises(PatchError) as caught:
        parse_blocks("x" * (MAX_EDIT_CHARS + 1))
    assert caught.value.reason == "too_large"
    with pytest.raises(PatchError) as caught:
        parse_blocks(block("a", "b") * (MAX_BLOCKS + 1))
    assert caught.value.reason == "too_large"
    with pytest.raises(PatchError) as caught:
        apply_blocks("x" * (MAX_CODE_CHARS + 1), [Block("x", "y")])
    assert caught.value.reason == "too_large"


def test_pathological_repetition_stays_linear() -> None:
    """Thousands of identical lines, and a SEARCH of nearly all of them plus one line that is
    missing: a quadratic scan would take minutes (the suite's timeout fails it), the substring
    search does not."""
    code = "a = 1\n" * 100_000
    search = "a  =  1\n" * 20_000 + "b = 2"
    with pytest.raises(PatchError) as caught:
        apply_blocks(code, [Block(search, "c = 3")])
    assert caught.value.reason == "no_match"


def test_a_path_alone_on_the_line_before_a_block_names_its_file() -> None:
    edit = (
        "**pages/index.tsx**\n"
        + block("a", "b")
        + "Then the new component:\n"
        + block("", "export const X = 1")
        + "components/Button.tsx\n\n"
        + block("", "export const B = 2")
        + block("c", "d")
    )
    assert [b.path for b in parse_blocks(edit)] == [
        "pages/index.tsx",
        None,
        "components/Button.tsx",
        None,
    ]


def test_an_edit_may_open_with_the_path_of_its_file() -> None:
    assert looks_like_edit("pages/index.tsx\n<<<<<<< SEARCH\na")
    assert looks_like_edit("pages/index.tsx")  # still streaming
    assert looks_like_edit("pages/index.tsx\n<<<")
    assert not looks_like_edit("pages/index.tsx\nimport React from 'react'")
    assert not looks_like_edit("import os\n<<<<<<< SEARCH")
