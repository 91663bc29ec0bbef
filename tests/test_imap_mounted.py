"""IMAP through the real mount, driven by real tools; every result checked on the server."""
from __future__ import annotations

import errno
import os
import random
import re
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fsmount.backends.imap.listing import PARTS_FROM
from tests.faultproxy import FaultProxy, Relay, cut, relay, relaying
from tests.mounting import mounted, run, wait_for
from tests.servers.dovecot import (  # noqa: F401  (fixtures)
    Dovecot, _quote, available, dovecot, dovecot_server, fresh_dovecot,
)
from tests.servers.dovecot import version as dovecot_version
from tests.test_imap_backend import (
    ATTACHMENT, CORPUS, EIGHTBIT, PLAIN, CuttingProxy, server_messages, unique,
)

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no FUSE")


def config(server: Dovecot, **options: object) -> str:
    lines = ["[accounts.mail]", f'url = "imaps://alice@127.0.0.1:{server.imaps_port}"',
             f'ca_file = "{server.ca}"', 'password = "secret1"']
    for key, value in options.items():
        lines.append(f"{key} = {value!r}".replace("'", '"').replace("True", "true").replace("False", "false"))
    return "\n".join(lines) + "\n"


def through(relay: Relay, **options: object) -> str:
    """A mount of alice's mail through ``relay``, in clear so that it can read the commands."""
    lines = ["[accounts.mail]", f'url = "imap://alice@127.0.0.1:{relay.port}"', 'password = "secret1"',
             'plaintext_auth = true', 'tls = "off"']
    for key, value in options.items():
        lines.append(f"{key} = {value!r}".replace("'", '"').replace("True", "true").replace("False", "false"))
    return "\n".join(lines) + "\n"


def emls(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix == ".eml")


def uid_of(path: Path) -> int:
    return int(re.search(r"\[(\d+)\]\.eml$", path.name).group(1))


def test_ls_cat_grep_find(dovecot_server: Dovecot) -> None:
    folder = unique("Read")
    dovecot_server.create_folder(folder)
    dovecot_server.create_folder(f"{folder}/Unter ü")
    uids = dovecot_server.append_many("alice", CORPUS, folder)
    held = server_messages(dovecot_server, folder)
    with mounted(config(dovecot_server)) as m:
        mail = m.path / "mail"
        assert {"INBOX", "Sent", "Trash", "Drafts", folder} <= set(os.listdir(mail))
        d = mail / folder
        files = emls(d)
        assert sorted(uid_of(f) for f in files) == uids
        assert (d / "Unter ü").is_dir()
        for f in files:
            assert f.stat().st_size == len(held[uid_of(f)][0])
            assert run("cat", f).stdout == held[uid_of(f)][0]
        head = run("head", "-c", "100", files[0]).stdout
        assert head == held[uid_of(files[0])][0][:100]
        found = run("grep", "-rl", "Subject: Report attached", mail).stdout.decode().splitlines()
        assert len(found) == 1 and found[0].endswith(".eml") and "Report attached" in found[0]
        raw_hits = run("grep", "-rlF", "Straße", d, "--include=*.eml").stdout.decode().splitlines()
        assert len(raw_hits) == 1
        listed = run("find", d, "-name", "*.eml").stdout.decode().splitlines()
        assert len(listed) == len(CORPUS)
        assert os.getxattr(files[0], "user.imap.seen") == b"0"
    assert all(b"\\Seen" not in flags for _, flags in server_messages(dovecot_server, folder).values())


def test_cp_mv_rm_and_refusals(dovecot_server: Dovecot, tmp_path: Path) -> None:
    a, z = unique("WriteA"), unique("WriteZ")
    dovecot_server.create_folder(a)
    dovecot_server.create_folder(z)
    dovecot_server.deliver("alice", EIGHTBIT, a)
    source = tmp_path / "note.eml"
    source.write_bytes(PLAIN)
    junk = tmp_path / "junk.eml"
    junk.write_bytes(b"this is not a mail message\n")
    with mounted(config(dovecot_server), expect_warnings=["junk.eml: closed with changes that were never stored"]) as m:
        da, dz = m.path / "mail" / a, m.path / "mail" / z
        run("cp", source, da)
        copied = [f for f in emls(da) if "Plain hello" in f.name]
        assert len(copied) == 1 and copied[0].read_bytes() == PLAIN
        assert "note.eml" not in os.listdir(da)  # still resolvable for a moment: see cache/layer.py aliases
        done = run("cp", junk, da, check=False)
        assert done.returncode != 0
        with pytest.raises(OSError) as err:
            with open(copied[0], "r+b") as f:
                f.write(b"X")
        assert err.value.errno in (errno.EPERM, errno.EROFS, errno.EACCES)
        run("mv", copied[0], dz)
        moved = emls(dz)
        assert len(moved) == 1 and moved[0].read_bytes() == PLAIN
        (other,) = emls(da)
        run("rm", other)
        assert emls(da) == []
        run("mkdir", da / "Sub dir")
        run("mv", da / "Sub dir", da / "Renamed")
        run("rmdir", da / "Renamed")
        assert sorted(os.listdir(da)) == []
    assert server_messages(dovecot_server, a) == {}
    assert [raw for raw, _ in server_messages(dovecot_server, z).values()] == [PLAIN]
    assert any(raw == EIGHTBIT for raw, _ in server_messages(dovecot_server, "Trash").values())
    with dovecot_server.imap() as conn:
        _, names = conn.list(_quote(a), "*")
    assert all(name is None or b"Renamed" not in name for name in names)


def test_python_writes(dovecot_server: Dovecot) -> None:
    """(A rename of the name a message was written under, as rsync and editors do, fails for
    now: after APPEND the file has its message name, and the kernel no longer finds the old.)"""
    folder = unique("Write")
    dovecot_server.create_folder(folder)
    with mounted(config(dovecot_server)) as m:
        d = m.path / "mail" / folder
        (d / "one.eml").write_bytes(PLAIN)
        with open(d / "two.eml", "wb") as f:
            f.write(EIGHTBIT[:100])
            f.write(EIGHTBIT[100:])
        assert len(emls(d)) == 2
    held = sorted(raw for raw, _ in server_messages(dovecot_server, folder).values())
    assert held == sorted([PLAIN, EIGHTBIT])


def test_flags_with_xattr_tools(dovecot_server: Dovecot) -> None:
    folder = unique("Xattr")
    dovecot_server.create_folder(folder)
    uid = dovecot_server.deliver("alice", ATTACHMENT, folder)
    with mounted(config(dovecot_server)) as m:
        (f,) = emls(m.path / "mail" / folder)
        os.setxattr(f, "user.imap.seen", b"1")
        os.setxattr(f, "user.imap.flagged", b"1")
        assert os.getxattr(f, "user.imap.flagged") == b"1"
        names = os.listxattr(f)
        assert "user.imap.flags" in names and "user.imap.seen" in names
        if subprocess.run(["which", "getfattr"], capture_output=True).returncode == 0:
            out = run("getfattr", "-n", "user.imap.flags", "--only-values", f).stdout
            assert set(out.split()) == {b"\\Seen", b"\\Flagged"}
        assert os.getxattr(m.path / "mail" / "Trash", "user.imap.special-use") == b"\\Trash"
        for probe in ("security.selinux", "system.posix_acl_access"):
            with pytest.raises(OSError) as e:  # not ENODATA: ls -l then stops probing each file
                os.getxattr(f, probe)
            assert e.value.errno == errno.EOPNOTSUPP
    assert set(server_messages(dovecot_server, folder)[uid][1].split()) == {b"\\Seen", b"\\Flagged"}


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_idle_survives_a_dropped_connection(fresh_dovecot: Dovecot) -> None:
    """A dropped IDLE connection (a server restart, a NAT timeout) neither spins nor leaves
    INBOX stale: the mount idles at no CPU, reconnects, and new mail shows up."""
    srv = fresh_dovecot
    srv.deliver("alice", PLAIN)
    proxy = CuttingProxy(srv)
    try:
        cfg = (f'[accounts.mail]\nurl = "imap://alice@127.0.0.1:{proxy.port}"\n'
               'password = "secret1"\nplaintext_auth = true\ntls = "off"\n')
        with mounted(cfg) as m:
            inbox = m.path / "mail" / "INBOX"
            assert len(emls(inbox)) == 1
            wait_for(lambda: b"IDLE" in proxy.from_client, 10, "fsmount's IDLE")
            cut(*proxy.sockets)  # every connection fsmount has, the IDLE one too, is cut
            cpu = _cpu_seconds(m.proc.pid)
            window = 1.5
            time.sleep(window)  # a measuring window, not a wait: a spinning IDLE thread burns it
            assert _cpu_seconds(m.proc.pid) - cpu < window / 3
            for count in (2, 3):
                srv.deliver("alice", EIGHTBIT)
                wait_for(lambda: len(emls(inbox)) == count, 15, "the new message in INBOX")
    finally:
        proxy.close()


class ShortLiteralProxy(FaultProxy):
    """A lying IMAP server: every ``BODY[] {N}`` literal it relays is cut to ``N // 2`` bytes,
    announced as such and closed with a plausible ``)`` (what RFC822.SIZE said stays)."""

    def serve(self, client: socket.socket, upstream: socket.socket) -> None:
        threading.Thread(target=relay, args=(client, upstream), daemon=True).start()
        threading.Thread(target=self._shorten, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _shorten(src: socket.socket, dst: socket.socket) -> None:
        pending = b""
        literal = re.compile(rb"BODY\[\] \{(\d+)\}\r\n")
        try:
            while data := src.recv(65536):
                pending += data
                while (m := literal.search(pending)) and len(pending) >= m.end() + int(m[1]):
                    n, body = int(m[1]), pending[m.end():m.end() + int(m[1])]
                    dst.sendall(pending[:m.start()] + b"BODY[] {%d}\r\n" % (n // 2) + body[:n // 2])
                    pending = pending[m.end() + n:]
                if not literal.search(pending) and b"BODY[] {" not in pending:
                    dst.sendall(pending)
                    pending = b""
        except OSError:
            pass
        cut(dst)


def test_a_literal_shorter_than_announced_is_an_error_not_a_short_file(
        dovecot_server: Dovecot) -> None:
    folder = unique("Liar")
    dovecot_server.create_folder(folder)
    dovecot_server.deliver("alice", ATTACHMENT, folder)
    proxy = ShortLiteralProxy(dovecot_server.host, dovecot_server.imap_port)
    try:
        cfg = (f'[accounts.mail]\nurl = "imap://alice@127.0.0.1:{proxy.port}"\n'
               'password = "secret1"\nplaintext_auth = true\ntls = "off"\ndecoded_view = false\n')
        with mounted(cfg, expect_warnings=[r"bytes where it announced"]) as m:
            (f,) = emls(m.path / "mail" / folder)
            assert f.stat().st_size == len(ATTACHMENT)
            done = run("cat", f, check=False)
            assert done.returncode != 0 and len(done.stdout) < len(ATTACHMENT)
            done = run("cat", f, check=False)  # nothing short was kept in the cache either
            assert done.returncode != 0
    finally:
        proxy.close()


class CodeDroppingProxy(FaultProxy):
    """A server that gives no response codes (they are optional): every tagged ``NO [CODE]
    text`` it relays becomes ``NO text``, the real server's words kept. ``dropped`` counts
    the replies rewritten."""

    def __init__(self, host: str, port: int) -> None:
        self.dropped = 0
        super().__init__(host, port)

    def serve(self, client: socket.socket, upstream: socket.socket) -> None:
        threading.Thread(target=relay, args=(client, upstream), daemon=True).start()
        threading.Thread(target=self._drop_codes, args=(upstream, client), daemon=True).start()

    def _drop_codes(self, src: socket.socket, dst: socket.socket) -> None:
        coded = re.compile(rb"([A-Za-z0-9.]+ NO )\[[^\]]*\] ")
        try:
            for line in src.makefile("rb"):
                line, n = coded.subn(rb"\1", line, count=1)
                self.dropped += n
                dst.sendall(line)
        except OSError:
            pass
        cut(dst)


ACL_RIGHTS = {"Locked": "lr", "Kept": "lr", "Secret": "l"}  # read-only; unreadable


def acl_config(srv: Dovecot) -> str:
    """The owner's rights on a few folders, as Dovecot 2.3 (a global ACL file) or 2.4 (ACLs in
    the configuration; 2.4 dropped global ACL files) wants them."""
    if dovecot_version() >= (2, 4):
        folders = "".join(f"  mailbox {name} {{\n    acl owner {{\n      rights = {rights}\n    }}\n  }}\n"
                          for name, rights in ACL_RIGHTS.items())
        return f"mail_plugins {{\n  acl = yes\n}}\nacl_driver = vfile\nnamespace inbox {{\n{folders}}}\n"
    acl = srv.dir / "acl.global"
    acl.write_text("".join(f"{name} owner {rights}\n" for name, rights in ACL_RIGHTS.items()))
    return f"mail_plugins = $mail_plugins acl\nplugin {{\n  acl = vfile:{acl}:cache_secs=0\n}}\n"


def test_refusals_without_response_codes_get_their_errno_from_the_words() -> None:
    """Dovecot's ACLs refuse with ``NO [NOPERM] Permission denied``; through a proxy that drops
    the codes, ``ls``, ``cat``, ``mkdir``, ``cp`` and ``rmdir`` still fail with EACCES (not
    EIO), and a message in a folder deleted elsewhere is ENOENT; the server holds nothing new."""
    if not available():
        pytest.skip("dovecot is not installed")
    with dovecot() as srv:
        with open(srv.dir / "dovecot.conf", "a") as f:
            f.write(acl_config(srv))
        srv.restart()
        for name in ["Locked", "Kept", "Secret", "Gone"]:
            srv.create_folder(name)
        srv.write_maildir("alice", "Locked", [PLAIN])
        proxy = CodeDroppingProxy(srv.host, srv.imap_port)
        cfg = (f'[accounts.mail]\nurl = "imap://alice@127.0.0.1:{proxy.port}"\n'
               'password = "secret1"\nplaintext_auth = true\ntls = "off"\n')
        try:
            with mounted(cfg, expect_warnings=["Permission denied"]) as m:
                mail = m.path / "mail"
                assert {"Locked", "Secret", "Gone"} <= set(os.listdir(mail))
                with pytest.raises(PermissionError):
                    os.listdir(mail / "Secret")
                with pytest.raises(PermissionError):
                    open(mail / "Secret" / "2024-01-01 0000 x [1].eml", "rb").close()
                done = run("ls", mail / "Secret", check=False)
                assert done.returncode != 0 and b"Permission denied" in done.stderr
                [message] = emls(mail / "Locked")
                assert run("cat", message).stdout == PLAIN
                with pytest.raises(PermissionError):
                    os.mkdir(mail / "Locked" / "Sub")
                done = run("mkdir", mail / "Locked" / "Sub", check=False)
                assert done.returncode != 0 and b"Permission denied" in done.stderr
                with pytest.raises(PermissionError):
                    with open(mail / "Locked" / "new.eml", "wb") as f:
                        f.write(PLAIN)
                with pytest.raises(PermissionError):
                    os.rmdir(mail / "Kept")
                srv.doveadm("mailbox", "delete", "-u", "alice", "Gone")  # "NO Mailbox doesn't exist"
                with pytest.raises(FileNotFoundError):
                    open(mail / "Gone" / "2024-05-06 0800 Plain hello [1].eml", "rb").close()
            assert proxy.dropped >= 5
        finally:
            proxy.close()
        with srv.imap() as conn:
            assert conn.select(_quote("Locked"), readonly=True) == ("OK", [b"1"])
            assert conn.list('""', _quote("Locked/Sub"))[1] == [None]
            assert conn.list('""', "Kept")[1] != [None]


def test_listing_xattr_names_asks_the_server_nothing(dovecot_server: Dovecot) -> None:
    """``ls -l`` (coreutils 9.5 on) lists every file's xattr names: no FETCH per message."""
    folder = unique("XattrNames")
    dovecot_server.create_folder(folder)
    dovecot_server.append_many("alice", [PLAIN] * 20, folder)
    proxy = CuttingProxy(dovecot_server)
    try:
        cfg = (f'[accounts.mail]\nurl = "imap://alice@127.0.0.1:{proxy.port}"\n'
               'password = "secret1"\nplaintext_auth = true\ntls = "off"\n')
        with mounted(cfg) as m:
            files = emls(m.path / "mail" / folder)
            assert len(files) == 20
            before = len(proxy.from_client)
            for f in files:
                assert "user.imap.seen" in os.listxattr(f)
            assert b"FETCH" not in proxy.from_client[before:].upper()
            assert os.getxattr(files[0], "user.imap.seen") == b"0"  # values still come
    finally:
        proxy.close()


def test_xattrs_can_be_turned_off(dovecot_server: Dovecot) -> None:
    """``xattrs = false``: the kernel is told once that there are none, and everything else
    works."""
    folder = unique("NoXattr")
    dovecot_server.create_folder(folder)
    dovecot_server.deliver("alice", PLAIN, folder)
    with mounted(config(dovecot_server, xattrs=False)) as m:
        d = m.path / "mail" / folder
        (f,) = emls(d)
        with pytest.raises(OSError) as e:
            os.getxattr(f, "user.imap.flags")
        assert e.value.errno == errno.EOPNOTSUPP
        assert f.name.encode() in run("ls", "-l", d).stdout
        assert run("cat", f).stdout == PLAIN


def test_new_mail_appears_without_remount(dovecot_server: Dovecot) -> None:
    folder = unique("Live")
    dovecot_server.create_folder(folder)
    dovecot_server.deliver("alice", PLAIN, folder)
    with mounted(config(dovecot_server, metadata_ttl=0.5)) as m:
        d = m.path / "mail" / folder
        assert len(emls(d)) == 1
        dovecot_server.deliver("alice", EIGHTBIT, folder)
        wait_for(lambda: len(emls(d)) == 2, 20, "the new message")
        with dovecot_server.imap() as conn:
            conn.select(_quote(folder))
            conn.uid("STORE", "1", "+FLAGS", "(\\Deleted)")
            conn.expunge()
        wait_for(lambda: len(emls(d)) == 1, 20, "the expunged message to go")


# -- benchmark (FSMOUNT_BENCH=1 pytest -s -k bench, or bench_imap() from tests/bench.py) -----

def bench_message(i: int, rng: random.Random) -> bytes:
    """2–50 KiB, mixed plain text and a base64 part, like real mail."""
    size = rng.randint(2 << 10, 50 << 10)
    words = " ".join(rng.choice(["alpha", "beta", "gamma", "delta", "report", "meeting", "lunch"])
                     for _ in range(size // 12))
    lines = "\r\n".join(words[k:k + 70] for k in range(0, len(words), 70))
    return (f"From: sender{i}@example.org\r\nTo: alice@example.org\r\nSubject: Bench message {i}\r\n"
            f"Date: Mon, 06 May 2024 10:{i % 60:02d}:00 +0000\r\nMessage-ID: <bench{i}@example.org>\r\n"
            f"\r\n{lines}\r\n").encode()


def bench_imap(count: int = 10_000) -> None:
    """Cold/warm grep -rl and cold ls -l of a ``count``-message folder against a direct batch
    FETCH of the same messages, and the FUSE floor; prints one line per ratio."""
    import imaplib
    import time

    from tests.bench import (alternating, clock, floor_mount, grep_cold_warm, grep_time,
                             per_round, report, spread)
    from tests.mounting import scratch_dir
    from tests.servers.dovecot import dovecot

    rng = random.Random(7)
    messages = [bench_message(i, rng) for i in range(count)]
    with dovecot() as server:
        server.write_maildir("alice", "Bench", messages)
        conn = imaplib.IMAP4("127.0.0.1", server.imap_port, timeout=600)
        conn.login("alice", "secret1")
        conn.select("Bench", readonly=True)  # let Dovecot index the folder before timing
        conn.fetch("1:*", "(UID RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT DATE)])")
        listing = clock(lambda: conn.fetch(
            "1:*", "(UID RFC822.SIZE INTERNALDATE BODY.PEEK[HEADER.FIELDS (SUBJECT DATE)])"), 3)
        direct = clock(lambda: conn.fetch("1:*", "(BODY.PEEK[])"), 3)
        conn.logout()
        local = scratch_dir("bench-imap-")
        for i, raw in enumerate(messages):
            (local / f"{i:05d}.eml").write_bytes(raw)
        os.sync()  # their write-back would otherwise run into the timings below

        def config(view: bool) -> str:
            return (f'[accounts.mail]\nurl = "imap://alice@127.0.0.1:{server.imap_port}"\n'
                    f'password = "secret1"\nplaintext_auth = true\ntls = "off"\n'
                    f'decoded_view = {"true" if view else "false"}\ntimeout = 120\n')

        def cold_grep() -> float:  # on default settings, a fresh mount: ls -l, then grep -rl
            with mounted(config(False), debug=False) as m:
                folder = m.path / "mail" / "Bench"
                subprocess.run(["ls", "-l", str(folder)], stdout=subprocess.DEVNULL, check=True)
                return grep_time(folder)

        def floor_first(flush: bool) -> float:
            with floor_mount(local, flush=flush) as fl:
                return grep_time(fl)

        label = f"imap {count} msgs"
        times = alternating(3, {
            "mbsync": lambda: mbsync_first_sync_and_grep(server, "Bench", "no-such-needle"),
            "mbsync-nofsync": lambda: mbsync_first_sync_and_grep(server, "Bench", "no-such-needle",
                                                                 fsync=False),
            "fsmount": cold_grep, "floor": lambda: floor_first(False),
            "floor+FLUSH": lambda: floor_first(True)}, settle=os.sync)
        for what, t in times.items():
            print(f"{label}: cold grep -rl, {what:<14} {spread(t)}", flush=True)
        per_round(f"{label}: cold grep -rl (fsmount) vs mbsync's first sync + grep", times,
                  "fsmount", "mbsync", "<= 0.50x")
        per_round(f"{label}: cold grep -rl (fsmount) vs mbsync's with FSync no", times,
                  "fsmount", "mbsync-nofsync", "")
        per_round(f"{label}: first grep -rl of a floor answering FLUSH vs mbsync's", times,
                  "floor+FLUSH", "mbsync", "(a bound for a writable mount)")
        per_round(f"{label}: cold grep -rl (fsmount) vs the floor answering FLUSH", times,
                  "fsmount", "floor+FLUSH", "")
        per_round(f"{label}: first grep -rl of the floor vs mbsync's", times, "floor", "mbsync",
                  "(a bound)")
        for view in (False, True):
            label = f"imap {count} msgs{' +decoded view' if view else ''}"
            with mounted(config(view), debug=False) as m:
                folder = m.path / "mail" / "Bench"
                start = time.perf_counter()
                subprocess.run(["ls", "-l", str(folder)], stdout=subprocess.DEVNULL, check=True)
                ls_cold = time.perf_counter() - start
                report(f"{label}: cold ls -l vs one batched listing FETCH", ls_cold, listing,
                       "fetch", "<= 2.00x")
                if not view:  # the floor's first ls -l of the same messages as local files
                    with floor_mount(local) as fl:
                        floor_ls = clock(lambda: subprocess.run(
                            ["ls", "-l", str(fl)], stdout=subprocess.DEVNULL, check=True))
                    report(f"{label}: first ls -l of the floor vs the listing FETCH", floor_ls,
                           listing, "fetch", "(a bound)")
                    report(f"{label}: cold ls -l (fsmount) vs the floor's first", ls_cold,
                           floor_ls, "floor", "")
                if not view:  # cold against a direct fetch, warm against the floor
                    grep_cold_warm(label, folder, local, direct, "no-such-needle", writable=True)
                    continue
                cold = grep_time(folder)
                warm = clock(lambda: grep_time(folder), 3)
                report(f"{label}: cold grep -rl vs direct batch FETCH", cold, direct, "direct", "<= 2.00x")
                print(f"{label}: warm grep -rl {warm:.3f}s", flush=True)
        # FLUSH refused: no request per close to answer
        with mounted(config(False) + "readonly = true\n", debug=False) as m:
            folder = m.path / "mail" / "Bench"
            subprocess.run(["ls", "-l", str(folder)], stdout=subprocess.DEVNULL, check=True)
            grep_cold_warm(f"imap {count} msgs, read-only account", folder, local, direct,
                           "no-such-needle")
        shutil.rmtree(local, ignore_errors=True)


def mbsync_first_sync_and_grep(server: Dovecot, folder: str, needle: str,
                               fsync: bool = True) -> float:
    """The incumbent's way to grep a mailbox: mbsync (isync) copies it to a local Maildir
    first. Seconds for that first sync plus ``grep -rl`` over the copy. mbsync fsyncs each
    message by default; without (``fsync=False``) it is as fast as it gets."""
    import time

    from tests.mounting import scratch_dir

    home = scratch_dir("bench-mbsync-")
    try:
        rc = home / "mbsyncrc"
        rc.write_text("\n".join([*([] if fsync else ["FSync no", ""]),
            "IMAPAccount bench", "Host 127.0.0.1", f"Port {server.imap_port}", "User alice",
            "Pass secret1", "SSLType None", "AuthMechs LOGIN", "",
            "IMAPStore remote", "Account bench", "",
            "MaildirStore local", f"Path {home}/mail/", f"Inbox {home}/mail/INBOX", "",
            "Channel bench", "Far :remote:", "Near :local:", f"Patterns {folder}", "Create Near",
            "SyncState *", "Sync Pull", ""]))
        rc.chmod(0o600)
        (home / "mail").mkdir()
        start = time.perf_counter()
        subprocess.run(["mbsync", "-q", "-c", str(rc), "bench"], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["grep", "-rl", needle, str(home / "mail")], stdout=subprocess.DEVNULL)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.skipif(not os.environ.get("FSMOUNT_BENCH"), reason="benchmark: set FSMOUNT_BENCH=1")
def test_bench_imap() -> None:
    bench_imap(int(os.environ.get("FSMOUNT_BENCH_COUNT", "10000")))


def bench_imap_memory(count: int = 100_000) -> None:
    """Peak RSS of fsmount listing one ``count``-message folder (target: < 300 MiB)."""
    import time

    from tests.bench import rss_peak
    from tests.servers.dovecot import dovecot

    def message(i: int) -> bytes:
        return (f"From: sender{i}@example.org\r\nSubject: Message number {i} about things\r\n"
                f"Date: Mon, 06 May 2024 10:{i % 60:02d}:00 +0200\r\n\r\n").encode() + b"x" * 100 + b"\r\n"

    with dovecot() as server:
        server.write_maildir("alice", "Huge", (message(i) for i in range(count)))
        for view in ("false", "true"):
            cfg = (f'[accounts.mail]\nurl = "imap://alice@127.0.0.1:{server.imap_port}"\n'
                   f'password = "secret1"\nplaintext_auth = true\ntls = "off"\n'
                   f"decoded_view = {view}\ntimeout = 300\n")
            with mounted(cfg, debug=False, timeout=120) as m:
                start = time.perf_counter()
                subprocess.run(["ls", "-l", str(m.path / "mail" / "Huge")], stdout=subprocess.DEVNULL,
                               check=True)
                took = time.perf_counter() - start
                peak = rss_peak(m.proc.pid) / 2**20
                print(f"imap {count} msgs decoded_view={view}: cold ls -l {took:.2f}s, "
                      f"fsmount peak RSS {peak:.0f} MiB (target < 300 MiB)", flush=True)
                assert peak < 300


@pytest.mark.skipif(not os.environ.get("FSMOUNT_BENCH"), reason="benchmark: set FSMOUNT_BENCH=1")
def test_bench_imap_memory() -> None:
    bench_imap_memory(int(os.environ.get("FSMOUNT_BENCH_BIG", "100000")))


def test_mount_fails_clearly_on_an_untrusted_certificate(dovecot_server: Dovecot) -> None:
    """(A wrong password: tests/contract.)"""
    untrusted = config(dovecot_server).replace(f'ca_file = "{dovecot_server.ca}"\n', "")
    with pytest.raises(RuntimeError) as e:
        with mounted(untrusted):
            pass
    assert "certificate" in str(e.value).lower()


def test_head_of_a_big_message_fetches_only_its_start(dovecot_server: Dovecot) -> None:
    folder = unique("Huge")
    dovecot_server.create_folder(folder)
    big = b"From: a@example.org\r\nSubject: big\r\n\r\n" + b"".join(
        b"line %08d of a big message\r\n" % i for i in range(400_000))  # ~12 MiB
    dovecot_server.deliver("alice", big, folder)
    _, before = dovecot_server.bodies_sent()
    with mounted(config(dovecot_server, decoded_view=False)) as m:
        (f,) = emls(m.path / "mail" / folder)
        assert f.stat().st_size == len(big)
        assert run("head", "-c", "4096", f).stdout == big[:4096]
    sent = wait_for(lambda: dovecot_server.bodies_sent()[1] - before, what="the sessions' end lines")
    assert sent <= len(big) // 2, sent  # the server sent the head, not the message


def test_rsync_and_write_then_rename_into_a_folder(dovecot_server: Dovecot, tmp_path: Path) -> None:
    """rsync and editors write a temporary name and rename it; the APPEND already named the
    message, so the rename must still find the written name, and nothing is appended twice."""
    folder = unique("Imported")
    dovecot_server.create_folder(folder)
    (tmp_path / "hello.eml").write_bytes(PLAIN)
    with mounted(config(dovecot_server)) as m:
        target = m.path / "mail" / folder
        run("rsync", "-r", tmp_path / "hello.eml", f"{target}/")  # -t: ENOTSUP, dates come from the message
        tmp = target / ".draft.eml.tmp"
        tmp.write_bytes(EIGHTBIT)
        os.rename(tmp, target / "draft.eml")
        assert len(emls(target)) == 2
    held = sorted(raw for raw, _ in server_messages(dovecot_server, folder).values())
    assert held == sorted([PLAIN, EIGHTBIT])


def test_rm_of_a_name_just_written_removes_the_message(dovecot_server: Dovecot) -> None:
    """A program removes the file it just wrote (vim's ``4913`` probe, an abandoned temporary
    name): the APPEND named the message itself, yet ``rm`` of the written name reaches it."""
    folder = unique("Probe")
    dovecot_server.create_folder(folder)
    with mounted(config(dovecot_server)) as m:
        written = m.path / "mail" / folder / ".probe.tmp"
        written.write_bytes(PLAIN)
        run("rm", written)
        assert emls(m.path / "mail" / folder) == []
    assert server_messages(dovecot_server, folder) == {}


def test_a_big_folder_shows_while_it_arrives_and_lists_whole(dovecot_server: Dovecot) -> None:
    """``ls -l`` of a folder listed afresh starts on the first part of the FETCH; what it
    shows is still the whole folder, once each, and the same as a listing from the cache."""
    folder = unique("Big")
    count = 2600
    dovecot_server.create_folder(folder)  # through IMAP: Dovecot's folder list knows it
    dovecot_server.write_maildir("alice", folder, (
        f"From: a@example.org\r\nSubject: big {i}\r\n\r\nbody {i}\r\n".encode() for i in range(count)))
    with relaying(dovecot_server.host, dovecot_server.imap_port) as relay, \
            mounted(through(relay, decoded_view=False)) as m:
        d = m.path / "mail" / folder
        assert folder in os.listdir(d.parent)  # the folders are known: next comes d's FETCH
        relay.hold_after = 100_000  # of the server's answers: part of the FETCH (~140 bytes a message)
        first: list[str] = []
        reader = threading.Thread(target=lambda: first.extend(e.name for e in os.scandir(d)), daemon=True)
        reader.start()
        wait_for(lambda: first or not reader.is_alive(), 20, "readdir to show the first part")
        shown = len(first)
        wait_for(relay.held.is_set, 20, "the relay to hold back the rest of the FETCH")
        relay.release()  # (until now fsmount could not have had the whole answer)
        reader.join()
        assert 0 < shown < count, shown  # readdir did not wait for the rest
        lines = run("ls", "-l", d).stdout.decode().splitlines()[1:]  # after "total"
        assert len(lines) == count and all(line.endswith(".eml") for line in lines)
        names = sorted(os.listdir(d))
        assert len(set(names)) == count and sorted(uid_of(Path(n)) for n in names) == list(range(1, count + 1))
        assert sorted(first) == names  # the listing shown in parts is the whole folder, once each
        assert run("find", d, "-name", "*.eml").stdout.decode().count("\n") == count


def test_grep_over_a_folder_shown_in_parts_fetches_each_message_once(dovecot_server: Dovecot) -> None:
    """The prefetcher follows the order readdir showed (parts, as they came): a cold grep
    over .eml and .txt files fetches every message once, in batches."""
    folder = unique("BigGrep")
    count = 2200
    assert count >= PARTS_FROM  # readdir shows it in parts (see the test above)
    dovecot_server.create_folder(folder)
    dovecot_server.write_maildir("alice", folder, (
        f"From: a@example.org\r\nSubject: =?utf-8?q?gr=C3=BC=C3=9Fe_{i}?=\r\n\r\n"
        f"{'needle' if i == 1234 else 'hay'} {i}\r\n".encode() for i in range(count)))
    before, _ = dovecot_server.bodies_sent()
    relay = Relay(dovecot_server.host, dovecot_server.imap_port)  # counts the commands sent
    cfg = (f'[accounts.mail]\nurl = "imap://alice@127.0.0.1:{relay.port}"\npassword = "secret1"\n'
           'plaintext_auth = true\ntls = "off"\ndecoded_view = true\n')
    try:
        with mounted(cfg) as m:
            d = m.path / "mail" / folder
            hits = run("grep", "-rl", "needle", d).stdout.decode().splitlines()
            assert sorted(Path(h).suffix for h in hits) == [".eml", ".txt"]
    finally:
        relay.close()
    # each message sent once, for both of its files ...
    wait_for(lambda: dovecot_server.bodies_sent()[0] - before >= count, what="the sessions' end lines")
    assert dovecot_server.bodies_sent()[0] - before == count
    # ... in batches: a few UID FETCH commands, not one per message
    fetches = bytes(relay.from_client).count(b"(BODY.PEEK[])")
    assert 0 < fetches <= count // 16, fetches


def test_a_listing_cut_midway_is_retried_or_fails_ls_and_is_not_kept(dovecot_server: Dovecot) -> None:
    """A listing shown in parts and cut once is fetched again and shows each message once;
    cut on every try, ``ls`` fails (the parts shown do not pass as the whole folder), and
    the next listing is complete."""
    count = PARTS_FROM + PARTS_FROM // 10  # shown in parts
    half = 100 * count  # bytes: about half of the listing FETCH
    folders = [unique("CutOnce"), unique("CutAlways")]
    for folder in folders:
        dovecot_server.create_folder(folder)  # through IMAP: Dovecot's folder list knows it
        dovecot_server.write_maildir("alice", folder, (
            f"From: a@example.org\r\nSubject: cut {i}\r\n\r\nbody {i}\r\n".encode() for i in range(count)))
    proxy = CuttingProxy(dovecot_server)
    try:
        cfg = (f'[accounts.mail]\nurl = "imap://alice@127.0.0.1:{proxy.port}"\npassword = "secret1"\n'
               'plaintext_auth = true\ntls = "off"\ndecoded_view = false\ntimeout = 2\n')
        with mounted(cfg) as m:
            once, always = (m.path / "mail" / f for f in folders)
            assert once.is_dir() and always.is_dir()
            proxy.cut_after = half  # once
            lines = run("ls", "-l", once).stdout.decode().splitlines()[1:]
            assert proxy.cuts == 1 and len(lines) == len(set(lines)) == count
            proxy.cut_each = half  # every try
            broken = subprocess.run(["ls", "-l", always], capture_output=True, check=False)
            assert broken.returncode != 0 and b"reading directory" in broken.stderr, broken.stderr
            assert 0 < broken.stdout.count(b"\n") < count and proxy.cuts >= 3
            cuts = proxy.cuts  # a lookup just after answers from the failure, lists nothing
            with pytest.raises(OSError):
                (always / "no such message.eml").stat()
            assert proxy.cuts == cuts
            proxy.cut_each = None
            assert len(os.listdir(always)) == count
    finally:
        proxy.close()


def test_mv_of_several_messages_into_a_folder_exits_0(dovecot_server: Dovecot) -> None:
    """The server names a moved message (a new UID): mv's look at what it made still works."""
    a, z = unique("MoveA"), unique("MoveZ")
    dovecot_server.create_folder(a)
    dovecot_server.create_folder(z)
    dovecot_server.append_many("alice", CORPUS[:3], a)
    with mounted(config(dovecot_server)) as m:
        da, dz = m.path / "mail" / a, m.path / "mail" / z
        assert emls(dz) == []  # the target's listing is known (and complete) before
        run("mv", *emls(da), dz)  # exit 0, where it said "cannot stat" the old names
        assert emls(da) == [] and len(emls(dz)) == 3
    assert server_messages(dovecot_server, a) == {}
    assert sorted(raw for raw, _ in server_messages(dovecot_server, z).values()) == sorted(CORPUS[:3])
