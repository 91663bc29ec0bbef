"""The contract every service keeps, through a real mount, checked on the server.

One function per behaviour, run over every service of ``conftest.SERVICES`` and skipped by
capability only (see ``services``). What is asserted is what the user sees (the command's
exit status, its one line, the errno) and what the SERVER holds or saw (its files, messages,
deliveries; the relay's count of connections and the bytes it carried) — never fsmount's log.
"""
from __future__ import annotations

import base64
import errno
import os
import time
from pathlib import Path

import pytest

from fsmount.exitstatus import Exit
from tests.contract.conftest import Shared, attempt, needs, one_line, refusing_port
from tests.contract.services import Area, Service
from tests.faultproxy import Relay
from tests.mounting import mounted, run, wait_for

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no FUSE")

REFUSED_WRITE = (errno.EROFS, errno.EACCES)

#: Bodies that trip careless code: non-ASCII, a line that is a lone dot (SMTP/POP3/NNTP
#: end their data with one), lines starting with dots, a long line.
PAYLOADS = ["plain text\n", "grüße, €uro ✓\n", "line\n.\n..two dots\n.end\n", "x" * 990 + "\n"]


def files_in(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file())


def shown(directory: Path, held: list[bytes], *, read: bool = True) -> list[Path]:
    """The files of ``directory`` once they are the ``held`` objects the server holds. Not at
    once everywhere: an IMAP listing with IDLE is trusted for a second, INN's nnrpd sees
    articles that arrived after its session started only a moment later, and POP3's one
    maildrop, emptied for this test, may still be listed as the last test left it. With
    ``read=False`` (a test that reads through a fault) only their number is waited for."""
    def complete() -> list[Path] | None:
        files = files_in(directory)
        if len(files) != len(held):
            return None
        if read:
            try:
                if sorted(f.read_bytes() for f in files) != sorted(held):
                    return None
            except OSError:  # a file the server no longer holds, listed a moment longer
                return None
        return files

    return wait_for(complete, 10, f"{len(held)} files in {directory.name}")  # type: ignore[return-value]


# -- logging in ------------------------------------------------------------------------------


def test_wrong_password_fails_the_mount_with_one_line(service: Service) -> None:
    needs(service, "login", "checked_at_mount")
    relay = Relay(service.host, service.port)
    try:
        done = attempt(service.account(port=relay.port, password="wrong"))
        one_line(done, Exit.REFUSED, r"login failed")
        assert relay.connections == 1  # tried once: a retry could lock the account
    finally:
        relay.close()


def test_server_down_fails_the_mount_with_one_line(service: Service) -> None:
    needs(service, "checked_at_mount")
    with refusing_port() as port:
        start = time.monotonic()
        done = attempt(service.account(port=port, timeout=1))  # no waiting for a restart
    one_line(done, Exit.FAILED, r"cannot use .*(unreachable|refused)")
    assert time.monotonic() - start < 10


def _password_forms(user: str, password: str) -> list[bytes]:
    """How a password crosses the wire: as is (USER/PASS, LOGIN, AUTHINFO) or in base64
    (SASL PLAIN, LOGIN)."""
    raw = password.encode()
    plain = f"\0{user}\0{password}".encode()
    return [raw, base64.b64encode(raw), base64.b64encode(plain)[:-4]]


def test_no_password_in_clear_without_plaintext_auth(service: Service, area: Area,
                                                     tmp_path: Path) -> None:
    """``tls = "off"`` without ``plaintext_auth``: the login is refused before the password
    is sent — at mount time with one line, or (the outbox, which logs in when it sends) by
    keeping the message and saying why."""
    needs(service, "login", "cleartext")
    assert service.password is not None
    relay = Relay(service.host, service.plain_port)
    try:
        cfg = service.account(url=service.cleartext_url(relay.port), tls="off", plaintext_auth=None)
        if "checked_at_mount" in service.caps:
            one_line(attempt(cfg), Exit.REFUSED, r"plaintext_auth")
        else:
            before = area.held()
            data = area.writable("Never in clear", "body\n")
            (tmp_path / "m.eml").write_bytes(data)
            with mounted(cfg, source="acct", expect_warnings=[
                    r"WARNING fsmount\.backends\.outbox\.sender: acct: cannot send: refusing to send the "
                    r"password over an unencrypted connection"]) as m:
                run("cp", tmp_path / "m.eml", m.path / "m.eml")
                status = m.path / "m.eml.status"
                wait_for(lambda: "unencrypted" in status.read_text(), what="the refusal in the status")
            assert area.held() == before
        sent = bytes(relay.from_client)
        assert not any(form in sent for form in _password_forms("alice", service.password)), sent
    finally:
        relay.close()


# -- read-only -------------------------------------------------------------------------------


def test_readonly_account_changes_nothing_on_the_server(service: Service, area: Area,
                                                        tmp_path: Path) -> None:
    if "lists" in service.caps:
        area.put("Keep me", "kept\n")
    before = area.held()
    data = area.writable("Not to be sent", "body\n")
    with mounted(service.account(readonly=True), source="acct") as m:
        here = m.path.joinpath(*area.rel)
        with pytest.raises(OSError) as e:
            with open(here / "new.eml", "wb") as f:
                f.write(data)
        assert e.value.errno in REFUSED_WRITE, os.strerror(e.value.errno)
        with pytest.raises(OSError) as e:
            os.mkdir(here / "new folder")
        assert e.value.errno in REFUSED_WRITE, os.strerror(e.value.errno)
        for f in files_in(here) if "lists" in service.caps else []:
            for change in (lambda: os.unlink(f), lambda: os.rename(f, here / "renamed.eml"),
                           lambda: open(f, "ab").close()):
                with pytest.raises(OSError) as e:
                    change()
                assert e.value.errno in REFUSED_WRITE, os.strerror(e.value.errno)
    assert area.held() == before


# -- connections that break ------------------------------------------------------------------


def test_dropped_connections_are_replaced(service: Service, shared: Shared, area: Area) -> None:
    """Every connection cut between two operations (a server restart, a NAT timeout): the
    next operation reconnects and succeeds."""
    needs(service, "lists")
    first = area.put("First", PAYLOADS[0])
    here = shared.path.joinpath(*area.rel)
    assert first in [f.read_bytes() for f in shown(here, area.held())]
    shared.relay.cut_all()
    before = shared.relay.connections
    second = area.put("Second", PAYLOADS[1])  # only the server can tell of it
    held = area.held()
    assert second in held
    assert sorted(run("cat", f).stdout for f in shown(here, held)) == sorted(held)
    assert shared.relay.connections > before


def test_a_connection_cut_mid_answer_is_retried(service: Service, shared: Shared,
                                                area: Area) -> None:
    """The server's answer stops halfway (the connection dies while a message arrives): the
    reader still gets the whole object, never a short one."""
    needs(service, "lists", "inband_data")
    big = area.put("Big", "".join(f"line {i:05d} of a long text\n" for i in range(4000)))
    here = shared.path.joinpath(*area.rel)
    held = area.held()
    files = shown(here, held, read=False)
    shared.relay.cut_after = len(big) // 2
    assert sorted(run("cat", f).stdout for f in files) == sorted(held)
    assert big in held and shared.relay.cuts == 1


# -- what the server holds, as the mount shows it ---------------------------------------------


def test_listing_and_exact_bytes(service: Service, shared: Shared, area: Area) -> None:
    needs(service, "lists")
    put = area.put_many([(f"Object {i}", payload) for i, payload in enumerate(PAYLOADS)])
    here = shared.path.joinpath(*area.rel)
    held = area.held()
    assert set(put) <= set(held)
    files = shown(here, held)
    assert len(run("ls", "-l", here).stdout.splitlines()) == len(held) + 1  # and "total"
    read = [run("cat", f).stdout for f in files]
    assert sorted(read) == sorted(held)
    for f, data in zip(files, read):
        assert f.stat().st_size == len(data)  # exact, at the latest once read
    if "same_names" in service.caps:
        assert sorted(p.name for p in files) == area.names()


HOSTILE = [
    "ctl\x01\x1fchars", "tab\there", "del\x7f", " leading space", "trailing space ",
    "-rf", "*?[glob].txt", "back\\slash", "ünï €.txt", "a" * 250, "...",
    "a/b/../c", "..", ".", "/etc/passwd", "", "x" * 400, "=?utf-8?b?L2V0Yy9wYXNzd2Q=?=",
    "[42].eml",
]


def test_hostile_names_from_the_server(service: Service, shared: Shared, area: Area) -> None:
    """Names no local filesystem could hold, or that a shell trips on, each show as one file
    whose name is safe (no ``/``, no control character, at most 255 bytes) and whose bytes
    are the object's."""
    needs(service, "lists")
    hints = [h for h in HOSTILE if area.can_hold(h)]
    put = area.put_many([(hint, f"object {i}\n") for i, hint in enumerate(hints)])
    here = shared.path.joinpath(*area.rel)
    held = area.held()
    assert set(put) <= set(held)
    names = [f.name for f in shown(here, held)]
    for name in names:
        assert name not in (".", "..") and len(name.encode()) <= 255, name
        assert not any(ord(c) < 0x20 or ord(c) == 0x7f for c in name), repr(name)
    assert sorted((here / n).read_bytes() for n in names) == sorted(held)
    if "same_names" in service.caps:
        printable = [h for h in hints if not any(ord(c) < 0x20 or ord(c) == 0x7f for c in h)]
        assert set(printable) <= set(names)


# -- writes ------------------------------------------------------------------------------------


def test_cp_in_reaches_the_server(service: Service, shared: Shared, area: Area,
                                  tmp_path: Path) -> None:
    needs(service, "writes")
    data = area.writable("Copied in", "grüße\n.\nend\n")
    (tmp_path / "new.eml").write_bytes(data)
    run("cp", tmp_path / "new.eml", shared.path.joinpath(*area.rel, "new.eml"))
    wait_for(lambda: area.holds_written(data), what="the server to hold what cp wrote")


def test_rm_removes_from_the_server(service: Service, shared: Shared, area: Area) -> None:
    needs(service, "lists", "removes")
    keep = area.put("Keep", "kept\n")
    area.put("Remove", "removed\n")
    here = shared.path.joinpath(*area.rel)
    [victim] = [f for f in shown(here, area.held()) if f.read_bytes() != keep]
    run("rm", victim)
    assert area.held() == [keep]
    assert [f.read_bytes() for f in files_in(here)] == [keep]


def test_mkdir_makes_a_folder_on_the_server(service: Service, shared: Shared, area: Area) -> None:
    needs(service, "mkdir")
    run("mkdir", shared.path.joinpath(*area.rel, "Made here"))
    assert "Made here" in area.folders()


# -- errors ------------------------------------------------------------------------------------


def test_errors_have_their_errno(service: Service, shared: Shared, area: Area) -> None:
    here = shared.path.joinpath(*area.rel)
    with pytest.raises(FileNotFoundError):
        (here / "no such object.eml").stat()
    with pytest.raises(IsADirectoryError):
        open(here).read()
    if "lists" in service.caps:
        area.put("A file", "text\n")
        f = shown(here, area.held())[0]
        with pytest.raises(NotADirectoryError):
            (f / "below").stat()
    if "writes" not in service.caps:
        with pytest.raises(OSError) as e:
            with open(here / "new.eml", "wb") as out:
                out.write(area.writable("Refused", "body\n"))
        assert e.value.errno in (*REFUSED_WRITE, errno.EPERM), os.strerror(e.value.errno)
