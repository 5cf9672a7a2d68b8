"""Download a fragment as a ZIP: every file of the fragment, the dependency manifest its
template needs (requirements.txt, or the Node scaffold with its package.json), the
conversation's data files, and a README saying how to run it.

GET /api/conversations/{id}/versions/{fragment_id}/download serves a stored version (the
caller's, or one shared with their team); POST /api/export serves a fragment sent in the body
(a chat that kept nothing, as an anonymous caller's)."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from pydantic import BaseModel

import fragments.sandbox.templates as template_files
from fragments.auth.deps import CurrentUser, SessionDep, SignedInUser
from fragments.errors import NotFound
from fragments.fragment_rules import fragment_files
from fragments.schemas import Fragment
from fragments.store import repos, workspace
from fragments.templates import Template, get_template

router = APIRouter(tags=["export"])

_ZIP: dict[int | str, dict[str, Any]] = {
    200: {"description": "The project as a ZIP file.", "content": {"application/zip": {}}}
}


class ZipResponse(Response):
    media_type = "application/zip"


_SCAFFOLDS = Path(template_files.__file__).parent / "node"
# Scaffold files the fragment's own package list would contradict, or that only matter inside
# our sandboxes.
_SKIP = frozenset({"package-lock.json"})


def _project_files(fragment: Fragment, template: Template) -> dict[str, str]:
    files = dict(fragment_files(fragment))
    if not files:
        files[fragment.file_path or template.file] = fragment.code
    return files


def _requirements(fragment: Fragment, template: Template) -> str:
    # ipykernel and nbformat serve our notebook kernel, not the script.
    wanted = [p for p in template.packages if p not in ("ipykernel", "nbformat")]
    for dep in fragment.additional_dependencies:
        if dep.strip() and dep.strip() not in wanted:
            wanted.append(dep.strip())
    return "".join(f"{p}\n" for p in wanted)


def _npm_spec(dep: str) -> tuple[str, str]:
    """`name` or `name@range` (scoped names keep their leading @)."""
    at = dep.rfind("@")
    if at > 0:
        return dep[:at], dep[at + 1 :] or "latest"
    return dep, "latest"


def _node_scaffold(fragment: Fragment, template: Template) -> dict[str, str]:
    root = _SCAFFOLDS / template.id
    files: dict[str, str] = {}
    if root.is_dir():
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root).as_posix()
            if path.is_file() and rel not in _SKIP and "node_modules" not in rel:
                files[rel] = path.read_text()
    manifest: dict[str, Any] = json.loads(files.get("package.json", "{}") or "{}")
    manifest.setdefault("private", True)
    manifest.setdefault("scripts", {"dev": "next dev" if "next" in template.id else "nuxt dev"})
    deps = manifest.setdefault("dependencies", {})
    for dep in fragment.additional_dependencies:
        if dep.strip():
            name, version = _npm_spec(dep.strip())
            deps.setdefault(name, version)
    files["package.json"] = json.dumps(manifest, indent=2) + "\n"
    return files


def _how_to_run(template: Template, entry: str) -> str:
    if template.language == "node":
        return f"npm install\nnpm run dev -- --port {template.port or 3000}"
    install = "python -m venv .venv && . .venv/bin/activate\npip install -r requirements.txt"
    if template.id == "streamlit-developer":
        return f"{install}\nstreamlit run {entry} --server.port {template.port}"
    return f"{install}\npython {entry}"


def _readme(fragment: Fragment, template: Template, entry: str, data: list[str]) -> str:
    title = fragment.title or "Fragment"
    lines = [f"# {title}", ""]
    if fragment.description:
        lines += [fragment.description, ""]
    lines += [
        f"Made with Fragments ({template.name}).",
        "",
        "## Run it",
        "",
        "```sh",
        _how_to_run(template, entry),
        "```",
        "",
    ]
    if template.port:
        lines += [f"Then open http://localhost:{template.port}/.", ""]
    if data:
        lines += ["Data files (read by the code by these relative paths): " + ", ".join(data), ""]
    return "\n".join(lines)


def build_zip(fragment: Fragment, data_files: list[tuple[str, bytes]]) -> bytes:
    """The project's ZIP: the template's manifest and scaffold, then the fragment's files (they
    win over the scaffold's), the data files, and a README (unless the fragment wrote one)."""
    template = get_template(fragment.template)
    own = _project_files(fragment, template)
    entry = fragment.file_path if fragment.file_path in own else next(iter(own))
    files: dict[str, str | bytes] = {}
    if template.language == "node":
        files.update(_node_scaffold(fragment, template))
    else:
        files["requirements.txt"] = _requirements(fragment, template)
    files.update(own)
    for name, data in data_files:
        files.setdefault(name, data)
    files.setdefault("README.md", _readme(fragment, template, entry, [n for n, _ in data_files]))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, content in files.items():
            archive.writestr(path, content)
    return buffer.getvalue()


def _attachment(fragment: Fragment, suffix: str, body: bytes) -> Response:
    slug = re.sub(r"[^a-z0-9]+", "-", (fragment.title or "fragment").lower()).strip("-")
    name = f"{slug or 'fragment'}{suffix}.zip"
    return ZipResponse(
        body,
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


@router.get(
    "/api/conversations/{conversation_id}/versions/{fragment_id}/download",
    response_class=ZipResponse,
    responses=_ZIP,
)
async def download_version(
    conversation_id: str, fragment_id: str, user: SignedInUser, session: SessionDep
) -> Response:
    """A stored version as a ZIP, with the conversation's data files."""
    row = await repos.visible_conversation(session, user.identity, conversation_id)
    if row is None:
        raise NotFound("There is no such conversation.")
    version = await workspace.version(session, row, fragment_id[:32])
    if version is None:
        raise NotFound("There is no such version in this conversation.")
    fragment = Fragment.model_validate(version.body)
    data = [(f.name, f.content) for f in await workspace.files(session, row.id, with_content=True)]
    return _attachment(fragment, f"-v{version.version}", build_zip(fragment, data))


class ExportRequest(BaseModel):
    fragment: Fragment


@router.post("/api/export", response_class=ZipResponse, responses=_ZIP)
async def export_fragment(body: ExportRequest, who: CurrentUser) -> Response:
    """A fragment sent in the body as a ZIP (nothing stored is read)."""
    del who  # resolved so a bad token is refused as everywhere; anyone may zip their own code
    return _attachment(body.fragment, "", build_zip(body.fragment, []))
