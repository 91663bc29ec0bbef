"""Which temporary upload names this client put on a server, kept where a kill cannot lose them.

A backend that uploads to a temporary name and renames it into place (FTP) leaves that name
behind when the process is killed mid-upload. Only the client that made such a name may
remove it: another client's upload in progress looks just the same. So each mount process
appends every name to its own journal in the state directory *before* the upload starts
(``+ name``) and again when the name is gone (``- name``); a later mount of the same server
removes the names that the journals of dead processes still hold.

The journal is appended to, not synced: it survives a killed process (the kernel keeps the
writes), not a machine crash. It is emptied whenever no upload is under way, so it stays small.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import threading
from pathlib import Path

log = logging.getLogger(__name__)
MAX_ABANDONED = 10_000  # names whose removal failed, kept for a retry (bounded)
_HOST = socket.gethostname().replace("/", "_")


class UploadLog:
    """One process's journal of temporary names on one server; thread-safe (uploads run in
    worker threads)."""

    def __init__(self, state_dir: Path, *server: object) -> None:
        key = hashlib.sha256(repr(server).encode("utf-8", "surrogatepass")).hexdigest()[:24]
        self.directory = state_dir / "uploads" / key
        self._lock = threading.Lock()
        self._live: set[str] = set()  # uploads under way now
        self._abandoned: set[str] = set()  # ours, not under way, not yet removed
        self._dead: dict[Path, set[str]] = {}  # journals of dead processes → names left
        self._fd: int | None = None
        self._name = ""
        self._load()

    def _load(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            journals = list(self.directory.glob("*.log"))
        except OSError as e:
            log.warning("cannot keep a journal of uploads in %s: %s", self.directory, e)
            return
        me = self._name = f"{_HOST}-{os.getpid()}.log"
        for journal in journals:
            host, _, pid = journal.stem.rpartition("-")
            if host != _HOST:  # a state dir shared between machines: not ours to judge
                continue
            if journal.name == me or (pid.isdigit() and not _alive(int(pid))):
                names = _replay(journal)
                if journal.name == me:  # a dead process of the same pid: adopt, start afresh
                    self._abandoned |= names
                    journal.unlink(missing_ok=True)
                elif names:
                    self._dead[journal] = names
                else:
                    journal.unlink(missing_ok=True)
        try:
            self._fd = os.open(self.directory / me, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as e:
            log.warning("cannot keep a journal of uploads in %s: %s", self.directory, e)
        if self._abandoned:
            self._append("".join(f"+ {n}\n" for n in self._abandoned))

    def started(self, name: str) -> None:
        """Call before the server may create ``name``."""
        with self._lock:
            self._live.add(name)
            self._append(f"+ {name}\n")

    def ended(self, name: str, *, removed: bool) -> None:
        """The upload to ``name`` is over: renamed or removed (``removed``), or left behind
        (a failed removal: ``leftovers`` offers it again)."""
        with self._lock:
            self._live.discard(name)
            if removed:
                self._abandoned.discard(name)
                for names in self._dead.values():
                    names.discard(name)
                self._append(f"- {name}\n")
            elif len(self._abandoned) < MAX_ABANDONED:
                self._abandoned.add(name)
            if not self._live and not self._abandoned and self._fd is not None:
                os.ftruncate(self._fd, 0)  # nothing to remember: the journal stays small

    @property
    def has_leftovers(self) -> bool:
        return bool(self._abandoned) or any(self._dead.values())

    def leftovers(self) -> list[str]:
        """Names this client made that no upload uses any more: to be removed from the server."""
        with self._lock:
            left = set(self._abandoned)
            for names in self._dead.values():
                left |= names
            return sorted(left - self._live)

    def forget_finished_journals(self) -> None:
        """Remove the dead processes' journals whose every name is gone."""
        with self._lock:
            for journal, names in list(self._dead.items()):
                if not names:
                    journal.unlink(missing_ok=True)
                    del self._dead[journal]

    def _append(self, text: str) -> None:
        if self._fd is None:
            return
        try:
            os.write(self._fd, text.encode("utf-8", "surrogateescape"))
        except OSError as e:  # a full state disk: the upload goes on, unrecorded
            log.debug("upload journal: %s", e)

    def close(self) -> None:
        """At unmount: an empty journal is removed; one with names is kept for the next mount."""
        with self._lock:
            if self._fd is None:
                return
            os.close(self._fd)
            self._fd = None
            if not self._live and not self._abandoned:
                (self.directory / self._name).unlink(missing_ok=True)


def _replay(journal: Path) -> set[str]:
    """The names a journal holds that were never marked gone."""
    names: set[str] = set()
    try:
        text = journal.read_bytes().decode("utf-8", "surrogateescape")
    except OSError:
        return names
    for line in text.splitlines():
        sign, _, name = line.partition(" ")
        if sign == "+" and name:
            names.add(name)
        elif sign == "-":
            names.discard(name)
    return names


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
