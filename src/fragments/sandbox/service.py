"""The seam between the HTTP layer and whatever runs fragments: local confined processes
(`sandbox/local`, the default) or E2B's cloud (`sandbox/e2b`), behind one protocol."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from fragments.errors import FragmentsError
from fragments.fragment_rules import fragment_files
from fragments.sandbox.deps import dependency_name, normalize_pip_name, validate_dependencies
from fragments.sandbox.templates import Template, get_template
from fragments.schemas import Fragment, InterpreterResult, WebResult

Phase = Literal["acquiring", "installing", "starting", "running"]
PhaseCallback = Callable[[Phase], Awaitable[None]]


class SandboxUnavailable(FragmentsError):
    """The backend cannot run sandboxes right now (busy, broken or shutting down)."""

    status_code = 503
    code = "sandbox_unavailable"


@dataclass(frozen=True, slots=True)
class PreparedSandbox:
    """A conversation's sandbox made ready before its fragment is known (`prepare`)."""

    sandbox_id: str
    template: str
    # The preview (the template's placeholder page until the fragment runs); None for the
    # interpreter.
    url: str | None


class SandboxService(Protocol):
    async def execute(
        self,
        fragment: Fragment,
        *,
        owner: str | None,
        restart: bool = False,
        on_phase: PhaseCallback | None = None,
    ) -> InterpreterResult | WebResult:
        """Run a fragment in the owner's sandbox (a conversation keeps its sandbox)."""
        ...

    async def prepare(self, template: Template, owner: str) -> PreparedSandbox | None:
        """Take or start the owner's sandbox for `template` without running any code, so the
        fragment's run that follows is an in-place edit; idempotent per owner. None when this
        backend cannot prepare that template."""
        ...

    async def check(self) -> None:
        """Raise if the backend cannot run sandboxes now (used by /readyz)."""
        ...

    async def kill(self, sandbox_id: str) -> bool:
        """Kill a sandbox now; False when no live sandbox has this id."""
        ...

    async def extend(self, sandbox_id: str, seconds: float) -> float | None:
        """Keep a sandbox alive for `seconds` of idleness (capped); None if it is not live."""
        ...

    def preview_socket(self, sandbox_id: str, port: int) -> Path | None:
        """The unix socket serving a live sandbox's port (for the preview proxy), or None."""
        ...

    def preview_expired(self, sandbox_id: str) -> bool:
        """True when the id belonged to a sandbox that has since been closed."""
        ...

    async def aclose(self) -> None:
        """Kill every sandbox and release resources."""
        ...


@dataclass(frozen=True, slots=True)
class Program:
    """What a sandbox runs for a fragment: the template, the files to write, the entry code."""

    template: Template
    files: tuple[tuple[str, str], ...]
    code: str
    entry: str
    # Validated additional_dependencies the template does not already provide.
    dependencies: tuple[str, ...] = ()


def prepare_program(fragment: Fragment) -> Program:
    """Validate a fragment (template, paths, dependencies) and pick what to run; BadRequest."""
    template = get_template(fragment.template)
    provided = {normalize_pip_name(p) for p in template.packages} | set(template.packages)
    dependencies = tuple(
        dep
        for dep in validate_dependencies(fragment.additional_dependencies, template.language)
        if dependency_name(dep, template.language) not in provided
    )
    files = fragment_files(fragment)
    if not files:
        main = fragment.file_path or template.file
        return Program(template, (), fragment.code, main, dependencies)
    contents = dict(files)
    entry_path = fragment.file_path if fragment.file_path in contents else ""
    if not entry_path:
        entry_path = template.file if template.file in contents else files[0][0]
    return Program(template, tuple(files), contents[entry_path], entry_path, dependencies)
