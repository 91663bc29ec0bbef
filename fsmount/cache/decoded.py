"""A message as a person reads it: decoded headers and text parts, as UTF-8 text.

``grep`` over a raw ``.eml`` misses words inside base64 or quoted-printable bodies and RFC 2047
encoded headers. ``decoded_text(raw)`` turns the exact message bytes into plain text that
``grep`` finds them in::

    From: Jörg Müller <j@example.org>
    To: …
    Subject: Grüße aus Köln
    Date: Mon, 06 May 2024 10:00:00 +0200
    Attachments: report.pdf (application/pdf, 48213 bytes)

    <each text/plain part, decoded to UTF-8>
    <each text/html part without a plain alternative, as text>

Made by the cache layer for the decoded view (``views``) of every mail backend: a pure
function, no I/O, never raises on a broken message (unknown charsets fall back to
Latin-1/replacement characters, a broken MIME structure yields whatever parts could be read).
"""
from __future__ import annotations

import html
import re
from email.message import Message
from email.parser import BytesParser, Parser
from email.policy import compat32
from html.parser import HTMLParser

from ..backends.mailnames import decode_subject

HEADERS = ("From", "To", "Cc", "Reply-To", "Subject", "Date", "Newsgroups", "Message-ID")
SUFFIX = ".txt"


def decoded_text(raw: bytes) -> bytes:
    """Decoded headers and text parts of ``raw`` as UTF-8 bytes (see the module docstring)."""
    try:
        msg = _single_part(raw) or BytesParser(policy=compat32).parsebytes(raw)
    except Exception:  # the parser is lenient; this is only a last line of defence
        return raw.decode("utf-8", "replace").encode()
    lines = []
    for name in HEADERS:
        for value in msg.get_all(name) or []:
            lines.append(f"{name}: {_header(value)}")
    texts: list[str] = []
    attachments: list[str] = []
    _walk(msg, texts, attachments)
    if attachments:
        lines.append("Attachments: " + ", ".join(attachments))
    texts = [t.replace("\r\n", "\n").replace("\r", "\n").strip("\n") for t in texts]
    out = "\n".join(lines) + "\n\n" + "\n\n".join(t for t in texts if t.strip())
    return (out.rstrip("\n") + "\n").encode("utf-8", "replace")


def _single_part(raw: bytes) -> Message | None:
    """What ``BytesParser(policy=compat32).parsebytes(raw)`` returns, for a message that is
    not multipart, made without the line-by-line pass over its body (most of the parser's
    time): the header block alone is parsed, and the rest is the payload, as the parser
    itself would join it. None where that shortcut might differ (the parser then runs)."""
    crlf = raw.find(b"\r\n\r\n")
    lf = raw.find(b"\n\n", 0, crlf + 4 if crlf >= 0 else len(raw))
    if crlf < 0 and lf < 0:
        return None
    split = lf + 2 if lf >= 0 else crlf + 4
    text = raw.decode("ascii", "surrogateescape")
    msg = Parser(policy=compat32).parsestr(text[:split])
    if msg.defects or msg.get_payload() != "" or msg.get_content_maintype() in ("multipart", "message"):
        return None  # the headers did not end at that blank line, or parts follow
    msg.set_payload(text[split:])
    return msg


def _header(value: object) -> str:
    if not isinstance(value, str):  # compat32 gives Header objects for undecodable 8-bit bytes
        value = str(value)
    text = decode_subject(value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                          if _has_surrogates(value) else value)
    return re.sub(r"\s*\n\s*", " ", text).strip()


def _has_surrogates(text: str) -> bool:
    return _SURROGATE.search(text) is not None


_SURROGATE = re.compile("[\udc80-\udcff]")


def _walk(part: Message, texts: list[str], attachments: list[str]) -> None:
    if part.is_multipart():
        subparts = [p for p in (part.get_payload() or []) if isinstance(p, Message)]
        if part.get_content_subtype() == "alternative":
            plain = [p for p in subparts if p.get_content_type() == "text/plain"]
            if plain:
                subparts = [p for p in subparts if p.get_content_type() != "text/html"]
        for sub in subparts:
            _walk(sub, texts, attachments)
        return
    ctype = part.get_content_type()
    if ctype == "message/rfc822":
        inner = part.get_payload()
        for sub in inner if isinstance(inner, list) else []:
            if isinstance(sub, Message):
                for name in ("From", "Subject", "Date"):
                    if sub.get(name):
                        texts.append(f"{name}: {_header(sub[name])}")
                _walk(sub, texts, attachments)
        return
    filename = part.get_filename()
    disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
    if ctype in ("text/plain", "text/html") and disposition != "attachment":
        text = _text(part)
        texts.append(_html_to_text(text) if ctype == "text/html" else text)
    elif filename or disposition == "attachment" or not ctype.startswith("text/"):
        size = len(part.get_payload(decode=True) or b"")
        label = _header(filename) if filename else "unnamed"
        attachments.append(f"{label} ({ctype}, {size} bytes)")
    else:  # other text types inline (text/calendar, text/csv): readable as they are
        texts.append(_text(part))


def _text(part: Message) -> str:
    data = part.get_payload(decode=True)
    if data is None:
        payload = part.get_payload()
        return payload if isinstance(payload, str) else ""
    charset = part.get_content_charset() or "us-ascii"
    for candidate in (charset, "utf-8", "cp1252"):
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("latin-1")


class _TextExtractor(HTMLParser):
    BLOCK = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table",
             "blockquote"}
    SKIP = {"script", "style", "head", "title"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skipping = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self.SKIP:
            self.skipping += 1
        elif tag in self.BLOCK:
            self.out.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        elif tag in self.BLOCK:
            self.out.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skipping:
            self.out.append(data)


def _html_to_text(source: str) -> str:
    parser = _TextExtractor()
    try:
        parser.feed(source)
        parser.close()
    except Exception:  # HTMLParser is lenient; keep the markup-stripped fallback
        return html.unescape(re.sub(r"<[^>]*>", " ", source))
    text = "".join(parser.out)
    text = re.sub(r"[ \t\r\f\v]+", " ", text)
    return re.sub(r"\n\s*\n+", "\n\n", text).strip()
