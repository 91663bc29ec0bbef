"""Derived files: the decoded ``.txt`` beside each message, made from the cached message.

With ``decoded_view`` on, every message file ``X [42].eml`` of an IMAP, POP3 or NNTP account
has a read-only ``X [42].txt`` beside it: the message as a person reads it
(``decoded.decoded_text``), so ``grep -r`` finds words inside base64 or
quoted-printable bodies and RFC 2047 headers. The cache layer makes it from the message's
bytes (fetched once, for both files) and keeps it in the content store under an identity of
its own; no backend knows it exists.

Its size is unknown until it is made, so the cache layer makes it at the first ``stat``:
``st_size`` is then exact from the first look on, and ``rsync``/``tar`` read what they were
told. That costs the message's fetch at ``ls -l``, which is why the view is off by default.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..backends.base import Entry, Path

SOURCE_SUFFIX = ".eml"
SUFFIX = ".txt"
_TAG = "decoded"  # last element of a text's identity: its bytes are not the message's


@dataclass(frozen=True)
class DecodedView:
    """Which names the view adds to a listing, and the message behind each of them."""

    def with_texts(self, entries: list[Entry]) -> list[Entry]:
        """``entries`` with each message followed by its text: in this order ``grep -r``
        reads both files of a message while its bytes are still at hand."""
        if not any(_is_message(e) for e in entries):
            return entries
        out: list[Entry] = []
        for entry in entries:
            out.append(entry)
            if _is_message(entry):
                out.append(text_entry(entry))
        return out

    @staticmethod
    def source(path: Path) -> Path | None:
        """The message behind a text's path; None for any other path."""
        if not path or not path[-1].endswith(SUFFIX):
            return None
        return path[:-1] + (path[-1][: -len(SUFFIX)] + SOURCE_SUFFIX,)

    @staticmethod
    def text_path(path: Path) -> Path | None:
        """The text beside a message's path; None for any other path."""
        if not path or not path[-1].endswith(SOURCE_SUFFIX):
            return None
        return path[:-1] + (path[-1][: -len(SOURCE_SUFFIX)] + SUFFIX,)

    @staticmethod
    def is_text(entry: Entry) -> bool:
        return entry.identity[-1:] == (_TAG,)


def text_entry(message: Entry) -> Entry:
    """A message's text: size unknown (the message's size is the hint) until it is made."""
    return Entry(message.name[: -len(SOURCE_SUFFIX)] + SUFFIX, False, message.size,
                 message.mtime, mode=0o444, identity=(*message.identity, _TAG),
                 size_exact=False)


def _is_message(entry: Entry) -> bool:
    return not entry.is_dir and entry.symlink is None and entry.name.endswith(SOURCE_SUFFIX)
