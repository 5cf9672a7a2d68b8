"""Template environments: the CLI, the marker that guards half-built environments, first use."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fragments.cli import app as cli
from fragments.config import Settings
from fragments.sandbox.local.build import MARKER, TemplateEnv, env_path, find_env
from fragments.sandbox.local.service import LocalSandboxService
from fragments.sandbox.templates import TEMPLATES
from fragments.schemas import InterpreterResult

from .conftest import INTERPRETER, fragment


@pytest.fixture
def fresh_root() -> Iterator[Path]:
    root = Path(f"/var/tmp/fragments-test-{uuid.uuid4().hex[:8]}")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_cli_refuses_unknown_templates(monkeypatch: pytest.MonkeyPatch, fresh_root: Path) -> None:
    monkeypatch.setenv("FRAGMENTS_SANDBOX_ROOT", str(fresh_root))
    unknown = CliRunner().invoke(cli, ["templates", "build", "cobol"])
    assert unknown.exit_code == 2
    assert "Unknown template 'cobol'" in unknown.output


def test_cli_reports_an_environment_already_built(
    monkeypatch: pytest.MonkeyPatch, template_env: TemplateEnv
) -> None:
    monkeypatch.setenv("FRAGMENTS_SANDBOX_ROOT", str(template_env.path.parents[1]))
    result = CliRunner().invoke(cli, ["templates", "build", INTERPRETER])
    assert result.exit_code == 0, result.output
    assert "already built" in result.output


def test_an_environment_without_a_matching_marker_is_not_used(fresh_root: Path) -> None:
    settings = Settings(_env_file=None, sandbox_root=fresh_root)
    template = TEMPLATES[INTERPRETER]
    env = env_path(settings, template)
    env.mkdir(parents=True)
    assert find_env(settings, template) is None  # half-built: no marker
    marker = {
        "format": 1,
        "template": INTERPRETER,
        "python": str(settings.sandbox_python),
        "packages": ["ipykernel"],
    }
    (env / MARKER).write_text(json.dumps(marker))
    assert find_env(settings, template) is None  # built with other packages
    marker["packages"] = list(template.packages)
    (env / MARKER).write_text(json.dumps(marker))
    assert find_env(settings, template) is not None


def test_the_installed_environment_matches_the_template(template_env: TemplateEnv) -> None:
    marker = json.loads((template_env.path / MARKER).read_text())
    assert marker["packages"] == list(TEMPLATES[INTERPRETER].packages)
    assert template_env.python.exists()
    assert list(template_env.mpl_cache.glob("fontlist-*.json"))
    assert not list(template_env.path.parent.glob(".build-*"))


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_missing_template_is_built_on_first_use(
    settings: Settings, fresh_root: Path
) -> None:
    """Builds a whole environment into a new root (~15 s with uv's cache, minutes without)."""
    svc = LocalSandboxService(settings.model_copy(update={"sandbox_root": fresh_root}))
    phases: list[str] = []

    async def on_phase(phase: str) -> None:
        phases.append(phase)

    try:
        result = await svc.execute(
            fragment("import pandas\nprint(pandas.__name__)"), owner=None, on_phase=on_phase
        )
    finally:
        await svc.aclose()
    assert phases == ["acquiring", "installing", "starting", "running"]
    assert isinstance(result, InterpreterResult)
    assert result.stdout == ["pandas\n"]
    built = env_path(Settings(_env_file=None, sandbox_root=fresh_root), TEMPLATES[INTERPRETER])
    assert (built / MARKER).exists()
