"""The provider-side SSE decoder: bytes split anywhere must give the same payloads."""

from __future__ import annotations

import pytest

from fragments.llm.sse import SSEDecoder

STREAM = (
    b": a comment\n"
    b"event: message_start\n"
    b'data: {"a": 1}\n'
    b"\n"
    b"id: 7\n"
    b"data:no-space\n"
    b"\n"
    b"data: line one\n"
    b"data: line two\n"
    b"\n"
    b"data: [DONE]\n"
    b"\n"
)
EXPECTED = [b'{"a": 1}', b"no-space", b"line one\nline two", b"[DONE]"]


def decode_in_pieces(data: bytes, size: int) -> list[bytes]:
    decoder = SSEDecoder()
    out: list[bytes] = []
    for i in range(0, len(data), size):
        out += decoder.feed(data[i : i + size])
    return out + decoder.flush()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, 10_000])
@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_any_split_any_line_ending(size: int, newline: bytes) -> None:
    data = STREAM.replace(b"\n", newline)
    assert decode_in_pieces(data, size) == EXPECTED


def test_a_last_event_without_a_blank_line_is_flushed() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"x": 1}\n\ndata: {"y"') == [b'{"x": 1}']
    assert decoder.feed(b": 2}") == []
    assert decoder.flush() == [b'{"y": 2}']


def test_blank_lines_alone_make_no_events() -> None:
    assert decode_in_pieces(b"\n\n\r\n\nevent: ping\n\n", 3) == []
