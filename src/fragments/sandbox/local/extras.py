"""A fragment's extra packages in its sandbox: installed once per sandbox (a conversation's rerun
does not install again), with uv for Python or npm into a Node sandbox's project overlay."""

from __future__ import annotations

from fragments.sandbox.local.install import Installer, install_npm_packages, install_packages
from fragments.sandbox.local.kernel import KernelSandbox
from fragments.sandbox.local.sandbox_base import KernelConfig
from fragments.sandbox.local.web import WebSandbox
from fragments.sandbox.service import PhaseCallback, Program
from fragments.schemas import ExecutionError


class ExtraPackages:
    """What each live sandbox has installed, and installing what a program adds."""

    def __init__(self, node_gid: int) -> None:
        self.node_gid = node_gid
        self._installed: dict[str, set[str]] = {}

    def forget(self, sandbox_id: str) -> None:
        self._installed.pop(sandbox_id, None)

    async def install(
        self,
        sandbox: KernelSandbox | WebSandbox,
        program: Program,
        phase: PhaseCallback,
        *,
        installer: Installer | None,
        config: KernelConfig,
    ) -> ExecutionError | None:
        """Install the program's packages this sandbox lacks; the installer's error, if any."""
        done = self._installed.setdefault(sandbox.id, set())
        missing = [d for d in program.dependencies if d not in done]
        if not missing:
            return None
        if installer is None:
            return ExecutionError(
                name="InstallError",
                value="Additional packages cannot be installed here: uv was not found.",
            )
        await phase("installing")
        if isinstance(sandbox, WebSandbox) and sandbox.node:
            error = await install_npm_packages(
                sandbox_id=sandbox.id,
                root=sandbox.root,
                project=sandbox.merged,
                env=sandbox.env,
                gid=self.node_gid,
                packages=missing,
                config=config,
                installer=installer,
            )
        else:
            error = await install_packages(
                sandbox_id=sandbox.id,
                root=sandbox.root,
                deps=sandbox.deps,
                env=sandbox.env,
                packages=missing,
                config=config,
                installer=installer,
            )
        if error is None:
            done.update(missing)
        return error
