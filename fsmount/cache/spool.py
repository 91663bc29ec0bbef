"""Local files that hold what is being written until it is committed: disk, never RAM."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


class Spool:
    """One directory per mount process (``spool/<pid>``), so mounts sharing a cache dir never
    touch each other's spools; directories of processes that are gone are removed."""

    def __init__(self, base: Path) -> None:
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        for old in base.iterdir():
            if old.name.isdigit() and not _alive(int(old.name)):
                shutil.rmtree(old, ignore_errors=True)
        self.directory = base / str(os.getpid())
        self.directory.mkdir(exist_ok=True, mode=0o700)

    def create(self) -> tuple[int, str]:
        """A new empty spool file: (fd opened read-write, path)."""
        try:
            return tempfile.mkstemp(prefix="w-", dir=self.directory)
        except FileNotFoundError:  # the cache directory was removed by hand
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            return tempfile.mkstemp(prefix="w-", dir=self.directory)

    @staticmethod
    def discard(fd: int, path: str) -> None:
        os.close(fd)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
