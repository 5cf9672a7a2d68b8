"""Template environments for local sandboxes, built once under `Settings.sandbox_root`.

An environment is built into a temporary folder beside its final place, checked, stamped with a
marker file that records what it holds, and renamed into place: a half-built environment is never
used. It lives at the same path on the host and inside the sandbox (bound read-only there).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import structlog

from fragments.config import Settings
from fragments.sandbox.templates import TEMPLATES, Template
from fragments.sandbox.templates.runtimes import runtime_of

MARKER = ".fragments-template.json"
# Bump when the layout of a built environment changes, so old ones are rebuilt.
FORMAT = 1
# Templates whose build recipe is a Python environment (the others are Node scaffolds).
BUILDABLE = tuple(t.id for t in TEMPLATES.values() if runtime_of(t).build == "python")
# Where the pre-built matplotlib font cache lives inside an environment.
MPL_CACHE = "share/fragments/matplotlib"

log = structlog.get_logger(__name__)

Progress = Callable[[str, int, int], None]
"""Called with (step description, steps done, steps in all)."""


class TemplateBuildError(Exception):
    """The environment could not be built; the message says why in one sentence."""


class TemplateNotAvailable(TemplateBuildError):
    """The template exists but this backend cannot build it yet."""


@dataclass(frozen=True, slots=True)
class TemplateEnv:
    """A built environment: its folder and the interpreter to run inside it."""

    template: Template
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def mpl_cache(self) -> Path:
        return self.path / MPL_CACHE


def node_group(settings: Settings) -> int:
    """The group every Node sandbox runs with; their template trees are writable by it."""
    return settings.sandbox_uid_base + settings.sandbox_max_count + 2


def templates_dir(settings: Settings) -> Path:
    return settings.sandbox_root / "templates"


def env_path(settings: Settings, template: Template) -> Path:
    """Where the template's environment for the current spec lives.

    The folder name carries a digest of the spec (packages, interpreter, layout), so changing
    the spec builds a new folder beside the old one instead of replacing an environment that
    running sandboxes (possibly another app's) have bound.
    """
    spec = json.dumps(_expected_marker(settings, template), sort_keys=True)
    digest = hashlib.sha256(spec.encode()).hexdigest()[:10]
    return templates_dir(settings) / f"{template.id}-{digest}"


def _expected_marker(settings: Settings, template: Template) -> dict[str, object]:
    return {
        "format": FORMAT,
        "template": template.id,
        "python": str(settings.sandbox_python),
        "packages": list(template.packages),
    }


def ensure_traversable(path: Path) -> None:
    """Create `path` (mode 755) and make every parent searchable by other users.

    The sandbox uid binds folders under it; a parent without the x bit for others (such as
    pytest's 700 temporary folders or /root) would make bwrap fail with a confusing error.
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o755)
    for parent in (path, *path.parents):
        mode = parent.stat().st_mode
        if not mode & 0o001:
            if parent == Path("/root") or str(parent).startswith("/root/"):
                raise TemplateBuildError(
                    f"The sandbox folder {path} is under /root, which other users cannot enter; "
                    "set FRAGMENTS_SANDBOX_ROOT to a folder such as /var/tmp/fragments."
                )
            log.warning("sandbox_parent_made_traversable", path=str(parent))
            parent.chmod(mode | 0o011)


def find_env(settings: Settings, template: Template) -> TemplateEnv | None:
    """The template's built environment, or None when it is missing, partial or outdated."""
    path = env_path(settings, template)
    try:
        marker = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None
    expected = _expected_marker(settings, template)
    if not isinstance(marker, dict) or any(marker.get(k) != v for k, v in expected.items()):
        return None
    return TemplateEnv(template, path)


def is_buildable(template: Template) -> bool:
    """True for templates built as a Python environment (see node_build.py for the others)."""
    return runtime_of(template).build == "python"


def _uv_command() -> list[str]:
    uv = shutil.which("uv")
    if uv:
        return [uv]
    for python in (sys.executable, shutil.which("python3")):
        if (
            python
            and subprocess.run(
                [python, "-m", "uv", "--version"], capture_output=True, check=False
            ).returncode
            == 0
        ):
            return [python, "-m", "uv"]
    raise TemplateBuildError(
        "uv is needed to build sandbox templates; install it with `python3 -m pip install uv`."
    )


@contextmanager
def _build_lock(settings: Settings, template_id: str) -> Iterator[None]:
    """One builder per template at a time, across processes (the app and the CLI)."""
    lock_path = templates_dir(settings) / f".{template_id}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _run(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> None:
    # Files must be readable by the sandbox uid whatever the caller's umask.
    wrapped = ["/bin/sh", "-c", 'umask 022 && exec "$@"', "sh", *cmd]
    with open(log, "ab") as out:
        out.write(("$ " + " ".join(cmd) + "\n").encode())
        out.flush()
        done = subprocess.run(wrapped, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
    if done.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        raise TemplateBuildError(
            f"`{' '.join(cmd[:4])} ...` failed (exit {done.returncode}):\n" + "\n".join(tail)
        )


def build_template(
    settings: Settings,
    template_id: str,
    *,
    force: bool = False,
    progress: Progress | None = None,
) -> TemplateEnv:
    """Build the template's environment unless a complete one exists (or `force`)."""
    template = TEMPLATES.get(template_id)
    if template is None:
        raise TemplateBuildError(
            f"Unknown template '{template_id}'; known: {', '.join(TEMPLATES)}."
        )
    if not is_buildable(template):
        raise TemplateNotAvailable(
            f"The template '{template_id}' is not available in local sandboxes yet; "
            f"buildable now: {', '.join(BUILDABLE)}."
        )
    python = settings.sandbox_python
    if not os.access(python, os.X_OK):
        raise TemplateBuildError(
            f"The sandbox interpreter {python} is missing; install Debian's python3 or set "
            "FRAGMENTS_SANDBOX_PYTHON."
        )
    ensure_traversable(templates_dir(settings))
    steps = 4

    def report(step: str, done: int) -> None:
        if progress is not None:
            progress(step, done, steps)

    with _build_lock(settings, template_id):
        existing = find_env(settings, template)
        if existing is not None and not force:
            report("already built", steps)
            return existing
        final = env_path(settings, template)
        tmp = Path(tempfile.mkdtemp(prefix=f".build-{template.id}-", dir=templates_dir(settings)))
        tmp.chmod(0o755)
        log = tmp.parent / f".{template.id}.build.log"
        log.write_text("")
        env = {
            **os.environ,
            "UV_PYTHON_DOWNLOADS": "never",
            "UV_NO_PROGRESS": "1",
            "VIRTUAL_ENV": str(tmp),
        }
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        try:
            uv = _uv_command()
            report("creating the environment", 0)
            _run(
                [
                    *uv,
                    "venv",
                    "--quiet",
                    "--no-project",
                    "--relocatable",
                    "--allow-existing",
                    "--python",
                    str(python),
                    str(tmp),
                ],
                log,
                env,
            )
            report(f"installing {', '.join(template.packages)}", 1)
            _run(
                [
                    *uv,
                    "pip",
                    "install",
                    "--python",
                    str(tmp / "bin" / "python"),
                    "--compile-bytecode",
                    *template.packages,
                ],
                log,
                env,
            )
            report("warming caches", 2)
            mpl = tmp / MPL_CACHE
            mpl.mkdir(parents=True, mode=0o755)
            _run(
                [str(tmp / "bin" / "python"), "-c", runtime_of(template).build_check],
                log,
                {**env, "MPLCONFIGDIR": str(mpl), "MPLBACKEND": "agg"},
            )
            report("finishing", 3)
            marker = _expected_marker(settings, template)
            marker["built_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            (tmp / MARKER).write_text(json.dumps(marker))
            old: Path | None = None
            if final.exists():
                old = final.with_name(f".old-{template.id}-{os.getpid()}-{time.monotonic_ns()}")
                final.rename(old)
            tmp.rename(final)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        report("done", steps)
        return TemplateEnv(template, final)
