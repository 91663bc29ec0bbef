"""Symbolic links in FTP listings → entries that are safe and tell the truth.

Servers show links three ways: with their target (``OS.unix=slink:TARGET``, LIST's
``name -> target``), without it (ProFTPD's ``type=OS.unix=symlink``), or not at all. Their
``size`` is the length of the link's text, so taken at face value a link to a 2 KB file reads
as 25 bytes and a link to a directory is a file.

- A target the server tells that stays inside the account is shown as a symlink, rewritten
  relative to the link's folder (``ftplist.contained_target``): the kernel follows it within
  the mount, and ``readlink`` shows it.
- Any other link (target not told, absolute outside the account, climbing above it) is asked
  about on the server, which follows it itself: ``MLST`` (or ``CWD``) for its type and ``SIZE``
  for its size, pipelined for a batch of links per round trip. It is shown as what it points
  at, a file or a folder. The kernel never sees a target that could lead outside the mount.
- A link the server cannot follow either (dangling) is shown as a symlink to itself: visible
  as a link, never followed anywhere (``ELOOP``), never a file that cannot be read.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

from . import ftplist
from .base import Entry, Path

if TYPE_CHECKING:
    from .ftp import Client

log = logging.getLogger(__name__)

BATCH = 32  # links asked about per round trip (their replies must fit the socket buffers)


def mlst_entry(resp: str, name: str) -> Entry | None:
    """The entry in an MLST reply (``250-…`` / `` facts path`` / ``250 End``)."""
    for line in resp.splitlines()[1:-1]:
        facts = line.strip().partition(" ")[0]
        entry = ftplist.parse_mlsd_line(f"{facts} x")
        if entry is not None:
            return dataclasses.replace(entry, name=name)
    return None


def size_reply(resp: str) -> int | None:
    """The size in a ``213 N`` reply to SIZE, or ``None``."""
    value = resp[4:].strip() if resp[:3] == "213" else ""
    return int(value) if value.isdigit() and len(value) <= 19 and int(value) <= ftplist.MAX_SIZE else None


def resolve(c: Client, directory: Path, entries: list[Entry],
            here: dict[str, str] | None = None) -> list[Entry]:
    """``entries`` of ``directory`` with every link made safe (see the module's doc).
    ``here``: the MLSD ``unique`` of ``.`` and ``..``, to recognise links to them."""
    out: list[Entry] = []
    ask: list[tuple[int, Entry]] = []
    for e in entries:
        if e.symlink is None:
            out.append(e)
            continue
        target = ftplist.contained_target(directory, e.symlink, c.root) if e.symlink else None
        if target is not None:
            out.append(dataclasses.replace(e, is_dir=False, size=None, symlink=target,
                                           identity=("link", target, e.mtime)))
            continue
        if e.symlink:
            log.debug("%s: link %r -> %r leads outside the account: asking the server",
                      c.label, e.name, e.symlink)
        ask.append((len(out), e))
        out.append(e)
    for i in range(0, len(ask), BATCH):
        batch = ask[i:i + BATCH]
        for (at, e), followed in zip(batch, follow(c, directory, [e for _, e in batch], here)):
            out[at] = followed
    return out


def follow(c: Client, directory: Path, links: list[Entry],
           here: dict[str, str] | None = None) -> list[Entry]:
    """What the server says each link (or name it did not list) points at, in one round
    trip; one it cannot follow comes back as a link to itself."""
    per = (["MLST"] if c.mlst else ["CWD"]) + (["SIZE"] if "SIZE" in c.feats else [])
    cmds = [f"{cmd} {c.path(directory + (e.name,))}" for e in links for cmd in per]
    replies = c.pipeline(*cmds)
    out = []
    for n, e in enumerate(links):
        got = dict(zip(per, replies[n * len(per):(n + 1) * len(per)]))
        size = size_reply(got.get("SIZE", ""))
        is_dir = None
        mtime = e.mtime
        if "MLST" in got and got["MLST"][:1] == "2":
            found = mlst_entry(got["MLST"], e.name)
            loop = _loop(got["MLST"], directory, here or {})
            if loop is not None:  # a link to its own folder or the parent: a walk's loop
                out.append(dataclasses.replace(e, is_dir=False, size=None, symlink=loop,
                                               identity=("link", loop, e.mtime)))
                continue
            if found is not None and found.symlink is None:
                is_dir, mtime = found.is_dir, found.mtime or mtime
                if size is None and not is_dir and "SIZE" not in got:
                    size = found.size
        elif "CWD" in got and got["CWD"][:1] == "2":
            is_dir = True
        if is_dir is None and size is not None:
            is_dir = False
        if is_dir is None:  # dangling, or nothing the server would say: a link to itself
            log.debug("%s: link %r: the server does not follow it", c.label, e.name)
            out.append(dataclasses.replace(e, is_dir=False, size=None, symlink=e.name,
                                           identity=("link", e.name, e.mtime)))
        else:  # a link's own mode (0777) is not its target's, which servers do not tell
            out.append(dataclasses.replace(e, is_dir=is_dir, size=None if is_dir else size,
                                           symlink=None, mtime=mtime, mode=None,
                                           identity=(None if is_dir else size, mtime)))
    return out


def _loop(resp: str, directory: Path, here: dict[str, str]) -> str | None:
    """``.`` or ``..`` where the MLST reply's ``unique`` is that of the folder or its parent."""
    if not here:
        return None
    for line in resp.splitlines()[1:-1]:
        unique = ftplist.parse_facts(line.strip().partition(" ")[0]).get("unique")
        for name in (".", ".."):
            if unique and here.get(name) == unique and (name == "." or directory):
                return name
    return None
