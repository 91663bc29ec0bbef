"""Flags and folder facts as extended attributes (``user.imap.*``)."""
from __future__ import annotations

import logging
import re

from imapclient import IMAPClient

from ...errors import InvalidArgument, NotFound, NotPermitted, Unsupported
from ..base import Entry, Path
from .folders import Folder, FolderTree


log = logging.getLogger(__name__)

BOOL_FLAGS = {"seen": "\\Seen", "flagged": "\\Flagged", "answered": "\\Answered",
              "draft": "\\Draft"}


class ImapFlags:
    """Extended attributes; mixed into ``ImapBackend``."""

    # -- extended attributes -------------------------------------------------------------

    async def get_xattrs(self, path: Path) -> dict[str, bytes]:
        tree = await self._folders()
        if tree.is_dir(path):
            return await self._folder_xattrs(path, tree)
        entry, folder = await self._message(path, tree)
        flags = await self._get_flags(path, entry, folder)
        values = {"imap.flags": b" ".join(flags)}
        lowered = {f.lower() for f in flags}
        for name, flag in BOOL_FLAGS.items():
            values[f"imap.{name}"] = b"1" if flag.lower().encode() in lowered else b"0"
        values["imap.uid"] = str(entry.identity[1]).encode()
        values["imap.uidvalidity"] = str(entry.identity[0]).encode()
        return values

    async def xattr_names(self, path: Path) -> list[str]:
        """A message's names are always the same: no FETCH FLAGS per file ``ls -l`` shows."""
        tree = await self._folders()
        if tree.is_dir(path):
            info = tree.folders.get(path)
            if info is None:
                return []
            return ["imap.name", *(["imap.special-use"] if info.special else []),
                    *(["imap.messages", "imap.unseen"] if info.selectable else [])]
        return ["imap.flags", *(f"imap.{name}" for name in BOOL_FLAGS), "imap.uid",
                "imap.uidvalidity"]

    async def _folder_xattrs(self, path: Path, tree: FolderTree) -> dict[str, bytes]:
        info = tree.folders.get(path)
        if info is None:
            return {}
        values = {"imap.name": info.name.encode("utf-8", "surrogateescape")}
        if info.special:
            values["imap.special-use"] = info.special.encode()
        if info.selectable:
            status = await self._run(
                lambda conn: self._status(conn, info.name, ("MESSAGES", "UNSEEN")),
                f"STATUS {info.name}")
            values["imap.messages"] = str(status.get(b"MESSAGES", 0)).encode()
            values["imap.unseen"] = str(status.get(b"UNSEEN", 0)).encode()
        return values

    async def _get_flags(self, path: Path, entry: Entry, folder: Folder) -> tuple[bytes, ...]:
        def fetch(conn: IMAPClient) -> tuple[bytes, ...]:
            self._check_validity(conn, folder.name, entry.identity[0], write=False)
            log.debug("%s: UID FETCH %d (FLAGS)", self.label, entry.identity[1])
            data = conn.fetch([entry.identity[1]], ["FLAGS"]).get(entry.identity[1])
            if data is None:
                raise NotFound(f"message {entry.identity[1]} is no longer in {folder.name}")
            return tuple(f for f in data.get(b"FLAGS", ()) if f.lower() != b"\\recent")

        return await self._run(fetch, f"FETCH FLAGS {entry.identity[1]}")

    async def set_xattr(self, path: Path, name: str, value: bytes) -> None:
        self._writable()
        tree = await self._folders()
        if tree.is_dir(path):
            raise NotPermitted(f"{name} cannot be set on a folder")
        entry, folder = await self._message(path, tree)
        uid = entry.identity[1]
        if name == "imap.flags":
            flags = [f for f in value.decode("utf-8", "replace").split() if f.lower() != "\\recent"]
            if any(not re.fullmatch(r"\\?[!#$&'+\-.0-9:<>?@A-Z^_`a-z|~]+", f) for f in flags):
                raise InvalidArgument(f"not a list of IMAP flags: {value!r}")
            op, what = "set", flags
        elif name.startswith("imap.") and name[5:] in BOOL_FLAGS:
            on = value.strip().lower()
            if on not in (b"1", b"0", b"true", b"false", b"yes", b"no"):
                raise InvalidArgument(f"{name} takes 1 or 0, not {value!r}")
            op = "add" if on in (b"1", b"true", b"yes") else "remove"
            what = [BOOL_FLAGS[name[5:]]]
        elif name in ("imap.uid", "imap.uidvalidity"):
            raise NotPermitted(f"{name} is read-only")
        else:
            raise Unsupported(f"unknown attribute {name} (see imap.flags, imap.seen …)")

        def store(conn: IMAPClient) -> None:
            self._check_validity(conn, folder.name, entry.identity[0], write=True)
            sign = {"add": "+", "remove": "-"}.get(op, "")
            log.debug("%s: UID STORE %d %sFLAGS %s", self.label, uid, sign, what)
            method = {"set": conn.set_flags, "add": conn.add_flags, "remove": conn.remove_flags}
            method[op]([uid], what, silent=True)

        await self._run(store, f"STORE {uid}")



