"""Validation of a fragment's `additional_dependencies` (never its free-form install command).

Only bare registry names with optional version constraints pass: for pip a PEP 508 name with
optional extras and version specifiers; for npm a (scoped) package name with an optional semver
range. URLs, paths, options (`--index-url ...`), VCS references and shell metacharacters are
refused, so what reaches the installer can only mean "this package from the registry".
"""

from __future__ import annotations

import re
from typing import Literal

from fragments.errors import BadRequest

MAX_DEPENDENCIES = 20
MAX_LENGTH = 120

_PIP_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_PIP_VERSION = r"[0-9][A-Za-z0-9.*+!]*"
_PIP_SPEC = rf"(?:===|==|!=|~=|>=|<=|>|<)\s*{_PIP_VERSION}"
_PIP = re.compile(
    rf"^(?P<name>{_PIP_NAME})\s*(?:\[\s*{_PIP_NAME}(?:\s*,\s*{_PIP_NAME})*\s*\])?"
    rf"\s*(?:{_PIP_SPEC}(?:\s*,\s*{_PIP_SPEC})*)?$"
)
_NPM_NAME = r"(?:@[a-z0-9][a-z0-9._~-]*/)?[a-z0-9][a-z0-9._~-]*"
# A semver range of plain versions, wildcards and the usual operators (no URLs, tags or paths).
_NPM_RANGE = r"[~^]?(?:[<>]=?|=)?v?[0-9xX*][0-9A-Za-z.*+-]*"
_NPM = re.compile(rf"^(?P<name>{_NPM_NAME})(?:@(?:latest|next|{_NPM_RANGE}(?:\s+{_NPM_RANGE})*))?$")


def normalize_pip_name(name: str) -> str:
    """PEP 503 normalization (`Foo_Bar` and `foo-bar` are one project)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def validate_dependencies(requested: list[str], language: Literal["python", "node"]) -> list[str]:
    """The dependencies, stripped and checked; BadRequest names the first bad one."""
    wanted = [d.strip() for d in requested if d.strip()]
    if len(wanted) > MAX_DEPENDENCIES:
        raise BadRequest(
            f"At most {MAX_DEPENDENCIES} additional dependencies may be installed.",
            code="invalid_dependency",
        )
    pattern = _PIP if language == "python" else _NPM
    kind = "a pip requirement (name[extras] with optional versions)"
    if language == "node":
        kind = "an npm package name with an optional version range"
    checked: list[str] = []
    for dep in wanted:
        if len(dep) > MAX_LENGTH or pattern.match(dep) is None or dep.startswith("-"):
            raise BadRequest(
                f"'{dep[:80]}' is not {kind}; URLs, paths, options and shell syntax are not "
                "accepted as dependencies.",
                code="invalid_dependency",
            )
        checked.append(dep)
    return checked


def dependency_name(dep: str, language: Literal["python", "node"]) -> str:
    """The package name of a validated dependency."""
    match = (_PIP if language == "python" else _NPM).match(dep)
    assert match is not None
    name = match.group("name")
    return normalize_pip_name(name) if language == "python" else name
