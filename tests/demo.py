"""The demo: private FTP, IMAP/POP3, NNTP and SMTP servers on loopback with sample data, all
mounted by fsmount under one folder.

usage: python3 -m tests.demo [MOUNTPOINT]     (default /tmp/fsmount-demo)

It prints a short tour (what ``ls``, ``cat`` and ``grep -r`` show). With a terminal attached it
then keeps the mount until Ctrl-C; without one (CI, a pipe) it unmounts after the tour.
"""
from __future__ import annotations

import contextlib
import email.message
import email.utils
import importlib.util
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

from tests.mounting import check_log, is_mounted, private_env, scratch_dir, wait_for
from tests.servers.certs import certs

SAMPLE_MAIL = [
    ("Carol <carol@example.org>", "Invoice 2024-117", "Hello Alice,\n\nplease find invoice 2024-117 attached.\n"),
    ("Dave <dave@example.org>", "Grüße aus München", "Schöne Grüße — bis bald!\n"),
    ("Erin <erin@example.org>", "Lunch on Friday?", "Shall we try the new place on Friday at noon?\n"),
]


def sample_message(sender: str, subject: str, body: str, *, to: str = "alice@example.org",
                   attachment: bool = False) -> bytes:
    msg = email.message.EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = sender, to, subject
    msg["Date"] = email.utils.formatdate()
    msg["Message-ID"] = email.utils.make_msgid(domain="example.org")
    msg.set_content(body)
    if attachment:
        msg.add_attachment(b"%PDF-1.4 sample invoice\n", maintype="application", subtype="pdf",
                           filename="invoice.pdf")
    return bytes(msg)


def fill_ftp(root: Path) -> None:
    (root / "docs").mkdir()
    (root / "docs" / "README.txt").write_text("Welcome to the fsmount demo FTP server.\n")
    (root / "docs" / "notes über Umlaute.txt").write_text("UTF-8 names work.\n")
    (root / "photos").mkdir()
    (root / "photos" / "sunset.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(200_000))
    (root / "upload").mkdir()


def start_servers(stack: contextlib.ExitStack, home: Path) -> str:
    """Start every server the demo uses, load sample data, and return the config text."""
    from tests.servers.ftp import running_ftp
    from tests.servers.inn import running_inn
    from tests.servers.smtp import SmtpServer

    ca = certs().ca
    ftp = stack.enter_context(running_ftp())
    fill_ftp(ftp.root)
    config = [
        "# written by the fsmount demo; passwords are the test servers' own",
        f'[accounts.files]\nurl = "ftpes://alice@127.0.0.1:{ftp.tls_port}/"\npassword = "secret"\n'
        f'ca_file = "{ca}"\n',
    ]
    inn = stack.enter_context(running_inn())
    for subject, body in [("Welcome to local.test", "This group is served by a private INN.\n"),
                          ("Python 3.13 released", "nntplib moved to PyPI (standard-nntplib).\n")]:
        inn.post("local.test", subject, body)
    config.append(f'[accounts.news]\nurl = "nntps://alice@127.0.0.1:{inn.tls_port}"\n'
                  f'password = "secret1"\nca_file = "{ca}"\ngroups = ["local.*", "comp.*"]\n')
    smtp = SmtpServer()
    stack.callback(smtp.stop)
    outbox = (f'[accounts.outbox]\nurl = "smtps://alice@127.0.0.1:{smtp.tls_port}"\n'
              f'password = "secret1"\nca_file = "{ca}"\nfrom = "alice@example.org"\n')
    if all(importlib.util.find_spec(f"fsmount.backends.{m}") for m in ("imap", "pop3")):
        from tests.servers.dovecot import dovecot

        dove = stack.enter_context(dovecot())
        for i, (sender, subject, body) in enumerate(SAMPLE_MAIL):
            dove.deliver("alice", sample_message(sender, subject, body, attachment=i == 0))
        config.append(f'[accounts.mail]\nurl = "imaps://alice@127.0.0.1:{dove.imaps_port}"\n'
                      f'password = "secret1"\nca_file = "{ca}"\n')
        config.append(f'[accounts.pop]\nurl = "pop3s://alice@127.0.0.1:{dove.pop3s_port}"\n'
                      f'password = "secret1"\nca_file = "{ca}"\n')
        outbox += 'sent_account = "mail"\n'
    config.append(outbox)
    return "\n".join(config)


def tour(mnt: Path) -> None:
    steps = [
        f"ls {mnt}",
        f"ls -l {mnt}/files/docs",
        f"cat {mnt}/files/docs/README.txt",
        f"cp /etc/hostname {mnt}/files/upload/ && ls {mnt}/files/upload",
        f"ls {mnt}/news",
        f"grep -rl nntplib {mnt}/news",
    ]
    if (mnt / "mail").exists():
        steps += [f"ls {mnt}/mail", f"ls {mnt}/mail/INBOX", f"grep -rl 'Invoice 2024-117' {mnt}/mail",
                  f"ls {mnt}/pop"]
    steps += [f"printf 'From: alice@example.org\\nTo: bob@example.org\\nSubject: Hello from the demo\\n\\n"
              f"Hi Bob!\\n' > {mnt}/outbox/hello.eml", f"ls {mnt}/outbox", f"cat {mnt}/outbox/hello.eml.status"]
    for step in steps:
        print(f"$ {step}", flush=True)
        subprocess.run(step, shell=True)
    print(flush=True)


def main(argv: list[str]) -> int:
    mnt = Path(argv[0] if argv else "/tmp/fsmount-demo").resolve()
    mnt.mkdir(parents=True, exist_ok=True)
    if is_mounted(mnt):
        print(f"demo: {mnt} is already mounted; unmount it first: fusermount3 -u {mnt}", file=sys.stderr)
        return 1
    home = scratch_dir("fsmount-demo-")
    with contextlib.ExitStack() as stack:
        print("demo: starting FTP, IMAP/POP3, NNTP and SMTP servers on 127.0.0.1 …", flush=True)
        config = home / "config.toml"
        config.write_text(start_servers(stack, home))
        config.chmod(0o600)
        log = home / "fsmount.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-m", "fsmount", "-f", "-c", str(config), str(mnt)],
                                    stdout=out, stderr=subprocess.STDOUT, env=private_env(home))
        try:
            wait_for(lambda: is_mounted(mnt) or proc.poll() is not None, 30, "the mount")
            if not is_mounted(mnt):
                print(f"demo: fsmount failed:\n{log.read_text()}", file=sys.stderr)
                return 1
            print(f"demo: mounted on {mnt} (config: {config})\n", flush=True)
            tour(mnt)
            if sys.stdin.isatty():
                print(f"Try it yourself in another terminal, e.g.  cd {shlex.quote(str(mnt))} && ls -R | head\n"
                      f"Drop a message into {mnt}/outbox/ to send it.  Ctrl-C here unmounts.", flush=True)
                signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
                signal.sigwait({signal.SIGINT, signal.SIGTERM})
        finally:
            subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
            proc.wait(timeout=30)
        check_log(log.read_text())
        print("demo: unmounted; servers stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
