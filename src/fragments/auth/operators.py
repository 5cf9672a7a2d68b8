"""Platform operators: the people who run the service (not a team role). An operator sees the
operator page `/admin` and its routes (every team's usage and cost, the service's figures).
Nobody becomes one through the API: the command line on the server decides
(`fragments operators add|remove|list`), like a team's plan (`fragments teams set-tier`)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from fragments.store.db import Database
from fragments.store.models import User


class OperatorError(Exception):
    """An account that cannot be made an operator (a message for the command line)."""


async def is_operator(session: AsyncSession, user_id: str) -> bool:
    """Whether the account is a platform operator (a guest never is)."""
    user = await session.get(User, user_id)
    return bool(user is not None and user.is_operator and not user.is_guest)


async def set_operator(db: Database, email: str, operator: bool) -> str:
    """Make the account with this e-mail address an operator (or no longer one); its id.
    Raises OperatorError (a message for the command line) when no account has the address."""
    address = email.strip().lower()
    async with db.transaction() as session:
        user = (
            await session.execute(select(User).where(User.email == address))
        ).scalar_one_or_none()
        if user is None or user.is_guest:
            raise OperatorError(f"No account has the e-mail address {address!r}; sign up first.")
        user.is_operator = operator
        await session.flush()
        return user.id


async def list_operators(db: Database) -> list[tuple[str, str]]:
    """The operators' (id, e-mail address), by address."""
    async with db.transaction() as session:
        rows = await session.execute(
            select(User.id, User.email).where(User.is_operator.is_(True)).order_by(User.email)
        )
        return [(user_id, email or "") for user_id, email in rows.all()]
