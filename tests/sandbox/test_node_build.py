"""Node template environments: valid scaffolds, digests, the marker, atomic, idempotent builds."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fragments.config import Settings
from fragments.sandbox.local import node_build
from fragments.sandbox.local.build import MARKER, TemplateBuildError
from fragments.sandbox.local.node_build import (
    NODE_TEMPLATES,
    build_node_template,
    dev_command,
    node_template_dir,
    node_template_path,
    scaffold_digest,
    scaffold_dir,
    scaffold_files,
)
from fragments.sandbox.templates import TEMPLATES

NPM = shutil.which("npm")
needs_npm = pytest.mark.skipif(NPM is None, reason="npm is not installed")


@pytest.fixture
def fresh_root() -> Iterator[Path]:
    root = Path(f"/var/tmp/fragments-test-{uuid.uuid4().hex[:8]}")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def scaffolds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the scaffolds, so a test can edit one."""
    copy = tmp_path / "node"
    shutil.copytree(node_build.SCAFFOLDS, copy)
    monkeypatch.setattr(node_build, "SCAFFOLDS", copy)
    return copy


def test_the_node_templates_are_the_registry_node_templates() -> None:
    assert {t.id for t in TEMPLATES.values() if t.language == "node"} == NODE_TEMPLATES
    for template_id in NODE_TEMPLATES:
        files = {p.as_posix() for p in scaffold_files(template_id)}
        # The model writes the template's file; the scaffold has a placeholder there.
        assert TEMPLATES[template_id].file in files
        assert {"package.json", "package-lock.json"} <= files
        assert not any(part.startswith(".") for f in files for part in f.split("/"))


@pytest.mark.parametrize("template_id", sorted(NODE_TEMPLATES))
def test_package_json_and_lock_agree_and_pin_every_version(template_id: str) -> None:
    root = scaffold_dir(template_id)
    package = json.loads((root / "package.json").read_text())
    lock = json.loads((root / "package-lock.json").read_text())
    assert lock["lockfileVersion"] == 3
    wanted = {**package.get("dependencies", {}), **package.get("devDependencies", {})}
    assert lock["packages"][""].get("dependencies", {}) == package.get("dependencies", {})
    assert lock["packages"][""].get("devDependencies", {}) == package.get("devDependencies", {})
    for name, version in wanted.items():
        assert version[0].isdigit(), f"{name} is not pinned: {version}"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    # The lock resolves from the public registry only.
    for entry in lock["packages"].values():
        resolved = entry.get("resolved")
        assert resolved is None or resolved.startswith("https://registry.npmjs.org/")


def test_nextjs_uses_the_pages_router_and_nuxt_4() -> None:
    nxt = json.loads((scaffold_dir("nextjs-developer") / "package.json").read_text())
    assert nxt["dependencies"]["next"].startswith("14.")
    assert (scaffold_dir("nextjs-developer") / "pages" / "_app.tsx").exists()
    assert not (scaffold_dir("nextjs-developer") / "app").exists()
    nuxt = json.loads((scaffold_dir("vue-developer") / "package.json").read_text())
    assert nuxt["dependencies"]["nuxt"].startswith("4.")
    assert "tailwindcss" in (scaffold_dir("vue-developer") / "nuxt.config.ts").read_text()


@needs_npm
@pytest.mark.parametrize("template_id", sorted(NODE_TEMPLATES))
def test_npm_ci_accepts_the_lock(template_id: str, tmp_path: Path) -> None:
    assert NPM is not None
    for rel in scaffold_files(template_id):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(scaffold_dir(template_id) / rel, tmp_path / rel)
    done = subprocess.run(
        [NPM, "ci", "--dry-run", "--ignore-scripts", "--no-audit", "--no-fund", "--offline"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    # --offline: the dry run needs no tarball; a lock out of sync fails with EUSAGE.
    assert "EUSAGE" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr


def test_the_scaffold_ships_with_the_package(tmp_path: Path) -> None:
    """hatch ships what git tracks under src/fragments; nothing here may be git-ignored."""
    for template_id in NODE_TEMPLATES:
        paths = [str(scaffold_dir(template_id) / rel) for rel in scaffold_files(template_id)]
        ignored = subprocess.run(
            ["git", "check-ignore", *paths], capture_output=True, text=True, check=False
        )
        assert ignored.stdout == "", ignored.stdout


def test_the_digest_changes_with_any_scaffold_file(scaffolds: Path) -> None:
    before = scaffold_digest("vue-developer")
    assert scaffold_digest("vue-developer") == before
    other = scaffold_digest("nextjs-developer")
    (scaffolds / "vue-developer" / "app" / "app.vue").write_text("<template>x</template>\n")
    changed = scaffold_digest("vue-developer")
    assert changed != before
    (scaffolds / "vue-developer" / "app" / "extra.css").write_text("")
    assert scaffold_digest("vue-developer") not in {before, changed}
    assert scaffold_digest("nextjs-developer") == other


def test_unknown_templates_are_refused(fresh_root: Path) -> None:
    settings = Settings(_env_file=None, sandbox_root=fresh_root)
    with pytest.raises(TemplateBuildError, match="not a Node template"):
        build_node_template(settings, "code-interpreter-v1")
    with pytest.raises(TemplateBuildError):
        node_template_dir(settings, "cobol")


def _fake_npm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, fail: bool = False) -> Path:
    """An `npm` on PATH that records its calls and makes a tiny node_modules (or fails)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "npm-calls"
    script = bin_dir / "npm"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {calls}\n'
        + ("echo boom >&2; exit 3\n" if fail else "mkdir -p node_modules/.bin\n")
    )
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return calls


def test_the_build_is_idempotent_and_owned_as_asked(
    fresh_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = _fake_npm(tmp_path, monkeypatch)
    settings = Settings(_env_file=None, sandbox_root=fresh_root)
    warmed: list[tuple[str, Path, Path]] = []

    def warm_up(tid: str, build: Path, final: Path, uid: int | None, gid: int | None) -> None:
        assert build != final
        assert final.is_dir()  # the empty mount point for the build folder
        assert not (build / MARKER).exists()
        warmed.append((tid, build, final))
        (build / ".next").mkdir()

    steps: list[tuple[str, int, int]] = []
    path = build_node_template(
        settings,
        "nextjs-developer",
        lambda s, d, n: steps.append((s, d, n)),
        uid=100_777,
        gid=100_778,
        warm_up=warm_up,
    )
    assert path == node_template_path(settings, "nextjs-developer")
    assert node_template_dir(settings, "nextjs-developer") == path
    assert node_template_dir(settings, "nextjs-developer", uid=100_777) == path
    assert node_template_dir(settings, "nextjs-developer", uid=1) is None
    assert (path / "pages" / "index.tsx").exists()
    assert (path / ".next").is_dir()
    assert (path / "pages" / "index.tsx").stat().st_uid == 100_777
    assert (path / "pages" / "index.tsx").stat().st_gid == 100_778
    assert calls.read_text().split() == [
        "ci",
        "--ignore-scripts",
        "--no-audit",
        "--no-fund",
        "--loglevel=error",
    ]
    assert [s[1] for s in steps] == [0, 1, 2, 3, 4]
    assert all(s[2] == 4 for s in steps)
    assert len(warmed) == 1
    assert not list(path.parent.glob(".build-*"))
    # A second build finds it: no npm, no warm-up.
    again = build_node_template(settings, "nextjs-developer", uid=100_777, warm_up=warm_up)
    assert again == path
    assert len(calls.read_text().splitlines()) == 1
    assert len(warmed) == 1
    # Another owner rebuilds in place of the old one.
    build_node_template(settings, "nextjs-developer", uid=100_779, warm_up=None)
    assert node_template_dir(settings, "nextjs-developer", uid=100_779) == path
    assert (path / "package.json").stat().st_uid == 100_779


def test_a_group_writable_build(
    fresh_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_npm(tmp_path, monkeypatch)
    settings = Settings(_env_file=None, sandbox_root=fresh_root)
    path = build_node_template(
        settings, "vue-developer", gid=100_778, group_writable=True, warm_up=None
    )
    assert (path / "app" / "app.vue").stat().st_mode & 0o060 == 0o060
    assert (path / "app").stat().st_mode & 0o2070 == 0o2070
    assert (path / "app" / "app.vue").stat().st_gid == 100_778


def test_a_half_built_folder_is_never_used(
    fresh_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(_env_file=None, sandbox_root=fresh_root)
    final = node_template_path(settings, "vue-developer")
    # A crash after the rename's target was created but before the marker: not used.
    final.mkdir(parents=True)
    (final / "package.json").write_text("{}")
    assert node_template_dir(settings, "vue-developer") is None
    (final / MARKER).write_text(json.dumps({"format": 1, "template": "vue-developer"}))
    assert node_template_dir(settings, "vue-developer") is None  # no digest: not ours

    # A failed install leaves neither the final folder nor a temporary one behind.
    _fake_npm(tmp_path, monkeypatch, fail=True)
    with pytest.raises(TemplateBuildError, match="boom"):
        build_node_template(settings, "vue-developer", warm_up=None)
    assert not final.exists()
    assert not list(final.parent.glob(".build-*"))

    # A failed warm-up too (and the empty mount point is removed).
    monkeypatch.undo()
    ok = tmp_path / "ok"
    ok.mkdir()
    _fake_npm(ok, monkeypatch)

    def broken(tid: str, build: Path, final: Path, uid: int | None, gid: int | None) -> None:
        raise TemplateBuildError("The dev server exited (status 1).")

    with pytest.raises(TemplateBuildError, match="exited"):
        build_node_template(settings, "vue-developer", warm_up=broken)
    assert not final.exists()
    assert not list(final.parent.glob(".build-*"))
    assert node_template_dir(settings, "vue-developer") is None


def test_dev_commands() -> None:
    root = Path("/var/tmp/fragments/templates/x")
    assert dev_command("nextjs-developer", root) == [
        f"{root}/node_modules/.bin/next",
        "dev",
        "-p",
        "3000",
        "-H",
        "127.0.0.1",
    ]
    assert dev_command("vue-developer", root, 3001)[1:] == [
        "dev",
        "--port",
        "3001",
        "--host",
        "127.0.0.1",
    ]


@needs_npm
@pytest.mark.slow
@pytest.mark.parametrize("template_id", sorted(NODE_TEMPLATES))
def test_a_real_build_serves_the_placeholder(template_id: str, fresh_root: Path) -> None:
    """The real thing: `npm ci` from the registry (~15-30 s with npm's cache) and a dev server
    warm-up at the final path (~8-15 s). Needs the npm registry, hence slow."""
    settings = Settings(_env_file=None, sandbox_root=fresh_root)
    path = build_node_template(settings, template_id, uid=100_901, gid=100_901)
    assert node_template_dir(settings, template_id) == path
    binary = "next" if template_id == "nextjs-developer" else "nuxt"
    assert (path / "node_modules" / ".bin" / binary).exists()
    cache = path / (".next/cache" if template_id == "nextjs-developer" else ".nuxt")
    assert cache.is_dir()
    assert cache.stat().st_uid == 100_901
