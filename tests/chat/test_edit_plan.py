"""Deciding how a turn edits the current fragment, and the pieces of the merge (no I/O)."""

from __future__ import annotations

from pydantic import SecretStr

from fragments.chat.edits import (
    AUTO_MIN_CHARS,
    lazy_snippet,
    merged_fragment,
    partial_code,
    plan_edit,
)
from fragments.chat.search_replace import Block
from fragments.config import Settings
from fragments.llm.morph import MORPH_BREAKER, MorphClient
from fragments.llm.types import ModelCall
from fragments.resilience import BreakerConfig, BreakerRegistry
from fragments.schemas import FileEntry, Fragment

LONG = "print('x')\n" * (AUTO_MIN_CHARS // 10)
BASE = Fragment(
    template="streamlit-developer",
    title="Loans",
    description="A loan calculator.",
    file_path="app.py",
    port=8501,
    additional_dependencies=["plotly"],
    has_additional_dependencies=True,
    install_dependencies_command="pip install plotly",
    code=LONG,
)


def settings(**extra: object) -> Settings:
    return Settings(_env_file=None, **extra)  # type: ignore[call-arg, arg-type]


def call(**extra: object) -> ModelCall:
    return ModelCall(provider_id="openai", model_id="gpt-4.1", system="rules", turns=(), **extra)  # type: ignore[arg-type]


MORPH = MorphClient(
    api_key="k", base_url="http://127.0.0.1:9/v1", model="morph-v3-large", timeout=1
)
BREAKERS = BreakerRegistry(BreakerConfig())


def test_platform_requests_use_morph_and_its_breaker() -> None:
    plan = plan_edit(
        settings(edit_mode="patch"), BASE, call(), request="r", morph=MORPH, breakers=BREAKERS
    )
    assert plan is not None
    assert plan.morph is MORPH
    assert plan.breaker is BREAKERS.breaker(MORPH_BREAKER)
    assert plan.system == "rules"


def test_own_keys_and_servers_patch_without_morph() -> None:
    for own in (call(api_key="sk-own"), call(base_url="http://127.0.0.1:1/v1")):
        plan = plan_edit(
            settings(edit_mode="patch"), BASE, own, request="r", morph=MORPH, breakers=BREAKERS
        )
        assert plan is not None
        assert plan.morph is None
        assert plan.breaker is None


def test_what_is_not_patched() -> None:
    patch = settings(edit_mode="patch")
    multi = BASE.model_copy(
        update={"code": "", "files": [FileEntry(file_path="a.py", file_content=LONG)]}
    )
    short = BASE.model_copy(update={"code": "print(1)\n"})
    assert plan_edit(patch, None, call(), request="r", morph=None, breakers=None) is None
    # A multi-file fragment is patched too, its size the sum of its files.
    assert plan_edit(patch, multi, call(), request="r", morph=None, breakers=None) is not None
    empty = multi.model_copy(update={"files": [FileEntry(file_path="a.py")]})
    assert plan_edit(patch, empty, call(), request="r", morph=None, breakers=None) is None
    assert (
        plan_edit(
            settings(edit_mode="rewrite"), BASE, call(), request="r", morph=None, breakers=None
        )
        is None
    )
    assert (
        plan_edit(settings(edit_mode="auto"), short, call(), request="r", morph=None, breakers=None)
        is None
    )
    assert plan_edit(patch, short, call(), request="r", morph=None, breakers=None) is not None
    assert (
        plan_edit(settings(edit_mode="auto"), BASE, call(), request="r", morph=None, breakers=None)
        is not None
    )


def test_an_empty_morph_key_means_no_morph() -> None:
    assert MorphClient.from_settings(settings(morph_api_key=SecretStr(""))) is None
    assert MorphClient.from_settings(settings()) is None


def test_lazy_snippet_uses_the_languages_comments() -> None:
    blocks = [Block("a", "x = 1"), Block("b", "\ny = 2\n")]
    assert lazy_snippet(blocks, "app.py") == (
        "# ... existing code ...\nx = 1\n# ... existing code ...\ny = 2\n# ... existing code ..."
    )
    assert lazy_snippet(blocks, "pages/index.tsx").startswith("// ... existing code ...\n")
    assert lazy_snippet(blocks, "index.html").startswith("<!-- ... existing code ... -->\n")


def test_merged_fragment_keeps_what_the_edit_left_empty() -> None:
    edited = Fragment(commentary="Blue button.", code="<<<<<<< SEARCH\n...")
    merged = merged_fragment(BASE, edited, "new code")
    assert merged.code == "new code"
    assert merged.commentary == "Blue button."
    assert (merged.template, merged.title, merged.file_path, merged.port) == (
        "streamlit-developer",
        "Loans",
        "app.py",
        8501,
    )
    assert merged.additional_dependencies == ["plotly"]
    assert merged.install_dependencies_command == "pip install plotly"
    renamed = merged_fragment(BASE, edited.model_copy(update={"title": "Mortgages"}), "c")
    assert renamed.title == "Mortgages"


def test_partials_show_the_current_code_while_blocks_stream() -> None:
    for streaming in ("", "  ", "<<<", "<<<<<<< SEARCH\nprint("):
        partial = Fragment(commentary="Blue", code=streaming)
        partial_code(BASE, partial)
        assert partial.code == LONG
        assert partial.file_path == "app.py"
    rewrite = Fragment(code="import streamlit")
    partial_code(BASE, rewrite)
    assert rewrite.code == "import streamlit"
