"""What makes an uploaded data file acceptable, and what the model is told about it: the name
(sanitised; folders and `..` refused), the kind (by extension, checked against the content),
and a preview (the first lines of a text file, a reading hint for a binary one)."""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Literal

from fragments.errors import BadRequest, FragmentsError

Kind = Literal["csv", "tsv", "json", "text", "excel", "parquet"]

# extension -> (kind, media type)
EXTENSIONS: dict[str, tuple[Kind, str]] = {
    "csv": ("csv", "text/csv"),
    "tsv": ("tsv", "text/tab-separated-values"),
    "json": ("json", "application/json"),
    "jsonl": ("text", "application/jsonl"),
    "txt": ("text", "text/plain"),
    "md": ("text", "text/markdown"),
    "xlsx": ("excel", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    "xls": ("excel", "application/vnd.ms-excel"),
    "parquet": ("parquet", "application/vnd.apache.parquet"),
}
TEXT_KINDS = frozenset({"csv", "tsv", "json", "text"})
PREVIEW_LINES = 5
PREVIEW_LINE_CHARS = 200
MAX_NAME = 100


class UnsupportedFileType(FragmentsError):
    status_code = 415
    code = "unsupported_file_type"


@dataclass(frozen=True)
class CheckedFile:
    name: str
    kind: Kind
    media_type: str
    preview: str


def safe_name(raw: str) -> str:
    """A plain file name for the workspace: folders, `..` and control characters are refused,
    anything else outside [A-Za-z0-9._-] becomes `_`; hidden names lose their leading dots."""
    name = unicodedata.normalize("NFKC", raw or "").strip()
    if not name:
        raise BadRequest("Name the file (?name=data.csv).", code="invalid_name")
    if "/" in name or "\\" in name or name in (".", "..") or ".." in name.split("."):
        raise BadRequest(
            f"'{name[:80]}' is not a plain file name: folders and '..' are not allowed.",
            code="invalid_name",
        )
    if any(unicodedata.category(c) == "Cc" for c in name):
        raise BadRequest("A file name contains a control character.", code="invalid_name")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", name).lstrip(".") or "file"
    stem, dot, ext = name.rpartition(".")
    if dot and len(name) > MAX_NAME:
        name = stem[: MAX_NAME - len(ext) - 1] + "." + ext
    return name[:MAX_NAME]


def check_file(raw_name: str, data: bytes) -> CheckedFile:
    """The sanitised name, kind, media type and preview of an upload; 400 or 415 otherwise."""
    name = safe_name(raw_name)
    ext = name.rpartition(".")[2].lower() if "." in name else ""
    if ext not in EXTENSIONS:
        allowed = ", ".join(f".{e}" for e in EXTENSIONS)
        raise UnsupportedFileType(f"'{name}' is not a data file this app takes ({allowed}).")
    if not data:
        raise BadRequest(f"'{name}' is empty.", code="empty_file")
    kind, media_type = EXTENSIONS[ext]
    if kind in TEXT_KINDS:
        return CheckedFile(name, kind, media_type, _text_preview(name, kind, data))
    if kind == "excel" and not data.startswith((b"PK\x03\x04", b"\xd0\xcf\x11\xe0")):
        raise UnsupportedFileType(f"'{name}' is not an Excel workbook.")
    if kind == "parquet" and not (data.startswith(b"PAR1") and data.endswith(b"PAR1")):
        raise UnsupportedFileType(f"'{name}' is not a Parquet file.")
    hint = (
        f"an Excel workbook: pandas.read_excel('{name}') (add openpyxl to the dependencies)"
        if kind == "excel"
        else f"a Parquet file: pandas.read_parquet('{name}') (add pyarrow to the dependencies)"
    )
    return CheckedFile(name, kind, media_type, hint)


def _text_preview(name: str, kind: Kind, data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UnsupportedFileType(f"'{name}' is not UTF-8 text.") from None
    if "\x00" in text:
        raise UnsupportedFileType(f"'{name}' is not a text file (it contains NUL bytes).")
    if kind == "json":
        try:
            json.loads(text)
        except ValueError:
            raise UnsupportedFileType(f"'{name}' is not valid JSON.") from None
    lines = text.splitlines()[:PREVIEW_LINES]
    return "\n".join(
        line if len(line) <= PREVIEW_LINE_CHARS else line[: PREVIEW_LINE_CHARS - 1] + "…"
        for line in lines
    )


def human_size(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / (1024 * 1024):.1f} MB"


@dataclass(frozen=True)
class FileNote:
    """What the model is told about one data file."""

    name: str
    size: int
    kind: str
    preview: str
