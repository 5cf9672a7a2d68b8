"""The kernel's entry script, run by the template's Python inside the sandbox.

It is ipykernel's launcher plus an output cap enforced where the output is produced: beyond
FRAGMENTS_OUTPUT_CAP characters per stream and cell, writes are counted instead of sent, a
notice with the amount is printed when the cell ends, and a cell that keeps printing far past the
cap is stopped with OutputLimitError. The app enforces the same cap on what it receives (and a
hard message-size limit), so a cell that undoes this only loses the exact count in the notice.
It is kept as a string (written once under the sandbox root) because it imports ipykernel,
which exists only in the template environment.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

BOOT_SOURCE = '''\
"""Fragments sandbox kernel: ipykernel with an output cap."""
import os
import sys
import threading

if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

CAP = int(os.environ.pop("FRAGMENTS_OUTPUT_CAP", "0") or 0)
FLOOD = CAP * 8


class OutputLimitError(Exception):
    """The cell printed far more than the output limit."""


def _install_cap(shell):
    from ipykernel import iostream

    original = iostream.OutStream.write
    kept = {}
    dropped = {}
    writes = {}

    def write(self, string):
        if not isinstance(string, str) or CAP <= 0:
            return original(self, string)
        name = self.name
        used = kept.get(name, 0)
        if used + len(string) <= CAP:
            kept[name] = used + len(string)
            return original(self, string)
        room = max(0, CAP - used)
        if room:
            kept[name] = CAP
            original(self, string[:room])
        before = dropped.get(name, 0)
        dropped[name] = before + len(string) - room
        writes[name] = writes.get(name, 0) + 1
        # One huge print is just cut; a cell that keeps printing past the cap is stopped.
        if (
            before > FLOOD
            and writes[name] > 16
            and threading.current_thread() is threading.main_thread()
        ):
            raise OutputLimitError(
                f"The cell printed more than {FLOOD / 2**20:g} MB and was stopped; "
                f"output is limited to {CAP / 2**20:g} MB per stream."
            )
        return len(string)

    def reset(*_):
        kept.clear()
        dropped.clear()
        writes.clear()

    def notice(*_):
        for name, count in list(dropped.items()):
            stream = sys.stderr if name == "stderr" else sys.stdout
            mb = count / 2**20
            size = f"{mb:.1f} MB" if mb < 10 else f"{mb:.0f} MB"
            try:
                stream.flush()
                original(stream, f"\\n[output truncated: {size} more not shown]\\n")
                stream.flush()
            except Exception:
                pass
        reset()

    iostream.OutStream.write = write
    shell.events.register("pre_run_cell", reset)
    shell.events.register("post_run_cell", notice)


def main():
    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    app.initialize(sys.argv[1:])
    _install_cap(app.shell)
    app.start()


if __name__ == "__main__":
    main()
'''


def write_boot_script(root: Path) -> Path:
    """Write the script once under the sandbox root (world-readable); return its path."""
    digest = hashlib.sha256(BOOT_SOURCE.encode()).hexdigest()[:12]
    folder = root / "lib"
    folder.mkdir(mode=0o755, exist_ok=True)
    path = folder / f"kernel-{digest}.py"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(BOOT_SOURCE)
        tmp.chmod(0o644)
        tmp.rename(path)
    return path
