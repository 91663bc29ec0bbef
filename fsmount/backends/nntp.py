"""NNTP: newsgroups as directories of ``.eml`` articles; copying a file into a group posts it.

Layout. Flat (default): one directory per group, ``comp.lang.python/``. With ``hierarchy``:
``comp/lang/python/``. A name can be a group *and* a parent of groups (``comp.lang`` and
``comp.lang.python``): its directory then holds the group's articles *and* the subgroup
directories. They never collide, since a hierarchy component has no dot and an article name
always ends in ``[number].eml``. A directory that is only a parent (``comp/``) holds no
articles and refuses posts.

Which groups. ``groups`` is a list of wildmat patterns forming one RFC 3977 wildmat (the last
matching pattern decides; ``!`` negates). It goes to the server as ``LIST ACTIVE wildmat``
(filtered again locally, in case a server ignores it); the answer is cached in memory and
refreshed every ``poll_interval`` seconds, so a server with 100,000 groups is asked once a
minute, not at every ``ls``. ``control``, ``control.*``, ``junk``, junk-flagged (``j``) and
alias (``=other``) groups are never shown.

Articles. Named ``message_name(number, subject, date)`` from the overview (OVER/XOVER), fetched
in batches of ``BATCH`` and only for the newest ``max_articles`` numbers of a group (0: all).
Overviews are kept per group; a relisting asks GROUP and fetches only the new numbers. An
article's identity is its Message-ID, so the content cache survives renumbering. Sizes from
the overview are hints (``size_exact=False``); ``download`` returns the exact size, and an
article clearly shorter than its :bytes is ``SizeMismatch`` (EIO), never a short file.
``download_many`` (a scan fetching ahead) sends a batch's ARTICLE commands in one write.

Posting. ``commit`` POSTs the spooled file to the directory's group, adding ``Newsgroups``
(or checking that it names the group) and a ``Message-ID``. The body is sent byte for byte.
POST is not retried blindly: a failure after the article was sent is resolved by asking for
its Message-ID, so nothing is posted twice and nothing is half-posted.
"""
from __future__ import annotations

import email.utils
import hashlib
import io
import logging
import re
import socket
import ssl
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any, BinaryIO

import trio

from ..config import Account
from ..credentials import Secret
from ..errors import (
    AlreadyExists, AuthenticationFailed, FsError, InvalidArgument, IsADirectory, NotADirectory,
    NotFound, NotPermitted, PermissionDenied, ReadOnly, Transient,
)
from ..net.pool import ConnectionPool
from ..net.tls import TlsMode, client_context
from ..net.dotstream import CappedBuffer, Copied, batch_result, buffers, copy_dot_terminated
from ..net.failures import connection_failure
from ..net.replies import refusal_by_words
from .base import (
    BATCH_ITEM_LIMIT, BATCH_LIMIT, BackendBase, Capabilities, Content, Entry, Path, PostsNews,
)
from .mailnames import header_date, key_of, message_name
from .sizecheck import check_size, dot_slack

with warnings.catch_warnings():  # deprecated on 3.11-3.12; the standard-nntplib package on 3.13+
    warnings.simplefilter("ignore", DeprecationWarning)
    import nntplib

# nntplib refuses lines longer than 2 KiB (NNTPDataError "line too long"); real articles
# (HTML, long headers) have longer ones, and a reader must not fail on them.
nntplib._MAXLINE = max(getattr(nntplib, "_MAXLINE", 0), 1 << 20)

log = logging.getLogger(__name__)

BATCH = 500  # overview lines per OVER command
ARTICLE_BATCH = 32  # articles a scan fetches ahead in one pipelined round
HIDDEN_GROUPS = re.compile(r"\A(control|control\..*|junk)\Z")


class PostingRefused(NotPermitted):
    """The server refused an article (440/441); the message carries its reason."""


def create(account: Account, secret: Secret, env: Any) -> NntpBackend:
    return NntpBackend(account, secret)


# -- wildmat ---------------------------------------------------------------------------


def _wildmat_regex(pattern: str) -> re.Pattern[str]:
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                out.append(re.escape(c))
            else:
                body = pattern[i + 1:end]
                neg = body.startswith("^")
                body = body[1:] if neg else body
                out.append("[" + ("^" if neg else "") + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out) + r"\Z", re.S)


class Wildmat:
    """An RFC 3977 wildmat given as a list of patterns: the last pattern that matches decides."""

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = [p for part in patterns for p in part.split(",") if p]
        self._compiled = [(p.startswith("!"), _wildmat_regex(p.lstrip("!"))) for p in self.patterns]

    def __str__(self) -> str:
        return ",".join(self.patterns)

    def matches(self, name: str) -> bool:
        for negated, regex in reversed(self._compiled):
            if regex.match(name):
                return not negated
        return False


# -- articles on the wire -------------------------------------------------------------


LINE_LIMIT = 1 << 20  # longer lines arrive in pieces; only whole lines are unstuffed


def read_article(f: BinaryIO, out: BinaryIO | None) -> Copied | None:
    """Copy one ARTICLE answer from ``f`` to ``out`` with CRLF endings, dot-unstuffed.

    Returns the article's size (and dots unstuffed), or None for 423/430 (no such article).
    Reads exactly one answer, so answers to pipelined commands can be read in a row.
    """
    status = f.readline(1 << 16)
    if not status.endswith(b"\n"):
        raise EOFError("connection closed before an answer")
    code = status[:3]
    if code in (b"423", b"430"):
        return None
    if code != b"220":
        raise nntplib.NNTPTemporaryError(status.decode("utf-8", "replace").strip())
    return copy_dot_terminated(f, out, LINE_LIMIT, "article")


@dataclass(frozen=True)
class Prepared:
    lines: list[bytes]
    message_id: str

    def header(self, name: str) -> str | None:
        head = self.lines[: self.lines.index(b"")] if b"" in self.lines else self.lines
        value = BytesHeaderParser(policy=compat32).parsebytes(b"\r\n".join(head) + b"\r\n\r\n")
        found = value.get(name)
        return None if found is None else str(found)


def prepare_article(raw: bytes, group: str | None, id_domain: str) -> Prepared:
    """The article's lines ready for POST; headers completed, body untouched.

    ``group``: the Newsgroups header must name it (added when missing). A Message-ID is added
    when missing, so that an interrupted POST can be checked instead of repeated.
    """
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    try:
        blank = lines.index(b"")
    except ValueError:
        blank = len(lines)
    head = lines[:blank]
    if not head or head[0][:1] in (b" ", b"\t") or b":" not in head[0]:
        raise InvalidArgument("not a news article: it must start with headers (From:, Subject: …)")
    headers = BytesHeaderParser(policy=compat32).parsebytes(b"\r\n".join(head) + b"\r\n\r\n")
    extra: list[bytes] = []
    if group is not None:
        values = headers.get_all("Newsgroups") or []
        if len(values) > 1:
            raise InvalidArgument("the article has more than one Newsgroups header")
        if not values:
            extra.append(b"Newsgroups: " + group.encode())
        else:
            named = [g.strip() for g in re.split(r"[,\s]+", str(values[0])) if g.strip()]
            if group not in named:
                raise InvalidArgument(
                    f"the article's Newsgroups header ({', '.join(named)}) does not include "
                    f"{group}, the group it was copied into"
                )
    message_id = str(headers.get("Message-ID", "")).strip()
    if not message_id:
        message_id = email.utils.make_msgid(domain=id_domain)
        extra.append(b"Message-ID: " + message_id.encode())
    elif not re.fullmatch(r"<[^<>\s]+@[^<>\s]+>", message_id):
        raise InvalidArgument(f"unusable Message-ID {message_id!r}")
    return Prepared(head + extra + lines[blank:], message_id)


# -- state ------------------------------------------------------------------------------


@dataclass
class GroupState:
    """What we know of one group's articles: overview entries by number."""

    high: int = 0  # the high water mark the entries were fetched up to
    entries: dict[int, Entry] = field(default_factory=dict)
    by_name: dict[str, int] = field(default_factory=dict)
    lock: trio.Lock = field(default_factory=trio.Lock)

    def add(self, number: int, entry: Entry) -> None:
        self.entries[number] = entry
        self.by_name[entry.name] = number

    def keep_from(self, first: int) -> None:
        for number in [n for n in self.entries if n < first]:
            del self.by_name[self.entries.pop(number).name]


@dataclass
class Tree:
    """The directory structure made from the group list."""

    children: dict[Path, set[str]]  # directory → names of subdirectories
    groups: dict[Path, str]  # directory → group shown there
    fetched: float
    _entries: dict[Path, list[Entry]] = field(default_factory=dict)

    def subdirectories(self, path: Path) -> list[Entry]:
        """Made once per group list: a flat root of 100,000 groups takes 0.2 s to build."""
        entries = self._entries.get(path)
        if entries is None:
            entries = self._entries[path] = [Entry(n, True) for n in sorted(self.children[path])]
        return entries

    @classmethod
    def build(cls, names: Iterable[str], hierarchy: bool) -> Tree:
        children: dict[Path, set[str]] = {(): set()}
        groups: dict[Path, str] = {}
        for name in names:
            path = tuple(name.split(".")) if hierarchy else (name,)
            if any(part in ("", ".", "..") or "/" in part or "\0" in part for part in path):
                log.debug("skipping group %r: no usable directory name", name)
                continue
            groups[path] = name
            for depth in range(len(path)):
                children.setdefault(path[:depth], set()).add(path[depth])
                children.setdefault(path[: depth + 1], set())
        return cls(children, groups, time.monotonic())


# -- the backend ------------------------------------------------------------------------


class NntpBackend(BackendBase, PostsNews):
    def __init__(self, account: Account, secret: Secret) -> None:
        self.account = account
        self.secret = secret
        self.hierarchy = bool(account["hierarchy"])
        self.wildmat = Wildmat(account["groups"] or ["*"])
        self.max_articles = int(account["max_articles"])
        self.poll_interval = float(account["poll_interval"])
        self.capabilities = Capabilities(
            write=not account["readonly"], immutable=True, overwrite=False,
            remove=False, rename=False, batch=ARTICLE_BATCH,
        )
        self.pool: ConnectionPool[nntplib.NNTP] = ConnectionPool(
            account.label, self._connect, _close, classify,
            limit=account["connections"], timeout=account["timeout"], check=_check,
        )
        self._tree: Tree | None = None
        self._tree_lock = trio.Lock()
        self._states: dict[str, GroupState] = {}

    # -- connections (worker threads) ---------------------------------------------------

    def _context(self) -> ssl.SSLContext:
        return client_context(self.account["ca_file"], self.account["tls_verify"])

    def _connect(self) -> nntplib.NNTP:
        acc = self.account
        timeout = acc["timeout"]
        log.debug("%s: connecting (%s)", acc.label, acc.tls.value)
        if acc.tls is TlsMode.IMPLICIT:
            conn: nntplib.NNTP = nntplib.NNTP_SSL(
                acc.host, acc.port, ssl_context=self._context(), readermode=True, timeout=timeout)
            encrypted = True
        else:
            conn = nntplib.NNTP(acc.host, acc.port, readermode=True, timeout=timeout)
            encrypted = False
            try:
                encrypted = self._starttls(conn)
            except BaseException:
                _close(conn)
                raise
        try:
            if acc.user is not None:
                self._login(conn, encrypted)
        except BaseException:
            _close(conn)
            raise
        _acknowledge_quickly(conn)
        return conn

    def _starttls(self, conn: nntplib.NNTP) -> bool:
        mode = self.account.tls
        if mode is TlsMode.OFF:
            return False
        if "STARTTLS" not in conn.getcapabilities():
            if mode is TlsMode.REQUIRE:
                raise PermissionDenied(f"{self.account.label} does not offer STARTTLS (tls = require)")
            return False
        log.debug("%s: STARTTLS", self.account.label)
        try:
            conn.starttls(self._context())
        except nntplib.NNTPError as e:  # offered but broken (INN without a certificate: 580)
            raise PermissionDenied(f"{self.account.label}: STARTTLS failed: {e.response}") from None
        return True

    def _login(self, conn: nntplib.NNTP, encrypted: bool) -> None:
        if not encrypted and not self.account["plaintext_auth"]:
            raise PermissionDenied(
                f"{self.account.label}: refusing to send the password unencrypted (no TLS); "
                "use nntps://, a server with STARTTLS, or set plaintext_auth = true"
            )
        log.debug("%s: AUTHINFO USER %s / PASS (not logged)", self.account.label, self.account.user)
        conn.login(self.account.user, self.secret.password or "", usenetrc=False)

    async def _run(self, fn: Callable[[nntplib.NNTP], Any], what: str, *, retry: bool = True) -> Any:
        return await self.pool.run(fn, retry=retry, what=f"{self.account.label}: {what}")

    # -- the group list -----------------------------------------------------------------

    async def _groups(self, *, refresh: bool = False) -> Tree:
        """The group tree, fetched once and again after ``poll_interval``."""
        async with self._tree_lock:
            tree = self._tree
            due = tree is None or time.monotonic() - tree.fetched >= self.poll_interval
            if refresh or due:
                names = await self._run(self._list_active, "LIST ACTIVE")
                self._tree = tree = Tree.build(names, self.hierarchy)
                for gone in set(self._states) - set(names):
                    del self._states[gone]
            assert tree is not None
            return tree

    def _list_active(self, conn: nntplib.NNTP) -> list[str]:
        pattern = str(self.wildmat)
        log.debug("%s: LIST ACTIVE %s", self.account.label, pattern)
        try:
            _, infos = conn.list(pattern if pattern != "*" else None)
        except nntplib.NNTPPermanentError as e:  # a server without wildmat arguments
            log.debug("%s: LIST ACTIVE with a wildmat refused (%s); listing all", self.account.label, e)
            _, infos = conn.list()
        return sorted(
            info.group for info in infos
            if self.wildmat.matches(info.group) and not _hidden(info.group, info.flag)
        )

    # -- listing ------------------------------------------------------------------------

    async def stat(self, path: Path) -> Entry:
        tree = await self._groups()
        if path in tree.children:
            return Entry(path[-1] if path else "", True)
        group = tree.groups.get(path[:-1])
        if group is not None and key_of(path[-1]) is not None:
            entry = self._known(group, path[-1])
            if entry is None:  # not listed yet, or newer than our last listing
                await self._articles(group)
                entry = self._known(group, path[-1])
            if entry is not None:
                return entry
        raise NotFound("/".join(path))

    def _known(self, group: str, name: str) -> Entry | None:
        state = self._states.get(group)
        number = state.by_name.get(name) if state else None
        return state.entries[number] if state and number is not None else None

    async def list(self, path: Path) -> list[Entry]:
        tree = await self._groups()
        if path not in tree.children:
            if path[:-1] in tree.groups:
                raise NotADirectory("/".join(path))
            raise NotFound("/".join(path))
        entries = tree.subdirectories(path)
        group = tree.groups.get(path)
        if group is not None:
            entries = entries + await self._articles(group)
        return entries

    async def _articles(self, group: str) -> list[Entry]:
        state = self._states.setdefault(group, GroupState())
        async with state.lock:
            first, high, fresh = await self._run(
                lambda conn: self._overview(conn, group, state.high), f"OVER {group}")
            state.keep_from(first)
            for number, entry in fresh:
                state.add(number, entry)
            state.high = high
            return [state.entries[n] for n in sorted(state.entries)]

    def _window(self, low: int, high: int) -> int:
        """The first article number shown: only the newest ``max_articles``."""
        if self.max_articles > 0:
            return max(low, high - self.max_articles + 1)
        return low

    def _overview(self, conn: nntplib.NNTP, group: str, known_high: int
                  ) -> tuple[int, int, list[tuple[int, Entry]]]:
        """GROUP, then OVER for the numbers above ``known_high`` in the window, in batches."""
        log.debug("%s: GROUP %s", self.account.label, group)
        _, count, low, high, _ = conn.group(group)
        if count == 0 or high < low:
            return high + 1, high, []
        first = self._window(low, high)
        start = max(first, known_high + 1)
        found: list[tuple[int, Entry]] = []
        while start <= high:
            end = min(start + BATCH - 1, high)
            log.debug("%s: OVER %d-%d", self.account.label, start, end)
            _, overviews = conn.over((start, end))
            found += [(n, _entry(n, ov)) for n, ov in overviews if ov.get("message-id")]
            start = end + 1
        return first, high, found

    async def changed(self, path: Path) -> bool:
        """A group: did GROUP's high water mark move? Elsewhere: is the group list due?"""
        tree = self._tree
        if tree is None:
            return True
        group = tree.groups.get(path)
        if group is not None and group in self._states:
            high = await self._run(lambda conn: int(conn.group(group)[3]), f"GROUP {group}")
            if high != self._states[group].high:
                return True
        if time.monotonic() - tree.fetched >= self.poll_interval:
            old = tree
            new = await self._groups(refresh=True)
            return old.children.get(path) != new.children.get(path) or old.groups != new.groups
        return False

    # -- reading ------------------------------------------------------------------------

    async def download(self, path: Path, into: str) -> Entry:
        """ARTICLE by Message-ID (no GROUP needed), streamed to ``into`` in the worker thread."""
        entry = await self.stat(path)
        if entry.is_dir:
            raise IsADirectory("/".join(path))
        message_id = entry.identity[0]

        def fetch(conn: nntplib.NNTP) -> Copied | None:
            with open(into, "wb") as out:
                return self._articles_by_id(conn, [message_id], [out])[0]

        copied = await self._run(fetch, f"ARTICLE {message_id}")
        if copied is None:
            raise NotFound(f"{'/'.join(path)}: the server no longer has {message_id}")
        _check_size(entry, copied)
        return Entry(entry.name, False, copied.size, entry.mtime, entry.identity)

    async def download_many(self, paths: Sequence[Path]) -> list[bytes | FsError]:
        """The ARTICLE commands pipelined on one connection (RFC 3977 3.5)."""
        results: list[bytes | FsError] = []
        wanted: list[tuple[int, Entry]] = []  # (index in results, the article's entry)
        for path in paths:
            try:
                entry = await self.stat(path)
            except FsError as e:
                results.append(e)
                continue
            if entry.is_dir:
                results.append(IsADirectory("/".join(path)))
                continue
            wanted.append((len(results), entry))
            results.append(NotFound(path[-1]))

        def fetch(conn: nntplib.NNTP) -> list[tuple[CappedBuffer, Copied | None]]:
            outs = buffers(len(wanted), BATCH_ITEM_LIMIT, BATCH_LIMIT)
            copies = self._articles_by_id(conn, [e.identity[0] for _, e in wanted], outs)
            return list(zip(outs, copies))

        if wanted:
            fetched = await self._run(fetch, f"ARTICLE of {len(wanted)} articles")
            for (index, entry), (out, copied) in zip(wanted, fetched):
                result = batch_result(out if copied is not None else None, entry.identity[0])
                if copied is not None and isinstance(result, bytes):
                    try:
                        _check_size(entry, copied)
                    except FsError as e:
                        result = e
                results[index] = result
        return results

    def _articles_by_id(self, conn: nntplib.NNTP, message_ids: list[str],
                        outs: Sequence[BinaryIO]) -> list[Copied | None]:
        """ARTICLE for each Message-ID, sent in one write; each size, None if missing."""
        more = f" … {message_ids[-1]} ({len(message_ids)}, pipelined)" if len(message_ids) > 1 else ""
        log.debug("%s: ARTICLE %s%s", self.account.label, message_ids[0], more)
        conn.file.write(b"".join(b"ARTICLE " + mid.encode() + b"\r\n" for mid in message_ids))
        conn.file.flush()
        return [read_article(conn.file, out) for out in outs]

    # -- posting ------------------------------------------------------------------------

    async def commit(self, path: Path, content: Content, replacing: Entry | None) -> Entry:
        if not self.capabilities.write:
            raise ReadOnly("this news account is read-only")
        if replacing is not None:
            raise NotPermitted("articles cannot be changed once posted")
        tree = await self._groups()
        group = tree.groups.get(path[:-1])
        if group is None:
            raise ReadOnly(f"{'/'.join(path[:-1]) or 'the top folder'} is not a newsgroup; "
                           "copy articles into a group's folder to post them")
        article = prepare_article(await content.read_all(), group, self._id_domain())
        await self._post(article)
        return await self._posted_entry(group, article)

    async def post(self, raw: bytes) -> str:
        """POST a complete article as it is (Newsgroups included); returns its Message-ID.

        Used by the outbox for mail with a Newsgroups: header.
        """
        article = prepare_article(raw, None, self._id_domain())
        await self._post(article)
        return article.message_id

    def _id_domain(self) -> str:
        return self.account.host

    async def _post(self, article: Prepared) -> None:
        """POST once; after a lost connection ask whether the server got it before retrying."""
        mid = article.message_id

        def send(conn: nntplib.NNTP) -> str:
            log.debug("%s: POST %s", self.account.label, mid)
            try:
                return conn.post(article.lines)
            except nntplib.NNTPError as e:
                raise self._refused(e, mid) from e

        try:
            await self._run(send, f"POST {mid}", retry=False)
        except Transient as e:
            if await self._has(mid):
                return
            log.info("%s: POST %s interrupted (%s); posting again", self.account.label, mid, e)
            await self._run(send, f"POST {mid}", retry=False)

    def _refused(self, e: nntplib.NNTPError, mid: str) -> FsError:
        reason = str(e.response if hasattr(e, "response") else e)
        code = reason[:3]
        log.warning("%s: the server refused article %s: %s", self.account.label, mid, reason)
        if code == "481":
            return AuthenticationFailed(reason)
        if code in ("440", "441", "480", "502"):
            if "435" in reason or "duplicate" in reason.lower():
                return AlreadyExists(f"the server already has {mid}: {reason}")
            if code in ("480", "502"):  # not this user, or not before a login: EACCES
                return PermissionDenied(f"the server refused the article: {reason}")
            return PostingRefused(f"the server refused the article: {reason}")
        return classify(e)

    async def _has(self, message_id: str) -> bool:
        def stat(conn: nntplib.NNTP) -> bool:
            log.debug("%s: STAT %s", self.account.label, message_id)
            try:
                conn.stat(message_id)
                return True
            except nntplib.NNTPTemporaryError:
                return False

        return await self._run(stat, f"STAT {message_id}")

    async def _posted_entry(self, group: str, article: Prepared) -> Entry:
        """The new article's entry from the group's overview.

        A moderated group's article goes to the moderator and is not in the group (yet): then
        a stand-in entry, which the next listing replaces by what the group really holds.
        """
        for entry in await self._articles(group):
            if entry.identity == (article.message_id,):
                return entry
        log.info("%s: %s is not in %s (moderated: sent to the moderator)",
                 self.account.label, article.message_id, group)
        key = "posted-" + hashlib.sha1(article.message_id.encode()).hexdigest()[:8]
        now = time.time()
        return Entry(message_name(key, article.header("Subject"), now), False, None, now,
                     (article.message_id,), size_exact=False)

    async def probe(self) -> None:
        await self.pool.probe()

    async def aclose(self) -> None:
        await self.pool.aclose()


# -- helpers ----------------------------------------------------------------------------


def _check_size(entry: Entry, copied: Copied) -> None:
    """The overview's :bytes against the article received.

    RFC 3977 8.3.2 says :bytes SHOULD be the article's octets with CRLF ends, without the
    terminating ``.`` line and the dot-stuffing dots; servers differ (older ones count their
    LF-ended store, or the wire format). INN 2.7, checked here, subtracts both but misses the
    dot of a stuffed first body line, so its :bytes can be one more than the article. So only a
    clearly short article is an error: fewer bytes than :bytes minus the terminator and the
    dots unstuffed (what a wire-format count adds). A longer one is never a cut article.
    """
    check_size(f"article {entry.name}", copied.size, entry.size,
               slack=dot_slack(copied.stuffed))


def _hidden(name: str, flag: str) -> bool:
    return bool(HIDDEN_GROUPS.match(name)) or flag.startswith(("j", "="))


def _text(value: str | None) -> str | None:
    """A header from nntplib (UTF-8, undecodable bytes as surrogates): Latin-1 where not UTF-8."""
    if value is None:
        return None
    raw = value.encode("utf-8", "surrogateescape")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", "replace")


def _entry(number: int, overview: dict[str, str]) -> Entry:
    date = header_date(overview.get("date"))
    subject = _text(overview.get("subject"))
    try:
        size: int | None = int(overview.get(":bytes") or "")
    except ValueError:
        size = None
    return Entry(
        message_name(str(number), subject, date), False, size,
        date.timestamp() if date else None, (overview["message-id"].strip(),), size_exact=False,
    )


class _QuickAckIO(socket.SocketIO):
    """Socket reads that acknowledge at once (TCP_QUICKACK before every receive).

    INN writes a multi-line answer's status line and its text separately; with Nagle on the
    server and delayed ACKs here, the text waits ~40 ms for our ACK. That made every ARTICLE
    take 44 ms on loopback; acknowledging at once makes it 0.2 ms. Linux clears the flag after
    use, hence before every read.
    """

    def readinto(self, b: Any) -> int | None:
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except (OSError, AttributeError):  # not Linux, or not TCP
            pass
        return super().readinto(b)


def _acknowledge_quickly(conn: nntplib.NNTP) -> None:
    """Swap nntplib's socket file (idle now: every answer so far was read) for a quick-ACK one."""
    if not hasattr(socket, "TCP_QUICKACK"):
        return
    raw = _QuickAckIO(conn.sock, "rwb")
    conn.file = io.BufferedRWPair(raw, raw)  # the old file closes when collected


def _close(conn: nntplib.NNTP) -> None:
    try:
        conn.quit()
    except (OSError, EOFError, nntplib.NNTPError):
        pass  # quit() closes the socket in any case


def _check(conn: nntplib.NNTP) -> None:
    """A cheap round trip before reusing an idle connection."""
    conn.date()


def classify(exc: BaseException) -> FsError:
    """Map a client failure to the FsError the user sees; only Transient ones are retried."""
    if isinstance(exc, nntplib.NNTPProtocolError):
        return Transient(f"garbled answer from the news server: {exc}")
    if isinstance(exc, nntplib.NNTPDataError):
        return FsError(f"unexpected answer from the news server: {exc}")
    if isinstance(exc, nntplib.NNTPError):
        reason = str(exc.response)
        code = reason[:3]
        if code == "481":
            return AuthenticationFailed(f"news server: {reason}")
        if code in ("480", "483", "502"):
            return PermissionDenied(f"news server: {reason}")
        if code in ("411", "420", "423", "430"):
            return NotFound(reason)
        if code in ("440", "441"):
            return PostingRefused(f"the server refused the article: {reason}")
        if code in ("400", "403"):
            return Transient(reason)
        if code[:1] in ("4", "5") and code not in ("500", "501"):  # 500/501: our command
            worded = refusal_by_words(reason)
            if worded is not None:
                return worded
        return FsError(f"news server: {reason}")
    failure = connection_failure(exc, "the news server")
    if failure is not None:
        return failure
    return FsError(repr(exc))
