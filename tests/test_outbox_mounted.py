"""The outbox through the real mount: cp, editors, status, kill -9; checked at the SMTP server."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.mounting import is_mounted, mounted, run, wait_for
from tests.servers.smtp import SmtpServer, smtp_server  # noqa: F401 - the fixture
from tests.smtpfaults import FinalDotProxy

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no FUSE")

MSG = (
    "From: Alice <alice@example.org>\n"
    "To: bob@example.org\n"
    "Bcc: boss@example.org\n"
    "Subject: Report\n"
    "\n"
    "The report is attached in spirit.\n"
)
REFUSED_CLOSE = r"closed with changes that were never stored"


def config(server: SmtpServer, **options: object) -> str:
    lines = [
        "[accounts.outbox]",
        f'url = "smtp://alice@127.0.0.1:{server.port}"',
        f'ca_file = "{server.ca}"',
        'password = "secret1"',
        'tls = "require"',
        "retry_first = 0.1",
        "retry_max = 0.5",
        "timeout = 10",
    ]
    options.setdefault("send_delay", 0)  # the grace period has tests of its own
    for key, value in options.items():
        if value is None:  # the default
            continue
        lines.append(f"{key} = {value!r}".replace("'", '"').replace("True", "true"))
    return "\n".join(lines) + "\n"


def time_of(path: Path) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(path.stat().st_mtime).strftime("%Y-%m-%d")


def listing(directory: Path) -> set[str]:
    return set(os.listdir(directory))


def test_cp_sends_and_files_into_sent(smtp_server: SmtpServer, tmp_path: Path) -> None:
    src = tmp_path / "report.eml"
    src.write_text(MSG)
    with mounted(config(smtp_server)) as m:
        outbox = m.path / "outbox"
        run("cp", "-p", src, outbox / "report.eml")  # -p: chmod and utime must not fail
        [d] = smtp_server.wait_deliveries(1)
        assert set(d.rcpt_tos) == {"bob@example.org", "boss@example.org"}
        assert b"boss" not in d.content and b"The report is attached" in d.content
        wait_for(lambda: "report.eml" not in listing(outbox), what="the message to leave the outbox")
        sent = list((outbox / "sent").iterdir())
        assert len(sent) == 1 and "Report" in sent[0].name
        copy = run("cat", sent[0]).stdout
        assert copy.endswith(MSG.encode()) and b"Message-ID: <" in copy
    assert len(smtp_server.deliveries) == 1


def test_refused_message_explains_itself(smtp_server: SmtpServer, tmp_path: Path) -> None:
    src = tmp_path / "bad.eml"
    src.write_text("Subject: forgot everything\n\nhello\n")
    with mounted(config(smtp_server), expect_warnings=[REFUSED_CLOSE]) as m:
        outbox = m.path / "outbox"
        done = run("cp", src, outbox / "bad.eml", check=False)
        assert done.returncode != 0 and b"Invalid argument" in done.stderr
        status = (outbox / "bad.eml.status").read_text()
        assert "status: refused" in status and "no sender" in status
        assert os.getxattr(outbox / "bad.eml", "user.outbox.status") == b"refused"
        run("rm", outbox / "bad.eml")
        assert "bad.eml" not in listing(outbox) and "bad.eml.status" not in listing(outbox)
    assert smtp_server.deliveries == []


def test_status_while_retrying(smtp_server: SmtpServer) -> None:
    smtp_server.fail_data(1000, "451 4.3.0 queue full, try later")
    with mounted(config(smtp_server)) as m:
        outbox = m.path / "outbox"
        (outbox / "wait.eml").write_text(MSG)
        # asked only once the server refused: the mount keeps attributes for 2 s
        wait_for(lambda: smtp_server.handler.data_failed, what="the server's first refusal")
        wait_for(lambda: b"451" in os.getxattr(outbox / "wait.eml", "user.outbox.last_reply"),
                 what="the first refusal")
        status = run("cat", outbox / "wait.eml.status").stdout.decode()
        assert "last reply: 451 4.3.0 queue full" in status and "bob@example.org: waiting" in status
        out = run("getfattr", "-d", outbox / "wait.eml").stdout.decode()
        assert "user.outbox.status=" in out and "user.outbox.next_retry=" in out
        smtp_server.fail_data(0)
        smtp_server.wait_deliveries(1)
        wait_for(lambda: "wait.eml" not in listing(outbox), what="delivery")


def test_kill_9_after_close_then_remount_delivers(smtp_server: SmtpServer) -> None:
    smtp_server.fail_data(1000, "451 4.3.0 not now")  # nothing can leave before the kill
    home = Path(tempfile.mkdtemp(prefix="fsmount-test-"))
    try:
        # the grace period keeps the sender from starting an attempt before the kill (the
        # next statement after close); the remount sends once it is over
        with mounted(config(smtp_server, send_delay=1), home=home) as m:
            outbox = m.path / "outbox"
            with open(outbox / "urgent.eml", "w") as f:
                f.write(MSG)
            # close() returned: the message is durable now, whatever happens next
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait()
        assert not is_mounted(m.path)
        assert smtp_server.deliveries == []
        smtp_server.fail_data(0)
        with mounted(config(smtp_server), home=home) as m2:
            smtp_server.wait_deliveries(1)
            outbox = m2.path / "outbox"
            wait_for(lambda: "urgent.eml" not in listing(outbox), what="delivery after remount")
        assert len(smtp_server.deliveries) == 1
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_python_temp_file_then_rename(smtp_server: SmtpServer) -> None:
    with mounted(config(smtp_server)) as m:
        outbox = m.path / "outbox"
        tmp = outbox / ".report.eml.tmp123"
        tmp.write_text(MSG)
        (outbox / "notes.txt").write_text("not a message\n")
        assert smtp_server.deliveries == []
        os.rename(tmp, outbox / "report.eml")
        smtp_server.wait_deliveries(1)
        wait_for(lambda: "report.eml" not in listing(outbox), what="delivery")
        assert listing(outbox) == {"notes.txt", "sent"}
        assert (outbox / "notes.txt").read_text() == "not a message\n"
        run("touch", "-d", "2020-01-02 03:04:05", outbox / "notes.txt")
        assert time_of(outbox / "notes.txt") == "2020-01-02"
    assert len(smtp_server.deliveries) == 1


def test_vim_writes_a_message(smtp_server: SmtpServer) -> None:
    with mounted(config(smtp_server)) as m:
        outbox = m.path / "outbox"
        script = "\n".join(MSG.splitlines())
        cmd = ["vim", "-u", "NONE", "-i", "NONE", "-N", "-es",
               "-c", f"call setline(1, {script.splitlines()!r})", "-c", "wq", str(outbox / "vim.eml")]
        done = subprocess.run(cmd, cwd=outbox, capture_output=True, timeout=60)
        assert done.returncode == 0, done
        [d] = smtp_server.wait_deliveries(1)
        assert b"The report is attached" in d.content
        wait_for(lambda: not [n for n in listing(outbox) if n.endswith((".eml", ".swp"))],
                 what="delivery, and vim's swap file gone")
    assert len(smtp_server.deliveries) == 1


def test_mail_with_newsgroups_is_also_posted(smtp_server: SmtpServer) -> None:
    from tests.servers.inn import available, running_inn

    if not available():
        pytest.skip("inn2 is not installed")
    msg = ("From: Alice <alice@example.org>\nTo: bob@example.org\nNewsgroups: local.test\n"
           "Message-ID: <cross-1@example.org>\nSubject: To both\n\nMail and news.\n")
    with running_inn() as inn:
        news = "\n".join([
            "[accounts.news]",
            f'url = "nntps://alice@127.0.0.1:{inn.tls_port}"',
            f'ca_file = "{inn.ca}"',
            'password = "secret1"',
        ])
        with mounted(config(smtp_server, news_account="news") + news + "\n") as m:
            outbox = m.path / "outbox"
            (outbox / "both.eml").write_text(msg)
            [d] = smtp_server.wait_deliveries(1)
            assert d.rcpt_tos == ("bob@example.org",)
            wait_for(lambda: "both.eml" not in listing(outbox), what="mail and news done")
            assert b"Mail and news." in inn.article("<cross-1@example.org>")


def test_sent_copy_lands_in_the_linked_imap_sent_folder(smtp_server: SmtpServer) -> None:
    from tests.servers.dovecot import available, dovecot

    if not available():
        pytest.skip("dovecot is not installed")
    with dovecot() as srv:
        mail = "\n".join([
            "[accounts.mail]",
            f'url = "imaps://alice@127.0.0.1:{srv.imaps_port}"',
            f'ca_file = "{srv.ca}"',
            'password = "secret1"',
            "metadata_ttl = 600",  # the listing below is trusted for long: only filing can change it
            "idle = false",
        ])
        with mounted(config(smtp_server, sent_account="mail") + mail + "\n") as m:
            outbox = m.path / "outbox"
            assert os.listdir(m.path / "mail" / "Sent") == []  # listed and cached before
            run("cp", "/dev/stdin", outbox / "filed.eml", input=MSG.encode())
            smtp_server.wait_deliveries(1)
            wait_for(lambda: "filed.eml" not in listing(outbox), what="delivery and filing")
            assert listing(outbox) == set()  # no local sent/: the copy went to IMAP
            # the copy went through the mail account's cache: its listing shows it at once
            [copy] = [p for p in (m.path / "mail" / "Sent").iterdir() if p.suffix == ".eml"]
            assert "Report" in copy.name
            assert b"The report is attached in spirit." in copy.read_bytes()
        conn = srv.imap()
        try:
            conn.select("Sent", readonly=True)
            _, data = conn.search(None, "SEEN", "SUBJECT", "Report")
            assert len(data[0].split()) == 1
        finally:
            conn.logout()


def test_rsync_and_mv_into_the_outbox(smtp_server: SmtpServer, tmp_path: Path) -> None:
    drafts = tmp_path / "drafts"
    drafts.mkdir()
    for i in range(3):
        (drafts / f"d{i}.eml").write_text(MSG.replace("Report", f"Report {i}"))
    (drafts / "README").write_text("drafts folder\n")
    os.utime(drafts, (1_600_000_000, 1_600_000_000))  # rsync -a then sets the outbox's times
    moved = tmp_path / "moved.eml"
    moved.write_text(MSG.replace("Report", "Moved"))
    with mounted(config(smtp_server)) as m:
        outbox = m.path / "outbox"
        run("rsync", "-a", f"{drafts}/", f"{outbox}/")  # temp names, then renames; chmod, utime
        run("mv", moved, outbox)  # across filesystems: copy, then remove the source
        smtp_server.wait_deliveries(4)
        wait_for(lambda: listing(outbox) == {"README", "sent"}, what="all four sent")
        assert not moved.exists()
        assert len(list((outbox / "sent").iterdir())) == 4
    subjects = sorted(d.content.split(b"Subject: ")[1].split(b"\r\n")[0] for d in smtp_server.deliveries)
    assert subjects == [b"Moved", b"Report 0", b"Report 1", b"Report 2"]


# -- never twice: the answer to the final "." is lost --------------------------------------

MAYBE_SENT = r"may have been sent \(Message-ID"


def proxied(proxy: FinalDotProxy) -> str:
    """An account reaching the server through ``proxy`` (plain SMTP: the proxy reads it)."""
    return "\n".join([
        "[accounts.outbox]",
        f'url = "smtp://127.0.0.1:{proxy.port}"',
        'tls = "off"',
        "retry_first = 0.1",
        "retry_max = 0.2",
        "timeout = 10",
        "send_delay = 0",
    ]) + "\n"


def message_id(content: bytes) -> str:
    return content.split(b"Message-ID: ")[1].split(b"\r\n")[0].decode()


def status_of(path: Path) -> str:
    try:
        return path.with_name(path.name + ".status").read_text()
    except FileNotFoundError:
        return ""


def test_kill_9_after_the_final_dot_is_not_resent_until_asked(smtp_server: SmtpServer) -> None:
    proxy = FinalDotProxy(smtp_server.host, smtp_server.port, "hold")
    home = Path(tempfile.mkdtemp(prefix="fsmount-test-"))
    try:
        with mounted(proxied(proxy), home=home) as m:
            (m.path / "outbox" / "once.eml").write_text(MSG)
            [d] = smtp_server.wait_deliveries(1)  # the server has it ...
            assert proxy.faulted.wait(20)  # ... and its "250" never reached fsmount
            m.proc.send_signal(signal.SIGKILL)
            m.proc.wait()
        with mounted(proxied(proxy), home=home, expect_warnings=[MAYBE_SENT]) as m2:
            msg = m2.path / "outbox" / "once.eml"
            status = wait_for(lambda: "may-have-been-sent" in status_of(msg) and status_of(msg),
                              what="the status to say it may have been sent")
            assert f"message-id: {message_id(d.content)}" in status
            assert "setfattr -n user.outbox.send -v 1 once.eml" in status
            assert "bob@example.org: may have been sent" in status
            assert os.getxattr(msg, "user.outbox.status") == b"may-have-been-sent"
            assert len(smtp_server.deliveries) == 1 and proxy.connections == 1
            run("setfattr", "-n", "user.outbox.send", "-v", "1", msg)  # the user decides
            _, again = smtp_server.wait_deliveries(2)
            assert message_id(again.content) == message_id(d.content)
            wait_for(lambda: "once.eml" not in listing(msg.parent), what="the message to leave")
        assert len(smtp_server.deliveries) == 2
    finally:
        proxy.close()
        shutil.rmtree(home, ignore_errors=True)


def test_connection_lost_after_the_final_dot_is_not_retried(smtp_server: SmtpServer) -> None:
    proxy = FinalDotProxy(smtp_server.host, smtp_server.port, "drop")
    try:
        with mounted(proxied(proxy), expect_warnings=[MAYBE_SENT]) as m:
            msg = m.path / "outbox" / "dropped.eml"
            msg.write_text(MSG)
            [d] = smtp_server.wait_deliveries(1)
            assert proxy.faulted.wait(20)
            status = wait_for(lambda: "may-have-been-sent" in status_of(msg) and status_of(msg),
                              what="the status to say it may have been sent")
            assert f"message-id: {message_id(d.content)}" in status
            assert "attempts: 1" in status
            # retries come every 0.1-0.2 s: none may come for this message on its own
            with pytest.raises(TimeoutError):
                smtp_server.wait_deliveries(2, timeout=1)
            assert proxy.connections == 1 and "attempts: 1" in status_of(msg)
            run("setfattr", "-n", "user.outbox.send", "-v", "1", msg)
            smtp_server.wait_deliveries(2)
            wait_for(lambda: "dropped.eml" not in listing(msg.parent), what="the message to leave")
        assert len(smtp_server.deliveries) == 2
    finally:
        proxy.close()


# -- the grace period: an editor's successive saves send one message ----------------------

FINAL = MSG.replace("The report is attached in spirit.", "The report, final version.")


def test_successive_saves_send_the_final_content_once(smtp_server: SmtpServer) -> None:
    with mounted(config(smtp_server, send_delay=2)) as m:  # a grace period (5 s by default)
        outbox = m.path / "outbox"
        msg = outbox / "draft.eml"
        msg.write_text(MSG.split("\n\n")[0] + "\n\nThe rep")  # a half-written message, closed
        status = status_of(msg)
        assert "status: queued" in status and "leaves at: " in status
        msg.write_text(MSG)  # saved again, complete
        swap = outbox / ".draft.eml.swp"  # an editor's save: a new file renamed over it
        swap.write_text(FINAL)
        os.rename(swap, msg)
        gone = outbox / "gone.eml"  # queued, then thought better of
        gone.write_text(MSG.replace("Report", "Never"))
        run("rm", gone)
        [d] = smtp_server.wait_deliveries(1)
        assert d.content.endswith(b"The report, final version.\r\n")
        wait_for(lambda: "draft.eml" not in listing(outbox), what="the message to leave")
    assert len(smtp_server.deliveries) == 1


def test_vim_save_then_save_and_quit_sends_once(smtp_server: SmtpServer) -> None:
    with mounted(config(smtp_server, send_delay=2)) as m:
        outbox = m.path / "outbox"
        half = MSG.split("\n\n")[0].splitlines() + ["", "The rep"]
        cmd = ["vim", "-u", "NONE", "-i", "NONE", "-N", "-es",
               "-c", f"call setline(1, {half!r})", "-c", "w",  # :w halfway
               "-c", f"call setline(1, {FINAL.splitlines()!r})", "-c", "wq", str(outbox / "vim.eml")]
        done = subprocess.run(cmd, cwd=outbox, capture_output=True, timeout=60)
        assert done.returncode == 0, done
        [d] = smtp_server.wait_deliveries(1)
        assert d.content.endswith(b"The report, final version.\r\n")
        wait_for(lambda: not [n for n in listing(outbox) if n.endswith((".eml", ".swp"))],
                 what="delivery, and vim's swap file gone")
    assert len(smtp_server.deliveries) == 1


def test_cp_of_a_finished_message_leaves_after_the_grace_period(smtp_server: SmtpServer,
                                                                tmp_path: Path) -> None:
    src = tmp_path / "done.eml"
    src.write_text(FINAL)
    with mounted(config(smtp_server, send_delay=1)) as m:
        outbox = m.path / "outbox"
        run("cp", src, outbox / "done.eml")
        [d] = smtp_server.wait_deliveries(1, timeout=20)
        assert d.content.endswith(b"The report, final version.\r\n")
        wait_for(lambda: "done.eml" not in listing(outbox), what="the message to leave")
    assert len(smtp_server.deliveries) == 1
