"""`fragments operators add | remove | list`: the command line decides who is an operator (an
existing account, found by its e-mail address); an unknown address is a clear error."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fragments.cli import app
from fragments.config import Settings
from fragments.store.db import Database
from fragments.store.migrate import upgrade


async def _account(url: str, email: str) -> str:
    from fragments.auth import service

    db = Database(url)
    try:
        async with db.transaction() as session:
            user, _ = await service.create_account(session, email, "horse battery staple")
            return user.id
    finally:
        await db.aclose()


def test_operators_are_added_listed_and_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "cli-data"
    data.mkdir()
    monkeypatch.setenv("FRAGMENTS_DATA_DIR", str(data))
    monkeypatch.delenv("FRAGMENTS_DATABASE_URL", raising=False)
    monkeypatch.delenv("FRAGMENTS_DATABASE_MIGRATION_URL", raising=False)
    url = Settings(_env_file=None).resolved_database_url  # type: ignore[call-arg]
    asyncio.run(upgrade(url))
    ops_id = asyncio.run(_account(url, "ops@example.com"))
    runner = CliRunner()

    empty = runner.invoke(app, ["operators", "list"])
    assert empty.exit_code == 0, empty.output
    assert "no operators" in empty.output

    added = runner.invoke(app, ["operators", "add", "  OPS@example.com "])
    assert added.exit_code == 0, added.output
    assert f"ops@example.com ({ops_id}) is an operator" in added.output
    listed = runner.invoke(app, ["operators", "list", "--json"])
    assert json.loads(listed.output) == [{"id": ops_id, "email": "ops@example.com"}]

    unknown = runner.invoke(app, ["operators", "add", "nobody@example.com"])
    assert unknown.exit_code == 1
    assert "No account has the e-mail address 'nobody@example.com'" in unknown.output

    removed = runner.invoke(app, ["operators", "remove", "ops@example.com"])
    assert removed.exit_code == 0, removed.output
    assert "no longer an operator" in removed.output
    assert json.loads(runner.invoke(app, ["operators", "list", "--json"]).output) == []
