"""The FTP backend against real servers (pyftpdlib, vsftpd), without FUSE."""
from __future__ import annotations

import ftplib
import logging
import os
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import trio

from fsmount.backends import ftp
from fsmount.config import make_account
from fsmount.credentials import Secret
from fsmount.errors import (
    IsADirectory, NoSpace, NotEmpty, NotFound, PermissionDenied, TimedOut,
    Transient, Unsupported,
)
from tests.servers.ftp import USERS, FtpServer, running_ftp, running_vsftpd
from tests.backend_support import remove_spools, run, scratch, spool  # noqa: F401  (autouse fixture)

T = TypeVar("T")


@pytest.fixture
def server() -> Iterator[FtpServer]:
    with running_ftp() as s:
        yield s


def backend_for(url: str, *, password: str | None = None, ca: Path | None = None,
                **options: Any) -> ftp.FtpBackend:
    table: dict[str, Any] = {"url": url, "timeout": 5}
    if ca is not None:
        table["ca_file"] = str(ca)
    table.update(options)
    account = make_account("ftp", table, where="test")
    user = account.user
    if password is None and user in USERS:
        password = USERS[user]
    return ftp.create(account, Secret(password), None)


def alice(server: FtpServer, scheme: str = "ftp", **options: Any) -> ftp.FtpBackend:
    if scheme == "ftp":
        options.setdefault("plaintext_auth", True)
    return backend_for(server.url(scheme), ca=server.ca, **options)


def asked(server: FtpServer, since: int = 0) -> list[str]:
    """The commands the server received (from every connection) after the first ``since``,
    by their first word: ``["STOR", "RNFR", …]``."""
    return [c.split(" ", 1)[0] for c in server.commands()[since:]]


def no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob(".fsmount-*")]


# -- the contract, over plain, explicit and implicit FTPS ------------------------------------


@pytest.mark.parametrize("scheme", ["ftp", "ftpes", "ftps"])
def test_contract(server: FtpServer, scheme: str) -> None:
    root = server.root
    blob = os.urandom(3 << 20)
    (root / "big.bin").write_bytes(blob)
    (root / "dir").mkdir()
    (root / "dir" / "grüße €.txt").write_text("hallo")

    async def scenario(b: ftp.FtpBackend) -> None:
        top = await b.stat(())
        assert top.is_dir and top.name == ""
        names = {e.name: e for e in await b.list(())}
        assert set(names) == {"big.bin", "dir"}
        assert names["big.bin"].size == len(blob) and names["big.bin"].mode == 0o644
        assert names["big.bin"].identity == (len(blob), names["big.bin"].mtime)
        assert abs(names["big.bin"].mtime - (root / "big.bin").stat().st_mtime) < 1
        assert names["dir"].is_dir
        assert [e.name for e in await b.list(("dir",))] == ["grüße €.txt"]
        assert (await b.stat(("dir", "grüße €.txt"))).size == 5
        with pytest.raises(NotFound):
            await b.stat(("nope",))
        with pytest.raises(NotFound):
            await b.list(("nope",))
        # ranged reads: sequential, random, across the end, past the end
        assert await b.read(("big.bin",), 0, 1 << 20) == blob[: 1 << 20]
        assert await b.read(("big.bin",), 1 << 20, 1 << 20) == blob[1 << 20: 2 << 20]
        assert await b.read(("big.bin",), 12345, 4096) == blob[12345: 12345 + 4096]
        assert await b.read(("big.bin",), len(blob) - 100, 4096) == blob[-100:]
        assert await b.read(("big.bin",), len(blob) + 10, 4096) == b""
        with pytest.raises(NotFound):
            await b.read(("missing.bin",), 0, 10)
        # download
        out = scratch()
        entry = await b.download(("big.bin",), out)
        assert Path(out).read_bytes() == blob and entry.size == len(blob)
        with pytest.raises(IsADirectory):
            await b.download(("dir",), out)
        # commit: new, then overwrite
        e1 = await b.commit(("dir", "neu-ü.txt"), spool(b"first"), None)
        assert e1.name == "neu-ü.txt" and e1.size == 5
        assert (root / "dir" / "neu-ü.txt").read_bytes() == b"first"
        e2 = await b.commit(("dir", "neu-ü.txt"), spool(b"second version"), e1)
        assert e2.size == 14 and (root / "dir" / "neu-ü.txt").read_bytes() == b"second version"
        assert no_temp_files(root)
        # chmod, MFMT
        await b.set_mode(("dir", "neu-ü.txt"), 0o600)
        assert (root / "dir" / "neu-ü.txt").stat().st_mode & 0o777 == 0o600
        await b.set_mtime(("dir", "neu-ü.txt"), 1_000_000_000.0)
        assert (root / "dir" / "neu-ü.txt").stat().st_mtime == 1_000_000_000
        assert (await b.stat(("dir", "neu-ü.txt"))).mtime == 1_000_000_000
        # rename, remove, mkdir, rmdir
        await b.rename(("dir", "neu-ü.txt"), ("moved.txt",))
        assert (root / "moved.txt").read_bytes() == b"second version"
        assert not (root / "dir" / "neu-ü.txt").exists()
        await b.commit(("other.txt",), spool(b"other"), None)
        await b.rename(("other.txt",), ("moved.txt",))  # over an existing file
        assert (root / "moved.txt").read_bytes() == b"other"
        await b.remove(("moved.txt",))
        assert not (root / "moved.txt").exists()
        with pytest.raises(NotFound):
            await b.remove(("moved.txt",))
        await b.mkdir(("new dir",))
        assert (root / "new dir").is_dir()
        with pytest.raises(NotEmpty):
            await b.rmdir(("dir",))
        await b.rmdir(("new dir",))
        assert not (root / "new dir").exists()

    run(alice(server, scheme), scenario)


def test_sequential_reads_share_one_transfer(server: FtpServer) -> None:
    blob = os.urandom(8 << 20)
    (server.root / "seq.bin").write_bytes(blob)

    async def scenario(b: ftp.FtpBackend) -> bytes:
        out = []
        for i in range(9):
            out.append(await b.read(("seq.bin",), i << 20, 1 << 20))
        return b"".join(out)

    assert run(alice(server), scenario) == blob
    assert asked(server).count("RETR") == 1, server.commands()


@pytest.mark.parametrize("scheme", ["ftp", "ftpes"])
def test_uploads_in_a_row_find_their_data_connection_open(
        server: FtpServer, scheme: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each upload's last round trip also asks for the next data connection (EPSV): the next
    upload starts with STOR. One kept too long is dropped, and the next transfer asks anew."""

    async def scenario(b: ftp.FtpBackend) -> set[str]:
        await b.commit(("first.txt",), spool(b"1"), None)
        before = len(server.commands())
        await b.commit(("second.txt",), spool(b"22"), None)
        assert asked(server, before) == ["STOR", "RNFR", "RNTO", "MLST", "EPSV"]
        monkeypatch.setattr(ftp, "READY_FOR", 0.0)  # the one opened ahead is now too old
        names = {e.name for e in await b.list(())}
        await b.commit(("third.txt",), spool(b"333"), None)
        return names

    names = run(alice(server, scheme), scenario)
    assert {"first.txt", "second.txt"} <= names
    assert [(server.root / f).read_bytes() for f in ("first.txt", "second.txt", "third.txt")] == [
        b"1", b"22", b"333"]
    assert no_temp_files(server.root)


def test_random_reads_are_correct_and_reuse_the_connection(server: FtpServer) -> None:
    blob = os.urandom(4 << 20)
    (server.root / "r.bin").write_bytes(blob)
    offsets = [(i * 7919 * 4096) % (len(blob) - 4096) for i in range(60)]

    async def scenario(b: ftp.FtpBackend) -> list[bytes]:
        return [await b.read(("r.bin",), o, 4096) for o in offsets]

    start = time.monotonic()
    got = run(alice(server), scenario)
    assert got == [blob[o: o + 4096] for o in offsets]
    assert asked(server).count("PASS") <= 4  # aborted transfers keep their connections
    assert time.monotonic() - start < 10


def test_one_thousand_entries(server: FtpServer) -> None:
    d = server.root / "many"
    d.mkdir()
    for i in range(1000):
        (d / f"f{i:04d}.txt").write_bytes(b"x" * (i % 7))

    entries = run(alice(server), lambda b: b.list(("many",)))
    assert len(entries) == 1000
    assert {e.name: e.size for e in entries} == {f"f{i:04d}.txt": i % 7 for i in range(1000)}


def test_root_path_and_missing_root(server: FtpServer) -> None:
    (server.root / "pub" / "sub").mkdir(parents=True)
    (server.root / "pub" / "sub" / "f.txt").write_text("in pub")
    b = backend_for(server.url(path="/pub"), plaintext_auth=True)
    assert [e.name for e in run(b, lambda b: b.list(()))] == ["sub"]
    b = backend_for(server.url(path="/pub"), plaintext_auth=True)
    assert run(b, lambda b: b.read(("sub", "f.txt"), 0, 100)) == b"in pub"
    b = backend_for(server.url(path="/nowhere"), plaintext_auth=True)
    with pytest.raises(NotFound):
        run(b, lambda b: b.stat(()))


# -- logins and TLS policy ----------------------------------------------------------------------


def test_anonymous_is_read_only(server: FtpServer) -> None:
    (server.root / "pub.txt").write_text("public")

    async def scenario(b: ftp.FtpBackend) -> None:
        assert [e.name for e in await b.list(())] == ["pub.txt"]
        assert await b.read(("pub.txt",), 0, 100) == b"public"
        with pytest.raises(PermissionDenied):
            await b.commit(("x.txt",), spool(b"no"), None)
        with pytest.raises(PermissionDenied):
            await b.remove(("pub.txt",))

    run(backend_for(server.url(user=None)), scenario)
    assert (server.root / "pub.txt").exists() and not (server.root / "x.txt").exists()
    assert no_temp_files(server.root)


def test_permission_denied_vs_not_found(server: FtpServer) -> None:
    (server.root / "ro.txt").write_text("keep")

    async def scenario(b: ftp.FtpBackend) -> None:
        with pytest.raises(PermissionDenied):
            await b.remove(("ro.txt",))
        with pytest.raises(PermissionDenied):
            await b.mkdir(("d",))
        with pytest.raises(NotFound):
            await b.read(("absent.txt",), 0, 1)

    run(backend_for(server.url(user="bob"), plaintext_auth=True), scenario)
    assert (server.root / "ro.txt").exists()


def test_no_password_in_clear_without_plaintext_auth(server: FtpServer) -> None:
    b = backend_for(server.url())  # tls = prefer, but the plain port offers no TLS
    with pytest.raises(PermissionDenied, match="plaintext_auth"):
        run(b, lambda b: b.stat(()))
    b = backend_for(server.url(), tls="require", plaintext_auth=True)
    with pytest.raises(PermissionDenied, match="does not offer TLS"):
        run(b, lambda b: b.stat(()))


def test_prefer_upgrades_to_tls_when_offered(server: FtpServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, "fsmount.backends.ftp")
    b = backend_for(server.url().replace(str(server.port), str(server.tls_port)), ca=server.ca)
    run(b, lambda b: b.list(()))
    sent = server.commands()
    assert sent.index("AUTH TLS") < sent.index("USER alice") < sent.index("PASS")  # logged in under TLS
    assert "PROT P" in sent  # and the listing came encrypted too
    assert not any("secret" in m for m in caplog.messages)  # the password never reaches a log


@pytest.mark.parametrize("scheme", ["ftpes", "ftps"])
def test_tls_verification_fails_without_the_ca(server: FtpServer, scheme: str) -> None:
    b = backend_for(server.url(scheme))
    with pytest.raises(PermissionDenied, match="certificate"):
        run(b, lambda b: b.stat(()))


@pytest.mark.parametrize("scheme", ["ftpes", "ftps"])
def test_tls_verification_can_be_switched_off(server: FtpServer, scheme: str) -> None:
    b = backend_for(server.url(scheme), tls_verify=False)
    assert run(b, lambda b: b.stat(())).is_dir


# -- vsftpd: the LIST dialect and TLS session reuse ----------------------------------------------


VS_FILES = {"a.txt": b"hello", "sub/b.bin": bytes(range(256)) * 1200, "grüße.txt": b"x", ".hidden": b"h"}


@pytest.mark.parametrize("tls", [False, True])
def test_vsftpd_list_dialect_and_reads(tls: bool) -> None:
    with running_vsftpd(VS_FILES, tls=tls, links={"link.txt": "a.txt", "up": "/sub"}) as v:
        async def scenario(b: ftp.FtpBackend) -> None:
            entries = {e.name: e for e in await b.list(())}
            assert set(entries) == {"a.txt", "sub", "grüße.txt", ".hidden", "link.txt", "up"}
            # an absolute target inside the account becomes relative: the kernel follows it
            # within the mount, never to the local /sub
            assert entries["link.txt"].symlink == "a.txt" and entries["up"].symlink == "sub"
            assert entries["a.txt"].size == 5 and entries["sub"].is_dir
            assert entries["a.txt"].mode == 0o444
            assert abs(entries["a.txt"].mtime - (v.root / "a.txt").stat().st_mtime) < 61
            assert (await b.stat(("sub", "b.bin"))).size == len(VS_FILES["sub/b.bin"])
            data = VS_FILES["sub/b.bin"]
            assert await b.read(("sub", "b.bin"), 100, 100000) == data[100:100100]
            assert await b.read(("sub", "b.bin"), 100100, 1 << 20) == data[100100:]
            assert await b.read(("sub", "b.bin"), 7, 3) == data[7:10]
            out = scratch()
            await b.download(("grüße.txt",), out)
            assert Path(out).read_bytes() == b"x"
            with pytest.raises(Unsupported):
                await b.set_mtime(("a.txt",), 0)
            assert not b.capabilities.set_mtime  # learnt from FEAT
            with pytest.raises(PermissionDenied):
                await b.remove(("a.txt",))
            with pytest.raises(NotFound):
                await b.stat(("nope.txt",))

        run(backend_for(v.url(), ca=v.ca), scenario)


@pytest.mark.parametrize("tls", [False, True])
def test_vsftpd_takes_a_data_connection_opened_ahead(tls: bool) -> None:
    """The EPSV sent ahead (after an upload) leaves a connected data socket; vsftpd, which
    accepts it only at the next transfer command and wants the TLS session resumed on it,
    serves a listing and a read on it."""
    with running_vsftpd(VS_FILES, tls=tls) as v:
        def opened_ahead(c: ftp.Client) -> bool:
            c.pipeline_with_epsv("NOOP")
            return c.ready is not None

        async def scenario(b: ftp.FtpBackend) -> None:
            await b.list(())  # learns that EPSV works
            assert await b._run(opened_ahead)
            assert {e.name for e in await b.list(("sub",))} == {"b.bin"}
            assert await b._run(opened_ahead)
            assert await b.read(("sub", "b.bin"), 1000, 10) == VS_FILES["sub/b.bin"][1000:1010]

        run(backend_for(v.url("ftpes" if tls else "ftp"), ca=v.ca), scenario)


def test_vsftpd_ambiguous_550_is_told_apart() -> None:
    # vsftpd answers "550 Failed to open file." both for a missing and an unreadable file
    with running_vsftpd({"secret.txt": b"s", "open.txt": b"o"}, modes={"secret.txt": 0o000}) as v:
        async def scenario(b: ftp.FtpBackend) -> None:
            with pytest.raises(PermissionDenied):
                await b.read(("secret.txt",), 0, 10)
            with pytest.raises(NotFound):
                await b.read(("missing.txt",), 0, 10)
            with pytest.raises(PermissionDenied):
                await b.download(("secret.txt",), scratch())
            assert await b.read(("open.txt",), 0, 10) == b"o"

        run(backend_for(v.url()), scenario)


def test_vsftpd_requires_session_reuse_and_we_do_it() -> None:
    with running_vsftpd(VS_FILES, tls=True) as v:
        # ftplib alone does not resume the session: vsftpd refuses its data connection
        plain = ftplib.FTP_TLS(context=ssl.create_default_context(cafile=str(v.ca)), timeout=5)
        plain.connect("127.0.0.1", v.port)
        plain.auth()
        plain.login()
        plain.prot_p()
        with pytest.raises((ftplib.Error, OSError, EOFError)):
            plain.retrbinary("RETR a.txt", lambda _: None)
        plain.close()
        b = backend_for(v.url("ftpes"), ca=v.ca)
        assert run(b, lambda b: b.read(("a.txt",), 0, 100)) == b"hello"


# -- faults ------------------------------------------------------------------------------------


def test_dropped_transfer_resumes_at_its_offset() -> None:
    with running_ftp(sendfile=False) as server:
        blob = os.urandom(3 << 20)
        (server.root / "f.bin").write_bytes(blob)
        server.set_faults(drop_after=300_000, times=2)

        async def scenario(b: ftp.FtpBackend) -> bytes:
            return b"".join([await b.read(("f.bin",), i << 20, 1 << 20) for i in range(4)])

        assert run(alice(server), scenario) == blob


def test_failed_upload_leaves_no_file_under_its_name() -> None:
    with running_ftp(sendfile=False) as server:
        (server.root / "keep.txt").write_bytes(b"old content")
        server.set_faults(drop_upload_after=100_000, times=1000)
        b = alice(server, timeout=2)
        with pytest.raises(Transient):
            run(b, lambda b: b.commit(("new.bin",), spool(os.urandom(2 << 20)), None))
        with pytest.raises(Transient):
            run(alice(server, timeout=2),
                lambda b: b.commit(("keep.txt",), spool(os.urandom(2 << 20)), None))
        assert not (server.root / "new.bin").exists()
        assert (server.root / "keep.txt").read_bytes() == b"old content"
        assert no_temp_files(server.root)  # removed over a fresh connection


def test_quota_is_no_space(server: FtpServer) -> None:
    server.set_faults(stor_reply="552 Quota exceeded.")
    with pytest.raises(NoSpace):
        run(alice(server), lambda b: b.commit(("q.bin",), spool(b"data"), None))
    assert not (server.root / "q.bin").exists()


def test_rename_over_on_a_server_that_refuses_it(server: FtpServer) -> None:
    (server.root / "t.txt").write_text("old")
    server.set_faults(no_rename_over=True)
    run(alice(server), lambda b: b.commit(("t.txt",), spool(b"new"), None))
    assert (server.root / "t.txt").read_bytes() == b"new"
    assert no_temp_files(server.root)


def test_hostile_listing_lines(server: FtpServer) -> None:
    (server.root / "good.txt").write_text("ok")
    server.set_faults(
        mlsd_extra=["type=file;size=5; evil\rname\r\n", "type=file;size=5; ../../etc/passwd\r\n",
                    "type=file;size=99999999999999999999999999; huge\r\n", "garbage\r\n",
                    "type=file;size=1; a/b\r\n"],
    )
    entries = run(alice(server), lambda b: b.list(()))
    assert [e.name for e in entries] == ["good.txt"]


def test_too_many_connections_lowers_the_limit() -> None:
    with running_ftp(max_cons=2) as server:
        for i in range(8):
            (server.root / f"f{i}").write_bytes(bytes([i]) * 1000)
        b = alice(server, connections=4)

        async def scenario(b: ftp.FtpBackend) -> list[bytes]:
            got: list[bytes] = [b""] * 8

            async def one(i: int) -> None:
                got[i] = await b.read((f"f{i}",), 0, 5000)

            async with trio.open_nursery() as n:
                for i in range(8):
                    n.start_soon(one, i)
            return got

        assert run(b, scenario) == [bytes([i]) * 1000 for i in range(8)]
        assert b.pool.limit < 4


def test_a_server_that_stops_answering_times_out(server: FtpServer) -> None:
    (server.root / "x").write_text("x")

    async def scenario(b: ftp.FtpBackend) -> None:
        await b.list(())
        server.set_faults(hang=True)
        start = trio.current_time()
        with pytest.raises(Transient):
            await b.remove(("x",))
        assert trio.current_time() - start < 10

    run(alice(server, timeout=1), scenario)


def test_lost_control_connection_is_reestablished(server: FtpServer) -> None:
    (server.root / "x.txt").write_text("x")

    async def scenario(b: ftp.FtpBackend) -> None:
        await b.list(())
        for conn, _, _ in b.pool._idle:  # the server (or a NAT box) drops the connection
            conn.sock.shutdown(2)
        assert [e.name for e in await b.list(())] == ["x.txt"]

    run(alice(server), scenario)


def test_timed_out_is_transient() -> None:
    assert issubclass(TimedOut, Transient)


def test_non_utf8_server_encoding() -> None:
    with running_ftp(encoding="cp1251") as server:
        (server.root / "привет.txt").write_text("мир")

        async def scenario(b: ftp.FtpBackend) -> None:
            assert [e.name for e in await b.list(())] == ["привет.txt"]
            assert await b.read(("привет.txt",), 0, 100) == "мир".encode()
            await b.commit(("новый файл.txt",), spool(b"new"), None)
            await b.rename(("новый файл.txt",), ("ещё.txt",))

        run(alice(server, encoding="cp1251"), scenario)
        assert sorted(p.name for p in server.root.iterdir()) == ["ещё.txt", "привет.txt"]


def test_active_mode(server: FtpServer) -> None:
    (server.root / "a.txt").write_text("active")

    async def scenario(b: ftp.FtpBackend) -> None:
        assert [e.name for e in await b.list(())] == ["a.txt"]
        assert await b.read(("a.txt",), 1, 100) == b"ctive"
        await b.commit(("b.txt",), spool(b"up"), None)

    run(alice(server, "ftpes", passive=False), scenario)
    assert (server.root / "b.txt").read_bytes() == b"up"


def test_idle_paused_transfer_is_closed(server: FtpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ftp, "PAUSE_IDLE", 0.5)  # the same, sooner (the backend's default: 2 s)
    (server.root / "big.bin").write_bytes(os.urandom(4 << 20))

    async def scenario(b: ftp.FtpBackend) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(b.run)
            await b.read(("big.bin",), 0, 1 << 20)
            assert any(c.transfer is not None for c, _, _ in b.pool._idle)
            with trio.fail_after(ftp.PAUSE_IDLE * 4):
                while any(c.transfer is not None for c, _, _ in b.pool._idle):
                    await trio.sleep(0.05)
            assert await b.read(("big.bin",), 1 << 20, 10) == (server.root / "big.bin").read_bytes()[1 << 20:(1 << 20) + 10]
            nursery.cancel_scope.cancel()

    run(alice(server), scenario)
