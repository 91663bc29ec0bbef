"""Local files that hold what is being written until it is committed: disk, never RAM."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in directory.glob("w-*"):  # left by a mount that died; nothing refers to them
            stale.unlink(missing_ok=True)

    def create(self) -> tuple[int, str]:
        """A new empty spool file: (fd opened read-write, path)."""
        fd, path = tempfile.mkstemp(prefix="w-", dir=self.directory)
        return fd, path

    @staticmethod
    def discard(fd: int, path: str) -> None:
        os.close(fd)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
