"""The fragment rules both the chat (the model's answer) and the sandbox (a run) apply."""

from __future__ import annotations

import pytest

from fragments.errors import BadRequest
from fragments.fragment_rules import check_path, fragment_files
from fragments.schemas import FileEntry, Fragment


@pytest.mark.parametrize("path", ["app.py", "src/app/page.tsx", "a/./b.py", "..hidden/x.py"])
def test_relative_paths_inside_the_folder_pass(path: str) -> None:
    assert check_path(path) == path


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/etc/passwd", "absolute"),
        ("\\windows\\x.py", "absolute"),
        ("~/x.py", "absolute"),
        ("../x.py", "'..'"),
        ("a/../../x.py", "'..'"),
        ("a\\..\\..\\x.py", "'..'"),
        ("a\x00b.py", "NUL"),
        ("a" * 1025, "1024"),
    ],
)
def test_paths_that_leave_the_folder_are_refused(path: str, words: str) -> None:
    with pytest.raises(BadRequest) as caught:
        check_path(path)
    assert caught.value.code == "invalid_path"
    assert words in caught.value.detail


def test_files_come_back_checked_and_in_order() -> None:
    fragment = Fragment(
        file_path="app.py",
        files=[FileEntry(file_path="app.py", file_content="a"), FileEntry(file_path="b/c.py")],
    )
    assert fragment_files(fragment) == [("app.py", "a"), ("b/c.py", "")]


@pytest.mark.parametrize(
    "fragment",
    [
        Fragment(files=[FileEntry(file_path="", file_content="x")]),
        Fragment(files=[FileEntry(file_path="  ", file_content="x")]),
        Fragment(files=[FileEntry(file_path="src/", file_content="x")]),
        Fragment(file_path="../app.py"),
        Fragment(files=[FileEntry(file_path="/tmp/x.py", file_content="x")]),
    ],
)
def test_a_fragment_with_a_bad_file_is_refused(fragment: Fragment) -> None:
    with pytest.raises(BadRequest) as caught:
        fragment_files(fragment)
    assert caught.value.code == "invalid_path"
