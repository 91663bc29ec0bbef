"""The decoded view, once for every message backend (IMAP, POP3, NNTP), through a real mount.

On default settings a folder shows one file per message, so ``grep -rl``, ``du``, ``rsync``
and ``tar`` see each message once, at its exact size. With ``decoded_view`` on, a ``.txt``
beside each ``.eml`` lets ``grep`` find words only visible decoded, and its size is exact
from the first ``stat`` on, so ``rsync -a`` and ``tar`` exit 0 over it as well.
"""
from __future__ import annotations

import errno
import os
import re
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.mounting import mounted, run
from tests.servers.dovecot import Dovecot, dovecot_server  # noqa: F401  (fixture)
from tests.servers.inn import InnServer, inn  # noqa: F401  (fixture)
from tests.test_imap_backend import unique

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no FUSE")

WORD = "pineapplestorm"  # only in a base64 body: grep finds it in the decoded view alone
BASE64_BODY = "U2VjcmV0IHdvcmQ6IHBpbmVhcHBsZXN0b3JtCg=="
MIME = {"MIME-Version": "1.0", "Content-Type": "text/plain; charset=us-ascii",
        "Content-Transfer-Encoding": "base64"}


def mail(subject: str, body: str, headers: dict[str, str]) -> bytes:
    lines = ["From: Carol <carol@example.org>", "To: alice@example.org", f"Subject: {subject}",
             "Date: Mon, 01 Jan 2024 10:00:00 +0000",
             f"Message-ID: <{unique('m')}@example.org>",
             *(f"{k}: {v}" for k, v in headers.items()), "", body, ""]
    return "\r\n".join(lines).encode()


@dataclass
class Folder:
    """Messages on one server, and how to mount the folder that shows them."""

    config: Callable[..., str]
    subpath: str
    held: Callable[[], list[bytes]]  # the exact bytes the server holds, in any order


def _options(options: dict[str, object]) -> list[str]:
    return [f"{k} = {str(v).lower() if isinstance(v, bool) else repr(v)}" for k, v in options.items()]


@pytest.fixture(params=["imap", "pop3", "nntp"])
def folder(request: pytest.FixtureRequest) -> Iterator[Folder]:
    """Three messages, one of them with WORD only in a base64 body."""
    subjects = ["Quarterly figures", "Plain hello", "Lunch on Friday"]
    bodies = [BASE64_BODY, "Nothing encoded here.", "See you there."]
    if request.param == "nntp":
        server: InnServer = request.getfixturevalue("inn")
        ids = [server.post("local.test", s, b + "\n", headers=MIME if b == BASE64_BODY else None)
               for s, b in zip(subjects, bodies)]

        def config(**options: object) -> str:
            return "\n".join(["[accounts.box]", f'url = "nntps://alice@127.0.0.1:{server.tls_port}"',
                              f'ca_file = "{server.ca}"', 'password = "secret1"',
                              *_options(options), ""])
        yield Folder(config, "local.test", lambda: [server.article(i) for i in ids])
        return
    dovecot: Dovecot = request.getfixturevalue("dovecot_server")
    raws = [mail(s, b, MIME if b == BASE64_BODY else {}) for s, b in zip(subjects, bodies)]
    if request.param == "imap":
        name = unique("View")
        dovecot.create_folder(name)
        dovecot.append_many("alice", raws, name)
        url, sub = f"imaps://alice@127.0.0.1:{dovecot.imaps_port}", name
        password = "secret1"
    else:  # bob's maildrop is this test's alone
        for raw in raws:
            dovecot.deliver("bob", raw)
        url, sub, password = f"pop3s://bob@127.0.0.1:{dovecot.pop3s_port}", "", "secret2"

    def config(**options: object) -> str:
        return "\n".join(["[accounts.box]", f'url = "{url}"', f'ca_file = "{dovecot.ca}"',
                          f'password = "{password}"', *_options(options), ""])
    try:
        yield Folder(config, sub, lambda: raws)
    finally:
        if request.param == "pop3":
            dovecot.doveadm("expunge", "-u", "bob", "mailbox", "INBOX", "all")


def box(mount_path: Path, folder: Folder) -> Path:
    return mount_path / "box" / folder.subpath if folder.subpath else mount_path / "box"


def tar_members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as t:
        return {Path(m.name).name: t.extractfile(m).read() for m in t.getmembers() if m.isfile()}


def test_default_one_file_per_message_and_everyday_tools_exit_0(folder: Folder, tmp_path: Path) -> None:
    with mounted(folder.config()) as m:
        d = box(m.path, folder)
        names = os.listdir(d)
        assert len(names) == 3 and all(n.endswith(".eml") for n in names)
        hits = run("grep", "-rl", "Subject: ", d).stdout.decode().splitlines()
        assert sorted(Path(h).name for h in hits) == sorted(names)  # each message once
        run("rsync", "-a", f"{d}/", tmp_path / "backup")  # exit 0: no "failed verification"
        tar = run("tar", "cf", tmp_path / "all.tar", "-C", d, ".", check=False)
        assert tar.returncode == 0, tar.stderr  # nothing "shrank", nothing "changed as we read it"
    backup = sorted(p.read_bytes() for p in (tmp_path / "backup").iterdir())
    assert backup == sorted(folder.held())  # the server's exact bytes
    assert sorted(tar_members(tmp_path / "all.tar").values()) == sorted(folder.held())


def test_decoded_view_finds_decoded_words_at_exact_sizes(folder: Folder, tmp_path: Path) -> None:
    with mounted(folder.config(decoded_view=True)) as m:
        d = box(m.path, folder)
        names = sorted(os.listdir(d))
        emls = [n for n in names if n.endswith(".eml")]
        assert names == sorted(emls + [n[:-4] + ".txt" for n in emls])
        texts = [d / n for n in names if n.endswith(".txt")]
        sizes = {t.name: t.stat().st_size for t in texts}  # before anything was read
        hits = run("grep", "-rl", WORD, d).stdout.decode().splitlines()
        assert [Path(h).suffix for h in hits] == [".txt"]
        assert "Quarterly figures" in Path(hits[0]).name
        assert WORD in Path(hits[0]).read_text()
        assert {t.name: len(t.read_bytes()) for t in texts} == sizes  # the first stat was exact
        run("rsync", "-a", f"{d}/", tmp_path / "backup")
        tar = run("tar", "cf", tmp_path / "all.tar", "-C", d, ".", check=False)
        assert tar.returncode == 0, tar.stderr
        with pytest.raises(OSError) as refused:
            (d / texts[0].name).write_text("edited")
        assert refused.value.errno in (errno.EPERM, errno.EROFS, errno.EACCES)
    backup = {p.name: p.read_bytes() for p in (tmp_path / "backup").iterdir()}
    assert sorted(v for k, v in backup.items() if k.endswith(".eml")) == sorted(folder.held())
    assert tar_members(tmp_path / "all.tar") == backup


def _bodies_fetched(server: Dovecot) -> int:
    """Message bodies Dovecot sent, from the logout lines of its log (``body_count=``)."""
    return sum(int(n) for n in re.findall(r"body_count=(\d+)", server.log()))


def test_a_message_and_its_text_are_fetched_once_without_a_folder_prefetch(
        dovecot_server: Dovecot) -> None:  # noqa: F811
    """Reading one message and then its text is a click in a file manager, not a scan."""
    name = unique("Click")
    dovecot_server.create_folder(name)
    dovecot_server.write_maildir("alice", name, (
        mail(f"Message {i}", BASE64_BODY if i == 7 else f"hay {i}", MIME if i == 7 else {})
        for i in range(500)))
    config = "\n".join(["[accounts.box]", f'url = "imaps://alice@127.0.0.1:{dovecot_server.imaps_port}"',
                        f'ca_file = "{dovecot_server.ca}"', 'password = "secret1"',
                        "decoded_view = true", "idle = false", ""])
    before = _bodies_fetched(dovecot_server)
    with mounted(config) as m:
        d = m.path / "box" / name
        (eml,) = [p for p in d.iterdir() if "Message 7 " in p.name and p.suffix == ".eml"]
        assert b"base64" in eml.read_bytes()
        assert WORD in eml.with_suffix(".txt").read_text()
    fetched = _bodies_fetched(dovecot_server) - before
    assert 1 <= fetched <= 64  # at most the first batch a fresh listing brings along, not 500
