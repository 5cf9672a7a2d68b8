"""Installing a fragment's validated dependencies in an E2B sandbox.

The command is ours, built from `Program.dependencies` (names already validated by
`sandbox/deps.py`) with every argument shell-quoted; the model's free-form
`install_dependencies_command` is never used.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from typing import Literal

from e2b import (
    CommandExitException,
    SandboxNotRunningException,
    SandboxUnreachableException,
    TimeoutException,
)

from fragments.sandbox.e2b.sdk import Sandbox
from fragments.schemas import ExecutionError

# E2B's templates keep the app (and the interpreter's working folder) in the user's home.
WORKDIR = "/home/user"
# The tail of the installer's output returned to the user.
_MESSAGE_CHARS = 3000


def install_command(packages: Sequence[str], language: Literal["python", "node"]) -> str:
    """The shell command installing `packages`: pip for Python, npm without lifecycle scripts
    for Node (no package's own code runs at install time)."""
    if language == "python":
        base = ["pip", "install", "--disable-pip-version-check", "--no-input"]
    else:
        base = ["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund"]
    return shlex.join([*base, *packages])


async def install_packages(
    sandbox: Sandbox,
    packages: Sequence[str],
    language: Literal["python", "node"],
    time_limit: float,
) -> ExecutionError | None:
    """Run the install; the installer's own message as an InstallError when it fails."""
    command = install_command(packages, language)
    names = ", ".join(packages)
    try:
        await sandbox.commands.run(command, cwd=WORKDIR, timeout=time_limit)
    except CommandExitException as exc:
        text = "\n".join(part for part in (exc.stdout, exc.stderr) if part).strip()
        return ExecutionError(
            name="InstallError",
            value=f"Installing {names} failed:\n{text[-_MESSAGE_CHARS:]}",
        )
    except (SandboxNotRunningException, SandboxUnreachableException):
        raise  # the sandbox is gone or unreachable, not the install slow
    except TimeoutException:
        return ExecutionError(
            name="InstallError", value=f"Installing {names} took longer than {time_limit:g} s."
        )
    return None
