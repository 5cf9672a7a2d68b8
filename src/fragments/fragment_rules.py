"""What makes a fragment's files safe to write: the same rules for the model's answer (chat)
and for a run (sandbox). A broken rule is a `BadRequest` with the code `invalid_path`."""

from __future__ import annotations

from pathlib import PurePosixPath

from fragments.errors import BadRequest
from fragments.schemas import Fragment


def check_path(path: str) -> str:
    """A fragment file path, or BadRequest: relative, inside the workspace, no NUL."""
    if "\x00" in path:
        raise BadRequest("A file path contains a NUL character.", code="invalid_path")
    if len(path) > 1024:
        raise BadRequest("A file path is longer than 1024 characters.", code="invalid_path")
    shown = path[:80]
    if path.startswith(("/", "\\", "~")) or PurePosixPath(path).is_absolute():
        raise BadRequest(
            f"The file path '{shown}' is absolute; paths must be relative to the app's folder.",
            code="invalid_path",
        )
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if ".." in parts:
        raise BadRequest(
            f"The file path '{shown}' leaves the app's folder ('..' is not allowed).",
            code="invalid_path",
        )
    return path


def fragment_files(fragment: Fragment) -> list[tuple[str, str]]:
    """`files` as (path, content) pairs, every path checked (and `file_path` too)."""
    if fragment.file_path:
        check_path(fragment.file_path)
    files: list[tuple[str, str]] = []
    for entry in fragment.files:
        if not entry.file_path.strip() or entry.file_path.endswith("/"):
            raise BadRequest(
                "A file in 'files' comes without a path; each one needs its file_path.",
                code="invalid_path",
            )
        files.append((check_path(entry.file_path), entry.file_content))
    return files
