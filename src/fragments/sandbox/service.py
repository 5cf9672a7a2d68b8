"""What every sandbox backend shares: turning a fragment into the program a sandbox runs, and the
error a backend raises when it cannot run one. The protocol the backends implement
(`SandboxService`) is in `fragments.ports`, below the State that holds it; its names are
re-exported here for the backends."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from fragments.errors import FragmentsError
from fragments.fragment_rules import fragment_files
from fragments.ports import DataFile as DataFile
from fragments.ports import Phase as Phase
from fragments.ports import PhaseCallback as PhaseCallback
from fragments.ports import PreparedSandbox as PreparedSandbox
from fragments.ports import SandboxService as SandboxService
from fragments.sandbox.deps import dependency_name, normalize_pip_name, validate_dependencies
from fragments.schemas import Fragment
from fragments.templates import Template, get_template


class SandboxUnavailable(FragmentsError):
    """The backend cannot run sandboxes right now (busy, broken or shutting down)."""

    status_code = 503
    code = "sandbox_unavailable"


@dataclass(frozen=True, slots=True)
class Program:
    """What a sandbox runs for a fragment: the template, the files to write, the entry code."""

    template: Template
    files: tuple[tuple[str, str], ...]
    code: str
    entry: str
    # Validated additional_dependencies the template does not already provide.
    dependencies: tuple[str, ...] = ()
    # The conversation's data files (plain names, checked on upload).
    data: tuple[DataFile, ...] = ()


def unwritten_data(program: Program, written: dict[str, str]) -> list[tuple[str, bytes]]:
    """The program's data files a sandbox does not hold yet (by content digest), recorded in
    `written` as written: a 10 MB file is copied once per sandbox, not once per run."""
    fresh: list[tuple[str, bytes]] = []
    for name, content in program.data:
        digest = hashlib.sha256(content).hexdigest()
        if written.get(name) != digest:
            fresh.append((name, content))
            written[name] = digest
    return fresh


def prepare_program(fragment: Fragment, data: tuple[DataFile, ...] = ()) -> Program:
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
        return Program(template, (), fragment.code, main, dependencies, data)
    contents = dict(files)
    entry_path = fragment.file_path if fragment.file_path in contents else ""
    if not entry_path:
        entry_path = template.file if template.file in contents else files[0][0]
    return Program(template, tuple(files), contents[entry_path], entry_path, dependencies, data)
