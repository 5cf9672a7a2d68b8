"""`OperatorUser`: the caller, if a platform operator. Nobody signed in: 401 (as everywhere);
a guest or an account that is not an operator: 403 `operator_only`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from fragments.auth.deps import SignedInUser
from fragments.auth.operators import is_operator
from fragments.auth.tokens import Forbidden
from fragments.principal import Principal
from fragments.state import get_db
from fragments.store.errors import DB_DOWN, DatabaseUnavailable

_REFUSED = "Only the operators of this service can see this page."


async def operator(request: Request, user: SignedInUser) -> Principal:
    """The caller, checked against the database on every request (a removed operator loses
    access at once, whatever their token says)."""
    if user.is_guest or user.user_id is None:
        raise Forbidden(_REFUSED, code="operator_only")
    try:
        async with get_db(request).transaction(user.identity) as session:
            allowed = await is_operator(session, user.user_id)
    except DB_DOWN as exc:
        raise DatabaseUnavailable() from exc
    if not allowed:
        raise Forbidden(_REFUSED, code="operator_only")
    return user


OperatorUser = Annotated[Principal, Depends(operator)]
