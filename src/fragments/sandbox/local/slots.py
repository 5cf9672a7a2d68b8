"""Slots: one uid per sandbox (`sandbox_uid_base + slot`), reserved across processes with a
lock file, so that two apps on one machine never share one."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import IO


class SlotLocks:
    """The slots this process holds, each by an exclusive lock on `<folder>/<uid>.lock`."""

    def __init__(self, folder: Path, uid_base: int, count: int) -> None:
        self.folder = folder
        self.uid_base = uid_base
        self.count = count
        self._held: dict[int, IO[str]] = {}

    def take(self) -> int | None:
        """A free slot, now held by this process; None when every slot is taken."""
        for slot in range(self.count):
            if slot in self._held:
                continue
            handle = open(self.folder / f"{self.uid_base + slot}.lock", "w")  # noqa: SIM115
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            self._held[slot] = handle
            return slot
        return None

    def release(self, slot: int) -> None:
        handle = self._held.pop(slot, None)
        if handle is not None:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def release_all(self) -> None:
        for slot in list(self._held):
            self.release(slot)
