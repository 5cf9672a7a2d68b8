"""Edits as patches through the real `/api/chat`: the model (a fake at the wire) writes
search/replace blocks; a fake Morph on 127.0.0.1 merges them, else they apply locally, else one
full rewrite. Both auth modes (guests, production)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from fragments.chat.edits import EDIT_RULES, REWRITE_NOTE
from fragments.config import Settings
from fragments.llm.pricing import cost_usd
from fragments.llm.types import Usage
from tests.chat.conftest import Event, app_client, chat_body, names, post_chat
from tests.chat.test_rate_limits import _wait_redis, private_redis
from tests.conftest import Backend, database_settings
from tests.databases import PgDatabase
from tests.fakes import SAMPLE_FRAGMENT, FakeOpenAI, FragmentReply
from tests.fakes.morph import FakeMorph, MorphReply
from tests.modes import AuthMode

pytestmark = pytest.mark.anyio

MORPH_KEY = "platform-morph-key-123"
BASE_CODE: str = SAMPLE_FRAGMENT["code"]
# The block repeats an unchanged line on each side of the change, as the prompt asks.
LINES = BASE_CODE.split("\n")
CAPTION = next(line for line in LINES if line.startswith("st.caption("))
CONFIG = next(line for line in LINES if line.startswith("st.set_page_config("))
OLD_TITLE = f'{CONFIG}\nst.title("Loan calculator")\n{CAPTION}'
NEW_TITLE = f'{CONFIG}\nst.title("Mortgage calculator")\n{CAPTION}'
EXPECTED = BASE_CODE.replace('st.title("Loan calculator")', 'st.title("Mortgage calculator")')


def blocks(search: str, replace: str) -> str:
    return f"<<<<<<< SEARCH\n{search}\n=======\n{replace}\n>>>>>>> REPLACE\n"


def edit_answer(code: str, **fields: Any) -> dict[str, Any]:
    """The model's answer to an edit: the fragment's fields, `code` holding the blocks."""
    answer = {k: v for k, v in SAMPLE_FRAGMENT.items() if k != "code"}
    answer["commentary"] = "I rename the app to Mortgage calculator."
    return {**answer, **fields, "code": code}


TITLE_EDIT = edit_answer(blocks(OLD_TITLE, NEW_TITLE))


def edit_body(**extra: Any) -> dict[str, Any]:
    """A second turn whose history holds the first answer's fragment."""
    body = chat_body("Call it Mortgage calculator", **extra)
    body["messages"] = [
        {"role": "user", "content": [{"type": "text", "text": "Make a loan calculator"}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Here."}],
            "object": SAMPLE_FRAGMENT,
        },
        *body["messages"],
    ]
    return body


@pytest.fixture(scope="session")
def _morph_server() -> Iterator[FakeMorph]:
    with FakeMorph() as fake:
        yield fake


@pytest.fixture
def fake_morph(_morph_server: FakeMorph) -> Iterator[FakeMorph]:
    _morph_server.reset()
    yield _morph_server
    _morph_server.reset()


@pytest.fixture
def edit_settings(chat_settings: Settings, fake_morph: FakeMorph) -> Settings:
    return chat_settings.model_copy(
        update={
            "morph_api_key": SecretStr(MORPH_KEY),
            "morph_base_url": fake_morph.base_url,
            "edit_mode": "patch",
            "breaker_failures": 2,
            # The same edit asked twice must reach the model twice.
            "response_cache": False,
        }
    )


@pytest.fixture
async def client(edit_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(edit_settings) as c:
        yield c


def partial_codes(events: list[Event]) -> list[str]:
    return [e.data["code"] for e in events if e.name == "partial"]


def final(events: list[Event]) -> dict[str, Any]:
    assert names(events)[-3:] == ["fragment", "usage", "done"], names(events)
    fragment: dict[str, Any] = events[-3].data
    return fragment


def usage_of(events: list[Event]) -> dict[str, Any]:
    data: dict[str, Any] = events[-2].data
    return data


def system_of(fake: FakeOpenAI, index: int = -1) -> str:
    messages = fake.requests[index].json["messages"]
    return str(messages[0]["content"])


async def test_morph_merges_the_edit(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, fake_morph: FakeMorph, auth_mode: AuthMode
) -> None:
    fake_openai.script(FragmentReply(TITLE_EDIT, chunk_size=16))
    response, events = await post_chat(client, edit_body())
    assert response.status_code == 200

    # The model was asked for blocks, and Morph got the current code and a lazy snippet.
    assert EDIT_RULES.strip() in system_of(fake_openai)
    assert len(fake_morph.requests) == 1
    request = fake_morph.requests[0]
    assert request.authorization == f"Bearer {MORPH_KEY}"
    assert request.json["model"] == "morph-v3-large"
    parts = fake_morph.parts()
    assert parts["code"] == BASE_CODE
    assert parts["update"].startswith("# ... existing code ...\n")
    assert NEW_TITLE in parts["update"]
    assert parts["instruction"] == "I rename the app to Mortgage calculator."

    fragment = final(events)
    assert fragment["code"] == EXPECTED
    assert fragment["title"] == "Loan calculator"
    assert fragment["file_path"] == "app.py"
    # While the edit streamed, partials showed the current code, never the blocks; the last
    # partial is the merged program.
    codes = partial_codes(events)
    assert len(codes) >= 2
    assert all("<<<<<<<" not in code and ">>>>>>>" not in code for code in codes)
    assert codes[-1] == EXPECTED
    assert all(code in (BASE_CODE, EXPECTED) or not code for code in codes)
    assert usage_of(events)["edit"] == "morph"

    if auth_mode == "production":
        # Morph's call is recorded beside the model's answer, at Morph's price.
        report = (await client.get("/api/usage?days=1")).json()
        models = {item["model"]: item for item in report["items"]}
        assert "openai/gpt-4.1" in models
        morph = models["morph/morph-v3-large"]
        assert morph["output_tokens"] == len(EXPECTED) // 4
        spent = Usage(input_tokens=morph["input_tokens"], output_tokens=morph["output_tokens"])
        assert morph["cost_usd"] == pytest.approx(cost_usd("morph-v3-large", spent))


async def test_morph_failure_falls_back_to_local_blocks(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, fake_morph: FakeMorph
) -> None:
    fake_morph.script(MorphReply(status=500))
    fake_openai.script(FragmentReply(TITLE_EDIT))
    _, events = await post_chat(client, edit_body())

    assert len(fake_morph.requests) == 1
    assert final(events)["code"] == EXPECTED
    assert usage_of(events)["edit"] == "search_replace"
    # No second model call.
    assert len(fake_openai.requests) == 1


@pytest.mark.auth_modes("guests")
async def test_a_slow_morph_times_out_into_the_local_apply(
    edit_settings: Settings, fake_openai: FakeOpenAI, fake_morph: FakeMorph
) -> None:
    settings = edit_settings.model_copy(update={"morph_timeout_seconds": 0.3})
    async with app_client(settings) as c:
        fake_morph.script(MorphReply(delay=2.0))
        fake_openai.script(FragmentReply(TITLE_EDIT))
        _, events = await post_chat(c, edit_body())
    assert len(fake_morph.requests) == 1
    assert final(events)["code"] == EXPECTED
    assert usage_of(events)["edit"] == "search_replace"


async def test_a_merge_that_lost_the_edit_is_not_trusted(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, fake_morph: FakeMorph
) -> None:
    fake_morph.script(MorphReply(content=BASE_CODE))  # Morph "merged" nothing
    fake_openai.script(FragmentReply(TITLE_EDIT))
    _, events = await post_chat(client, edit_body())
    assert final(events)["code"] == EXPECTED
    assert usage_of(events)["edit"] == "search_replace"


async def test_whitespace_tolerant_blocks_apply(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, fake_morph: FakeMorph
) -> None:
    fake_morph.script(MorphReply(status=503))
    # The model lost the sidebar's indentation.
    amount = 'principal = st.number_input("Amount", min_value=1000.0, value={}, step=1000.0)'
    search = f'st.header("Loan")\n{amount.format("250000.0")}'
    replace = f'st.header("Mortgage")\n{amount.format("300000.0")}'
    fake_openai.script(FragmentReply(edit_answer(blocks(search, replace))))
    _, events = await post_chat(client, edit_body())
    code = final(events)["code"]
    assert f'    st.header("Mortgage")\n    {amount.format("300000.0")}\n' in code
    assert usage_of(events)["edit"] == "search_replace"


async def test_a_patch_that_does_not_apply_gets_one_full_rewrite(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, fake_morph: FakeMorph
) -> None:
    fake_morph.script(MorphReply(status=500))
    rewritten = {**SAMPLE_FRAGMENT, "code": EXPECTED, "title": "Mortgage calculator"}
    fake_openai.script(
        FragmentReply(edit_answer(blocks("st.title('Not in the code')", "st.title('x')"))),
        FragmentReply(rewritten),
    )
    _, events = await post_chat(client, edit_body())

    sequence = names(events)
    assert "reset" in sequence
    reset = events[sequence.index("reset")]
    assert reset.data == {"reason": "edit_not_applied"}
    # The rewrite announces its model again and streams like any answer.
    after = sequence[sequence.index("reset") + 1 :]
    assert after[0] == "provider"
    assert final(events) == {**rewritten, "files": []}
    assert usage_of(events)["edit"] == "rewrite"
    assert len(fake_openai.requests) == 2
    assert REWRITE_NOTE.strip() in system_of(fake_openai, 1)
    assert EDIT_RULES.strip() not in system_of(fake_openai, 1)


async def test_a_rewrite_that_sends_blocks_again_is_a_clear_error(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, fake_morph: FakeMorph
) -> None:
    fake_morph.script(MorphReply(status=500))
    wrong = FragmentReply(edit_answer(blocks("nowhere in the code", "x")))
    fake_openai.script(wrong, wrong)
    _, events = await post_chat(client, edit_body())
    assert events[-1].name == "error"
    assert events[-1].data["error"] == "invalid_output"
    assert len(fake_openai.requests) == 2


async def test_morph_breaker_opens_after_repeated_failures(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, fake_morph: FakeMorph, auth_mode: AuthMode
) -> None:
    status = (await client.get("/api/status")).json()
    assert {"name": "edit:morph", "state": "closed"} in status["breakers"]

    fake_morph.script(MorphReply(status=500), MorphReply(status=502))
    for _ in range(3):
        fake_openai.script(FragmentReply(TITLE_EDIT))
        _, events = await post_chat(client, edit_body())
        assert final(events)["code"] == EXPECTED
        assert usage_of(events)["edit"] == "search_replace"
    # Two failures (the setting) opened it: the third edit did not call Morph.
    assert len(fake_morph.requests) == 2
    status = (await client.get("/api/status")).json()
    assert {"name": "edit:morph", "state": "open"} in status["breakers"]
    if auth_mode == "guests":  # /metrics is open in development, token-only in production
        scrape = (await client.get("/metrics")).text
        assert 'fragments_breaker_state{name="edit:morph"} 2.0' in scrape


async def test_a_callers_own_key_never_reaches_morph(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, fake_morph: FakeMorph
) -> None:
    fake_openai.script(FragmentReply(TITLE_EDIT))
    _, events = await post_chat(client, edit_body(config={"api_key": "sk-callers-own-key"}))
    assert final(events)["code"] == EXPECTED
    assert usage_of(events)["edit"] == "search_replace"
    assert fake_morph.requests == []
    # Still asked as a patch.
    assert EDIT_RULES.strip() in system_of(fake_openai)


async def test_a_model_that_rewrites_anyway_is_streamed_as_is(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, fake_morph: FakeMorph
) -> None:
    rewritten = {**SAMPLE_FRAGMENT, "code": EXPECTED}
    fake_openai.script(FragmentReply(rewritten, chunk_size=16))
    _, events = await post_chat(client, edit_body())
    assert final(events)["code"] == EXPECTED
    assert usage_of(events)["edit"] == "model_rewrite"
    assert fake_morph.requests == []
    assert partial_codes(events)[-1] == EXPECTED


async def test_a_new_app_is_not_an_edit(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, fake_morph: FakeMorph
) -> None:
    fake_openai.script(FragmentReply())
    _, events = await post_chat(client, chat_body())
    assert final(events)["code"] == BASE_CODE
    assert "edit" not in usage_of(events)
    assert EDIT_RULES.strip() not in system_of(fake_openai)


@pytest.mark.auth_modes("guests")
@pytest.mark.parametrize("mode", ["rewrite", "auto"])
async def test_rewrite_mode_and_short_code_ask_for_the_whole_program(
    edit_settings: Settings, fake_openai: FakeOpenAI, fake_morph: FakeMorph, mode: str
) -> None:
    body = edit_body()
    if mode == "auto":
        short = {**SAMPLE_FRAGMENT, "code": "import streamlit as st\nst.title('Hi')\n"}
        body["messages"][1]["object"] = short
    async with app_client(edit_settings.model_copy(update={"edit_mode": mode})) as c:
        fake_openai.script(FragmentReply())
        _, events = await post_chat(c, body)
    assert final(events)["code"] == BASE_CODE
    assert EDIT_RULES.strip() not in system_of(fake_openai)
    assert "edit" not in usage_of(events)


@pytest.mark.auth_modes("guests")
async def test_without_morph_the_breaker_is_not_listed(
    chat_settings: Settings, fake_openai: FakeOpenAI
) -> None:
    async with app_client(chat_settings.model_copy(update={"edit_mode": "patch"})) as c:
        status = (await c.get("/api/status")).json()
        assert all(b["name"] != "edit:morph" for b in status["breakers"])
        fake_openai.script(FragmentReply(TITLE_EDIT))
        _, events = await post_chat(c, edit_body())
    assert final(events)["code"] == EXPECTED
    assert usage_of(events)["edit"] == "search_replace"
    # The prompt the model saw is the stored JSON of an edit answer.
    assert json.loads(fake_openai.last_request.raw)["model"] == "gpt-4.1"


@pytest.mark.auth_modes("guests")
async def test_the_morph_breaker_is_shared_through_redis(
    edit_settings: Settings, fake_openai: FakeOpenAI, fake_morph: FakeMorph
) -> None:
    """Two app instances on one (private) Redis: Morph failing for one opens the breaker for
    both, so the other applies its edits locally without calling Morph."""
    with private_redis() as (port, _proc):
        await _wait_redis(port)
        settings = edit_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{port}/0"})
        async with app_client(settings) as first, app_client(settings) as second:
            fake_morph.script(MorphReply(status=500), MorphReply(status=500))
            for _ in range(2):
                fake_openai.script(FragmentReply(TITLE_EDIT))
                _, events = await post_chat(first, edit_body())
                assert usage_of(events)["edit"] == "search_replace"
            assert len(fake_morph.requests) == 2

            fake_openai.script(FragmentReply(TITLE_EDIT))
            _, events = await post_chat(second, edit_body())
            assert final(events)["code"] == EXPECTED
            assert usage_of(events)["edit"] == "search_replace"
            assert len(fake_morph.requests) == 2
            status = (await second.get("/api/status")).json()
            assert {"name": "edit:morph", "state": "open"} in status["breakers"]


@pytest.mark.auth_modes("production")
async def test_an_edit_of_the_stored_conversation_is_stored_merged(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, fake_morph: FakeMorph
) -> None:
    """The client sends only the new message and the conversation id: the edit applies to
    the stored fragment, and the stored new version is the merged program, not the blocks."""
    fake_openai.script(FragmentReply())
    _, events = await post_chat(client, chat_body())
    conversation_id = events[-1].data["conversation_id"]

    fake_openai.script(FragmentReply(TITLE_EDIT))
    _, events = await post_chat(
        client, chat_body("Call it Mortgage calculator", conversation_id=conversation_id)
    )
    assert final(events)["code"] == EXPECTED
    assert usage_of(events)["edit"] == "morph"
    assert fake_morph.parts()["code"] == BASE_CODE

    stored = (await client.get(f"/api/conversations/{conversation_id}")).json()
    fragments = [m["object"] for m in stored["messages"] if m.get("object")]
    assert fragments[-1]["code"] == EXPECTED
    assert all("<<<<<<<" not in f["code"] for f in fragments)


@pytest.mark.auth_modes("production")
async def test_morph_usage_is_recorded_on_each_database(
    edit_settings: Settings,
    fake_openai: FakeOpenAI,
    fake_morph: FakeMorph,
    backend: Backend,
    pg_database: PgDatabase | None,
) -> None:
    settings = edit_settings.model_copy(update=database_settings(backend, pg_database))
    async with app_client(settings) as c:
        fake_openai.script(FragmentReply(TITLE_EDIT))
        _, events = await post_chat(c, edit_body())
        assert usage_of(events)["edit"] == "morph"
        report = (await c.get("/api/usage?days=1")).json()
    models = {item["model"]: item for item in report["items"]}
    assert set(models) == {"openai/gpt-4.1", "morph/morph-v3-large"}
    assert models["morph/morph-v3-large"]["cost_usd"] > 0
    assert report["total"]["cost_usd"] == pytest.approx(
        models["openai/gpt-4.1"]["cost_usd"] + models["morph/morph-v3-large"]["cost_usd"]
    )


PAGE = "\n".join(
    [
        'import { Button } from "../components/Button";',
        "",
        "export default function Home() {",
        "  return (",
        '    <main className="p-8">',
        '      <h1 className="text-2xl">Todo list</h1>',
        "      <Button />",
        "    </main>",
        "  );",
        "}",
        "",
    ]
    + [f"// padding line {i} so the app is long enough to patch" for i in range(30)]
)
BUTTON = 'export function Button() {\n  return <button className="btn">Add</button>;\n}\n'
MULTI = {
    "commentary": "A todo list.",
    "template": "nextjs-developer",
    "title": "Todo list",
    "description": "A todo list.",
    "additional_dependencies": [],
    "has_additional_dependencies": False,
    "install_dependencies_command": "",
    "port": 3000,
    "file_path": "",
    "files": [
        {"file_path": "pages/index.tsx", "file_content": PAGE},
        {"file_path": "components/Button.tsx", "file_content": BUTTON},
    ],
    "code": "",
}


@pytest.mark.auth_modes("guests")
async def test_a_multi_file_fragment_is_patched_file_by_file(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, fake_morph: FakeMorph
) -> None:
    body = edit_body()
    body["messages"][1]["object"] = MULTI
    heading = '    <main className="p-8">\n      <h1 className="text-2xl">{}</h1>\n      <Button />'
    edit = (
        "pages/index.tsx\n"
        + blocks(heading.format("Todo list"), heading.format("Shopping list"))
        + "components/Button.tsx\n"
        + blocks(
            BUTTON.strip(),
            BUTTON.strip().replace('<button className="btn">Add</button>', "<Add />"),
        )
        + "components/Add.tsx\n"
        + blocks("", "export const Add = () => <button>Add item</button>;")
    )
    answer = {**MULTI, "commentary": "Shopping list.", "files": [], "code": edit}
    fake_openai.script(FragmentReply(answer, chunk_size=16))
    _, events = await post_chat(client, body)

    fragment = final(events)
    files = {f["file_path"]: f["file_content"] for f in fragment["files"]}
    assert list(files) == ["pages/index.tsx", "components/Button.tsx", "components/Add.tsx"]
    assert files["pages/index.tsx"] == PAGE.replace("Todo list", "Shopping list")
    assert files["components/Button.tsx"] == BUTTON.replace(
        '<button className="btn">Add</button>', "<Add />"
    )
    assert files["components/Add.tsx"] == "export const Add = () => <button>Add item</button>;\n"
    assert fragment["code"] == ""
    # Morph merged each existing file (one call each); the new file needed no merge.
    assert [fake_morph.parts(i)["code"] for i in range(len(fake_morph.requests))] == [PAGE, BUTTON]
    assert fake_morph.parts(0)["update"].startswith("// ... existing code ...\n")
    assert usage_of(events)["edit"] == "morph"
    # Partials kept showing the current files while the blocks streamed.
    for partial in (e.data for e in events if e.name == "partial"):
        assert all("<<<<<<<" not in f["file_content"] for f in partial["files"])
    assert "path alone on the line before each block" in system_of(fake_openai)


@pytest.mark.auth_modes("guests")
async def test_a_block_for_a_missing_file_gets_a_rewrite(
    client: httpx.AsyncClient, fake_openai: FakeOpenAI, fake_morph: FakeMorph
) -> None:
    body = edit_body()
    body["messages"][1]["object"] = MULTI
    edit = "pages/other.tsx\n" + blocks("something", "else")
    fake_openai.script(FragmentReply({**MULTI, "files": [], "code": edit}), FragmentReply(MULTI))
    _, events = await post_chat(client, body)
    assert "reset" in names(events)
    assert usage_of(events)["edit"] == "rewrite"
    assert fake_morph.requests == []
