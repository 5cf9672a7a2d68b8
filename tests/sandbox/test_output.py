"""The output collector on its own: caps, notices, MIME mapping, tracebacks."""

from __future__ import annotations

from fragments.sandbox.local.output import OutputCollector


def test_streams_are_cut_at_the_cap_with_a_notice() -> None:
    out = OutputCollector(cap=10)
    out.stream("stdout", "12345")
    out.stream("stdout", "67890abc")
    out.stream("stderr", "e")
    out.stream("stdout", "x" * 3 * 2**20)
    out.finish()
    assert out.stdout[:2] == ["12345", "67890"]
    assert out.stdout[2] == "\n[output truncated: 3.0 MB more not shown]\n"
    assert out.stderr == ["e"]


def test_flooding_is_detected_far_past_the_cap() -> None:
    out = OutputCollector(cap=10, flood_factor=8)
    out.stream("stdout", "y" * 85)
    assert not out.flooded
    out.stream("stdout", "y" * 10)
    assert out.flooded


def test_display_data_maps_mime_types_and_caps_results() -> None:
    out = OutputCollector(cap=100)
    out.display({"image/png": "iVBOR\n", "text/plain": ["<Figure>"]}, main=False)
    out.display({"application/json": {"a": 1}, "text/html": "<b>x</b>"}, main=True)
    out.display({"text/plain": "z" * 200}, main=False)
    out.finish()
    first, second = out.results
    assert first.png == "iVBOR"
    assert first.text == "<Figure>"
    assert second.json_ == {"a": 1}
    assert second.html == "<b>x</b>"
    assert second.is_main_result
    assert out.stderr == ["\n[display output truncated: 1 more results (0.0 MB) not shown]\n"]


def test_tracebacks_lose_ansi_codes_and_the_kernels_own_frames() -> None:
    out = OutputCollector(cap=100)
    out.set_error(
        "OutputLimitError",
        "\x1b[31mstop\x1b[0m",
        [
            "\x1b[0;31m----\x1b[0m",
            "Cell \x1b[0;32mIn[1], line 3\x1b[0m",
            "File /opt/fragments/kernel.py:47, in write(self, string)",
            "\x1b[0;31mOutputLimitError\x1b[0m: stop",
        ],
    )
    assert out.error is not None
    assert out.error.value == "stop"
    assert out.error.traceback == "----\nCell In[1], line 3\nOutputLimitError: stop"
