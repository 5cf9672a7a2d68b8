"""`fragments teams set-tier | show`: the operator sets a team's plan (tier, and an enterprise
team's monthly token budget and daily limits) and sees it with the month's usage. Teams cannot
set these themselves (see `auth.plans`). `fragments operators add | remove | list`: who is a
platform operator (sees the operator page /admin; see `auth.operators`). Both use
FRAGMENTS_DATABASE_URL like the app."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:
    from fragments.config import Settings
    from fragments.store.db import Database

teams_app = typer.Typer(
    help="Teams' plans: tier, token budget and limits (operator only).", no_args_is_help=True
)

operators_app = typer.Typer(
    help="Platform operators: who sees the operator page /admin.", no_args_is_help=True
)

T = TypeVar("T")


class Tier(StrEnum):
    free = "free"
    pro = "pro"
    enterprise = "enterprise"


def _text(info: dict[str, Any]) -> str:
    limits = info["limits"]
    ignored = bool(limits) and info["tier"] != "enterprise"
    personal = " (personal)" if info["personal"] else ""
    return "\n".join(
        [
            f"team             {info['id']}  {info['name']!r}{personal}",
            f"owners           {', '.join(info['owners']) or '-'}",
            f"tier             {info['tier']}",
            f"own limits       {json.dumps(limits, sort_keys=True) if limits else '-'}"
            + (" (ignored: not enterprise)" if ignored else ""),
            f"monthly tokens   {info['monthly_tokens']}",
            f"chat per day     {info['chat_per_day']}",
            f"sandbox per day  {info['sandbox_per_day']}",
            f"team chat a day  {info['team_chat_per_day']} (all members together)",
            f"used {info['month']}  {info['used_tokens']} tokens, {info['remaining_tokens']} left "
            f"(resets {info['resets_at']})",
            f"own-key usage    {info['own_key_tokens']} tokens (shown, not charged)",
            f"sandbox time     {info['sandbox_seconds']} s this month",
        ]
    )


def _run(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    """`work(db)` on the configured database; a message and exit code 1 when it fails."""
    import asyncio

    from sqlalchemy.exc import SQLAlchemyError

    from fragments.auth.operators import OperatorError
    from fragments.auth.plans import TeamError
    from fragments.store.db import Database

    async def main() -> T:
        db = Database(settings.resolved_database_url)
        try:
            return await work(db)
        finally:
            await db.aclose()

    try:
        return asyncio.run(main())
    except (TeamError, OperatorError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    except SQLAlchemyError as exc:
        typer.echo(
            f"The database cannot be used ({type(exc).__name__}); is it reachable and migrated "
            "(`fragments db upgrade`)?",
            err=True,
        )
        raise typer.Exit(1) from None


TeamArg = Annotated[str, typer.Argument(help="The team's id, or its name if no other has it.")]
Count = Annotated[int | None, typer.Option(min=0, help="Enterprise only.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@teams_app.command("set-tier")
def set_tier_command(
    team: TeamArg,
    tier: Annotated[Tier, typer.Argument(help="The plan.")],
    monthly_tokens: Count = None,
    chat_per_day: Count = None,
    sandbox_per_day: Count = None,
    team_chat_per_day: Count = None,
    clear_limits: Annotated[
        bool,
        typer.Option(
            "--clear-limits", help="Drop the team's own figures first (the tier's apply)."
        ),
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Set a team's tier and, for enterprise, its own monthly token budget and daily limits
    (the options given are changed, the others kept)."""
    from fragments.auth.plans import describe, set_tier
    from fragments.config import Settings

    settings = Settings()
    given = {
        "monthly_tokens": monthly_tokens,
        "chat_per_day": chat_per_day,
        "sandbox_per_day": sandbox_per_day,
        "team_chat_per_day": team_chat_per_day,
    }
    limits = {name: value for name, value in given.items() if value is not None}

    async def work(db: Database) -> dict[str, Any]:
        team_id = await set_tier(db, team, tier.value, limits, clear_limits=clear_limits)
        return await describe(db, settings, team_id)

    info = _run(settings, work)
    typer.echo(json.dumps(info) if as_json else _text(info))


@teams_app.command("show")
def show_command(team: TeamArg, as_json: AsJson = False) -> None:
    """A team's tier, the figures in force, and its usage this month."""
    from fragments.auth.plans import describe
    from fragments.config import Settings

    settings = Settings()

    async def work(db: Database) -> dict[str, Any]:
        return await describe(db, settings, team)

    info = _run(settings, work)
    typer.echo(json.dumps(info) if as_json else _text(info))


Email = Annotated[str, typer.Argument(help="The account's e-mail address.")]


@operators_app.command("add")
def add_operator_command(email: Email) -> None:
    """Make an account a platform operator (it must exist: sign up first)."""
    from fragments.auth.operators import set_operator
    from fragments.config import Settings

    async def work(db: Database) -> str:
        return await set_operator(db, email, True)

    user_id = _run(Settings(), work)
    typer.echo(f"{email.strip().lower()} ({user_id}) is an operator")


@operators_app.command("remove")
def remove_operator_command(email: Email) -> None:
    """Make an account an ordinary user again (its sessions lose /admin at their next call)."""
    from fragments.auth.operators import set_operator
    from fragments.config import Settings

    async def work(db: Database) -> str:
        return await set_operator(db, email, False)

    user_id = _run(Settings(), work)
    typer.echo(f"{email.strip().lower()} ({user_id}) is no longer an operator")


@operators_app.command("list")
def list_operators_command(as_json: AsJson = False) -> None:
    """The operators' e-mail addresses and ids."""
    from fragments.auth.operators import list_operators
    from fragments.config import Settings

    found = _run(Settings(), list_operators)
    if as_json:
        typer.echo(json.dumps([{"id": uid, "email": email} for uid, email in found]))
    elif not found:
        typer.echo("no operators (add one: fragments operators add EMAIL)")
    else:
        typer.echo("\n".join(f"{email}  {uid}" for uid, email in found))
