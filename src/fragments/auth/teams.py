"""/api/teams: teams, members and roles. owner: the team and its members; admin: members;
member: use. Someone outside a team gets 404 for it.

The tier and an enterprise team's limits (monthly token budget, chat and sandbox runs a day)
decide what the platform pays for, so they belong to the operator (`fragments teams set-tier`):
PATCH refuses to change them, for every role."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from fragments.auth.deps import SessionDep, SignedInUser
from fragments.auth.public import MemberPublic, RolePublic, TeamPublic
from fragments.auth.service import membership
from fragments.auth.tokens import Forbidden
from fragments.errors import BadRequest, NotFound
from fragments.store.models import Membership, Team, User

router = APIRouter(prefix="/api/teams", tags=["teams"])

RoleName = Literal["owner", "admin", "member"]
TierName = Literal["free", "pro", "enterprise"]
_RANK = {"member": 0, "admin": 1, "owner": 2}


class NewTeam(BaseModel):
    name: str = Field(min_length=1, max_length=200)


class TeamPatch(BaseModel):
    name: str | None = Field(None, min_length=1, max_length=200)
    # Accepted only unchanged (a client may send the team back as it read it); see the module.
    tier: TierName | None = None
    limits: dict[str, int] | None = None


_OPERATOR_ONLY = (
    "The plan (tier) and the team's limits and monthly token budget are set by the operator "
    "of this service; ask them to change it."
)


class NewMember(BaseModel):
    email: str = Field(max_length=320)
    role: RoleName = "member"


class RolePatch(BaseModel):
    role: RoleName


def _team(team: Team, role: str) -> TeamPublic:
    return TeamPublic(id=team.id, name=team.name, tier=team.tier, limits=team.limits, role=role)


async def _my_role(session: AsyncSession, user: SignedInUser, team_id: str) -> tuple[Team, str]:
    assert user.user_id is not None
    mine = await membership(session, user.user_id, team_id)
    team = await session.get(Team, team_id) if mine else None
    if mine is None or team is None:
        raise NotFound("There is no such team.")
    return team, mine.role


def _require(role: str, at_least: RoleName, action: str) -> None:
    if _RANK[role] < _RANK[at_least]:
        raise Forbidden(f"Only a team {at_least} can {action}.", code="insufficient_role")


@router.get("")
async def list_teams(user: SignedInUser, session: SessionDep) -> list[TeamPublic]:
    rows = await session.execute(
        select(Team, Membership.role)
        .join(Membership, Membership.team_id == Team.id)
        .where(Membership.user_id == user.user_id)
        .order_by(Membership.created_at)
    )
    return [_team(team, role) for team, role in rows.all()]


@router.post("", status_code=201)
async def create_team(body: NewTeam, user: SignedInUser, session: SessionDep) -> TeamPublic:
    if user.is_guest:
        raise Forbidden("Sign up to create teams.", code="guest")
    team = Team(name=body.name.strip(), tier="free", limits={}, personal=False)
    session.add(team)
    await session.flush()
    session.add(Membership(user_id=user.user_id, team_id=team.id, role="owner"))
    await session.flush()
    return _team(team, "owner")


@router.patch("/{team_id}")
async def patch_team(
    team_id: str, body: TeamPatch, user: SignedInUser, session: SessionDep
) -> TeamPublic:
    team, role = await _my_role(session, user, team_id)
    changes_tier = body.tier is not None and body.tier != team.tier
    changes_limits = body.limits is not None and body.limits != (team.limits or {})
    if changes_tier or changes_limits:
        raise Forbidden(_OPERATOR_ONLY, code="operator_only")
    if body.name is not None:
        _require(role, "owner", "rename the team")
        team.name = body.name.strip()
    await session.flush()
    return _team(team, role)


@router.get("/{team_id}/members")
async def list_members(team_id: str, user: SignedInUser, session: SessionDep) -> list[MemberPublic]:
    await _my_role(session, user, team_id)
    rows = await session.execute(
        select(User.id, User.email, Membership.role)
        .join(Membership, Membership.user_id == User.id)
        .where(Membership.team_id == team_id)
        .order_by(Membership.created_at)
    )
    return [MemberPublic(user_id=uid, email=email, role=role) for uid, email, role in rows.all()]


@router.post("/{team_id}/members", status_code=201)
async def add_member(
    team_id: str, body: NewMember, user: SignedInUser, session: SessionDep
) -> MemberPublic:
    _, role = await _my_role(session, user, team_id)
    _require(role, "admin", "add members")
    if body.role == "owner":
        _require(role, "owner", "make owners")
    found = await session.execute(select(User).where(User.email == body.email.strip().lower()))
    member = found.scalar_one_or_none()
    if member is None:
        raise NotFound("No account has this email; ask them to sign up first.")
    if await membership(session, member.id, team_id) is not None:
        raise BadRequest("This account is already a member.", code="already_member")
    session.add(Membership(user_id=member.id, team_id=team_id, role=body.role))
    await session.flush()
    return MemberPublic(user_id=member.id, email=member.email, role=body.role)


async def _owners(session: AsyncSession, team_id: str) -> int:
    rows = await session.execute(
        select(func.count())
        .select_from(Membership)
        .where(Membership.team_id == team_id, Membership.role == "owner")
    )
    return int(rows.scalar_one())


@router.patch("/{team_id}/members/{user_id}")
async def change_role(
    team_id: str, user_id: str, body: RolePatch, user: SignedInUser, session: SessionDep
) -> RolePublic:
    _, role = await _my_role(session, user, team_id)
    _require(role, "admin", "change roles")
    target = await membership(session, user_id, team_id)
    if target is None:
        raise NotFound("This account is not a member.")
    if "owner" in (target.role, body.role):
        _require(role, "owner", "make or unmake owners")
    if target.role == "owner" and body.role != "owner" and await _owners(session, team_id) <= 1:
        raise BadRequest("A team keeps at least one owner.", code="last_owner")
    target.role = body.role
    await session.flush()
    return RolePublic(user_id=user_id, role=target.role)


@router.delete("/{team_id}/members/{user_id}", status_code=204)
async def remove_member(
    team_id: str, user_id: str, user: SignedInUser, session: SessionDep
) -> None:
    _, role = await _my_role(session, user, team_id)
    target = await membership(session, user_id, team_id)
    if target is None:
        raise NotFound("This account is not a member.")
    if user_id != user.user_id:
        _require(role, "admin", "remove members")
        if target.role == "owner":
            _require(role, "owner", "remove owners")
    if target.role == "owner" and await _owners(session, team_id) <= 1:
        raise BadRequest("A team keeps at least one owner.", code="last_owner")
    await session.delete(target)
