"""A team's plan is the operator's: PATCH /api/teams/{id} refuses tier and limits changes (403
`operator_only`) for owners and admins alike, and `fragments teams set-tier` changes them, seen
through GET /api/teams/{id}/budget and `fragments teams show`. On SQLite and PostgreSQL (the CLI
as the app's RLS-bound role)."""

from __future__ import annotations

import json
import uuid
from functools import partial
from typing import Any

import anyio
import httpx
import pytest
from typer.testing import CliRunner, Result

from fragments.cli import app as cli
from fragments.config import Settings
from tests.accounts import Account, sign_up

pytestmark = pytest.mark.anyio


async def new_team(api: httpx.AsyncClient, owner: Account, name: str) -> str:
    made = await api.post("/api/teams", json={"name": name}, headers=owner.headers)
    assert made.status_code == 201, made.text
    team_id: str = made.json()["id"]
    return team_id


async def budget(api: httpx.AsyncClient, who: Account, team_id: str) -> dict[str, Any]:
    seen = await api.get(f"/api/teams/{team_id}/budget", headers=who.headers)
    assert seen.status_code == 200, seen.text
    body: dict[str, Any] = seen.json()
    return body


@pytest.fixture
def fragments_cli(
    db_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> Any:  # the awaitable runner below
    """Run `fragments ...` against the test's database, in a thread (the command runs its own
    event loop) while the app keeps serving on this one."""
    monkeypatch.setenv("FRAGMENTS_DATA_DIR", str(db_settings.data_dir))
    if db_settings.database_url:
        monkeypatch.setenv("FRAGMENTS_DATABASE_URL", db_settings.database_url)
    else:
        monkeypatch.delenv("FRAGMENTS_DATABASE_URL", raising=False)

    async def run(*args: str) -> Result:
        invoke = partial(CliRunner().invoke, cli, list(args))
        return await anyio.to_thread.run_sync(invoke)

    return run


async def test_owners_and_admins_cannot_change_the_plan(api: httpx.AsyncClient) -> None:
    owner = await sign_up(api, "owner")
    admin = await sign_up(api, "admin")
    tid = await new_team(api, owner, "Acme")
    added = await api.post(
        f"/api/teams/{tid}/members",
        json={"email": admin.email, "role": "admin"},
        headers=owner.headers,
    )
    assert added.status_code == 201, added.text
    before = await budget(api, owner, tid)

    for who, body in (
        (owner, {"tier": "enterprise"}),
        (owner, {"limits": {"monthly_tokens": 10**12}}),
        (admin, {"limits": {"chat_per_day": 10**6}}),
        (admin, {"tier": "pro", "name": "Acme Pro"}),
    ):
        refused = await api.patch(f"/api/teams/{tid}", json=body, headers=who.headers)
        assert refused.status_code == 403, (body, refused.text)
        assert refused.json()["error"] == "operator_only"
        assert "operator" in refused.json()["detail"]
    after = await budget(api, owner, tid)
    assert (after["tier"], after["monthly_tokens"]) == ("free", before["monthly_tokens"])

    # Renaming stays the owner's; the team sent back as read (same tier and limits) is fine.
    renamed = await api.patch(
        f"/api/teams/{tid}",
        json={"name": "Acme Ltd", "tier": "free", "limits": {}},
        headers=owner.headers,
    )
    assert renamed.status_code == 200, renamed.text
    assert (renamed.json()["name"], renamed.json()["tier"]) == ("Acme Ltd", "free")


async def test_the_operator_sets_tier_and_budget_with_the_cli(
    api: httpx.AsyncClient, fragments_cli: Any
) -> None:
    owner = await sign_up(api, "owner")
    globex = f"Globex {uuid.uuid4().hex[:6]}"  # the CLI names teams; names are run-wide
    tid = await new_team(api, owner, globex)
    assert (await budget(api, owner, tid))["monthly_tokens"] == 2_000_000  # free tier's

    done = await fragments_cli(
        "teams", "set-tier", globex, "enterprise", "--monthly-tokens", "5000",
        "--chat-per-day", "7",
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "enterprise" in done.output
    seen = await budget(api, owner, tid)
    assert (seen["tier"], seen["monthly_tokens"], seen["remaining_tokens"]) == (
        "enterprise",
        5000,
        5000,
    )

    # Options not given are kept; `show` reports the figures in force.
    raised = await fragments_cli("teams", "set-tier", tid, "enterprise", "--sandbox-per-day", "9")
    assert raised.exit_code == 0, raised.output
    shown = await fragments_cli("teams", "show", tid, "--json")
    assert shown.exit_code == 0, shown.output
    info = json.loads(shown.output)
    assert info["limits"] == {"monthly_tokens": 5000, "chat_per_day": 7, "sandbox_per_day": 9}
    assert (info["monthly_tokens"], info["chat_per_day"], info["sandbox_per_day"]) == (5000, 7, 9)
    assert info["owners"] == [owner.email]
    assert info["used_tokens"] == 0

    # Back to pro: the tier's figures apply again (own ones only bind enterprise teams).
    pro = await fragments_cli("teams", "set-tier", tid, "pro", "--clear-limits")
    assert pro.exit_code == 0, pro.output
    seen = await budget(api, owner, tid)
    assert (seen["tier"], seen["monthly_tokens"]) == ("pro", 20_000_000)
    text = await fragments_cli("teams", "show", globex)
    assert "tier             pro" in text.output


async def test_the_cli_refuses_what_it_cannot_do_unambiguously(
    api: httpx.AsyncClient, fragments_cli: Any
) -> None:
    owner = await sign_up(api, "owner")
    first = await new_team(api, owner, "Twin")
    second = await new_team(api, owner, "Twin")

    twins = await fragments_cli("teams", "set-tier", "Twin", "pro")
    assert twins.exit_code == 1
    assert first in twins.output
    assert second in twins.output
    missing = await fragments_cli("teams", "show", "no-such-team")
    assert missing.exit_code == 1
    assert "No team" in missing.output
    # Own figures bind enterprise teams only, so setting them on another tier is refused.
    free = await fragments_cli("teams", "set-tier", first, "free", "--monthly-tokens", "10")
    assert free.exit_code == 1
    assert "enterprise" in free.output
    bad_tier = await fragments_cli("teams", "set-tier", first, "platinum")
    assert bad_tier.exit_code == 2
    for tid in (first, second):
        seen = await budget(api, owner, tid)
        assert (seen["tier"], seen["monthly_tokens"]) == ("free", 2_000_000)
