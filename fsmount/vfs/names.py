"""Remote names ↔ names the kernel accepts.

A server may send a name no local filesystem allows ('/', NUL, control characters, '.' or
'..', more than 255 bytes). Such a name is shown with look-alike characters ('∕' for '/',
control pictures such as '␍' for CR) or shortened with a hash. Everything else is shown as it
is, so the usual lookup is a dictionary hit; only a name that could be an escaped one costs a
scan of its directory.
"""
from __future__ import annotations

import hashlib
import re

MAX_BYTES = 255
_SLASH = "\u2215"  # DIVISION SLASH
_DOTS = {".": "\uff0e", "..": "\uff0e\uff0e"}  # FULLWIDTH FULL STOP
_UNSAFE = re.compile("[\x00-\x1f/\x7f]")
_MARKS = frozenset({_SLASH, "\uff0e", "\u2421", "~"} | {chr(0x2400 + c) for c in range(32)})


def local_name(remote: str) -> str:
    """The name shown for ``remote`` (the identity function for ordinary names)."""
    # A printable name has no control character (so the usual name skips the regex), and an
    # ASCII one is as many bytes as characters (so it skips the encoding). "." and ".." are
    # printable.
    if remote.isprintable() and "/" not in remote:
        if len(remote) <= MAX_BYTES // 4 or (len(remote) <= MAX_BYTES and remote.isascii()):
            return _DOTS.get(remote, remote)
    elif _UNSAFE.search(remote):
        remote = "".join(
            _SLASH if c == "/" else chr(0x2400 + ord(c)) if c < " " else "\u2421" if c == "\x7f" else c
            for c in remote
        )
    if len(remote) <= MAX_BYTES // 4:  # short enough in any encoding: the usual case
        return remote
    raw = remote.encode("utf-8", "surrogateescape")
    if len(raw) > MAX_BYTES:
        digest = hashlib.sha1(raw).hexdigest()[:8]
        stem, dot, ext = remote.rpartition(".")
        tail = f"~{digest}" + (dot + ext if dot and len(ext) <= 10 else "")
        budget = MAX_BYTES - len(tail.encode("utf-8", "surrogateescape"))
        head = raw[:budget].decode("utf-8", "ignore") if not dot or len(ext) > 10 else (
            stem.encode("utf-8", "surrogateescape")[:budget].decode("utf-8", "ignore")
        )
        remote = head + tail
    return remote


def may_be_escaped(name: str) -> bool:
    """Whether ``name`` might stand for a different remote name (then a scan is needed)."""
    return len(name.encode("utf-8", "surrogateescape")) >= MAX_BYTES - 20 or any(c in _MARKS for c in name)


def to_fs(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


def from_fs(name: bytes) -> str:
    return name.decode("utf-8", "surrogateescape")
