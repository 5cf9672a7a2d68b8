"""An in-process sandbox backend with scripted answers, for tests about what surrounds a run
(limits, credits, stored results, publishing) rather than the run itself.

    sandboxes = FakeSandboxes(stdout=["hi\\n"], delay=0.01)
    app = create_app(settings, sandboxes=sandboxes)
    ...
    sandboxes.runs          # [(fragment, owner)] in the order they were run
    sandboxes.prepared      # [(template id, owner)]
    sandboxes.gone          # sandbox ids `extend` treats as no longer live
    sandboxes.release_prepare = asyncio.Event()   # prepares wait for it (`preparing` is set)

Every run answers its template's kind of result: an interpreter's `stdout`, or a web app's
preview `url`. It implements `fragments.ports.SandboxService`: a real class, not a mock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anyio

from fragments.ports import PhaseCallback, PreparedSandbox
from fragments.schemas import Fragment, InterpreterResult, WebResult
from fragments.templates import Template, get_template


@dataclass
class FakeSandboxes:
    sandbox_id: str = "sbx"
    stdout: Sequence[str] = ("1\n",)
    url: str = "http://preview/"
    # Seconds each run takes (a run is never instant in real life).
    delay: float = 0.0
    gone: set[str] = field(default_factory=set)
    # When set, `prepare` waits for it (a slow prepare); `preparing` is set once one waits.
    release_prepare: asyncio.Event | None = None
    preparing: asyncio.Event = field(default_factory=asyncio.Event)
    runs: list[tuple[Fragment, str | None]] = field(default_factory=list)
    # The data files each run was given, in the order of `runs`.
    data_files: list[tuple[tuple[str, bytes], ...]] = field(default_factory=list)
    prepared: list[tuple[str, str]] = field(default_factory=list)
    extended: list[tuple[str, float]] = field(default_factory=list)
    closed: bool = False

    async def execute(
        self,
        fragment: Fragment,
        *,
        owner: str | None,
        restart: bool = False,
        on_phase: PhaseCallback | None = None,
        data_files: tuple[tuple[str, bytes], ...] = (),
    ) -> InterpreterResult | WebResult:
        self.runs.append((fragment, owner))
        self.data_files.append(data_files)
        # The phases a real backend reports for a warm sandbox.
        if on_phase is not None:
            await on_phase("acquiring")
            await on_phase("running")
        if self.delay:
            await anyio.sleep(self.delay)
        if get_template(fragment.template).runtime == "web":
            return WebResult(sandbox_id=self.sandbox_id, template=fragment.template, url=self.url)
        return InterpreterResult(
            sandbox_id=self.sandbox_id, template=fragment.template, stdout=list(self.stdout)
        )

    async def prepare(self, template: Template, owner: str) -> PreparedSandbox | None:
        self.prepared.append((template.id, owner))
        if self.release_prepare is not None:
            self.preparing.set()
            await self.release_prepare.wait()
        url = self.url if template.runtime == "web" else None
        return PreparedSandbox(self.sandbox_id, template.id, url)

    async def check(self) -> None:
        return None

    async def kill(self, sandbox_id: str) -> bool:
        return False

    async def extend(self, sandbox_id: str, seconds: float) -> float | None:
        self.extended.append((sandbox_id, seconds))
        return None if sandbox_id in self.gone else seconds

    def preview_socket(self, sandbox_id: str, port: int) -> Path | None:
        return None

    def preview_expired(self, sandbox_id: str) -> bool:
        return False

    async def aclose(self) -> None:
        self.closed = True
