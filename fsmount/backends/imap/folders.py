"""IMAP folder names ↔ directory paths.

A folder ``Archive/2024`` (server delimiter ``/``) is the path ``("Archive", "2024")``;
imapclient has already decoded modified UTF-7, so components are plain text. A parent that
the server lists as ``\\Noselect`` (or does not list at all) is a plain directory that holds
no messages. Special-use flags (RFC 6154: ``\\Sent``, ``\\Trash`` …) are kept so the backend
can find the Trash and the outbox its Sent folder, and so users see them as an xattr.

Unusable names (an empty component from ``a//b`` or a trailing delimiter) are skipped with a
debug message rather than shown as something that would not round-trip; ``.``, ``..``, ``/``
and control characters are left to the VFS, which shows them with look-alike characters.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

Path = tuple[str, ...]

SPECIAL_USE = (b"\\All", b"\\Archive", b"\\Drafts", b"\\Flagged", b"\\Junk", b"\\Sent", b"\\Trash")


@dataclass(frozen=True, slots=True)
class Folder:
    name: str  # the server's name (decoded from modified UTF-7)
    flags: frozenset[bytes]  # LIST attributes, lower-cased for comparisons
    special: str | None  # "\\Sent", "\\Trash" … or None

    @property
    def selectable(self) -> bool:
        return b"\\noselect" not in self.flags and b"\\nonexistent" not in self.flags


@dataclass
class FolderTree:
    """The folder list as a directory tree, fetched with one ``LIST "" "*"``."""

    delimiter: str | None
    folders: dict[Path, Folder]  # every listed folder (selectable or not)
    children: dict[Path, set[str]]  # directory → names of its subdirectories
    fetched: float = field(default_factory=time.monotonic)

    @classmethod
    def build(cls, listing: Iterable[tuple[tuple[bytes, ...], bytes | str | None, str]]
              ) -> FolderTree:
        delimiter: str | None = None
        folders: dict[Path, Folder] = {}
        children: dict[Path, set[str]] = {(): set()}
        for flags, delim, name in listing:
            if isinstance(name, bytes):  # not decodable as modified UTF-7: keep the bytes
                name = name.decode("utf-8", "surrogateescape")
            if isinstance(delim, bytes):
                delim = delim.decode("ascii", "replace")
            if delim:
                delimiter = delim
            path = split_name(name, delim or None)
            if path is None:
                log.debug("skipping folder %r: no usable directory path", name)
                continue
            lowered = frozenset(f.lower() for f in flags)
            special = next((s.decode() for s in SPECIAL_USE if s.lower() in lowered), None)
            folders[path] = Folder(name, lowered, special)
            for depth in range(len(path)):
                children.setdefault(path[:depth], set()).add(path[depth])
                children.setdefault(path[: depth + 1], set())
        return cls(delimiter, folders, children)

    def is_dir(self, path: Path) -> bool:
        return path in self.children

    def folder(self, path: Path) -> Folder | None:
        """The selectable folder shown at ``path``, if any (None for a mere parent)."""
        f = self.folders.get(path)
        return f if f is not None and f.selectable else None

    def name_for(self, path: Path) -> str:
        """The server name a new folder at ``path`` gets (for CREATE and RENAME)."""
        if len(path) > 1 and not self.delimiter:
            raise ValueError("this server has no folder hierarchy")
        if any(self.delimiter and self.delimiter in part for part in path):
            raise ValueError(f"a folder name cannot contain {self.delimiter!r} on this server")
        return (self.delimiter or "").join(path)

    def special(self, use: str) -> Path | None:
        """The folder with special-use flag ``use`` (``\\Trash``), else one named like it."""
        for path, f in self.folders.items():
            if f.special == use and f.selectable:
                return path
        plain = use.lstrip("\\").lower()
        for path, f in self.folders.items():
            if len(path) == 1 and path[0].lower() == plain and f.selectable:
                return path
        return None


def split_name(name: str, delimiter: str | None) -> Path | None:
    parts = tuple(name.split(delimiter)) if delimiter else (name,)
    if not parts or any(p == "" for p in parts):
        return None
    return parts
