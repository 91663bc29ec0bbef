"""Run a mount in the foreground, or detach once it is ready (like sshfs).

The parent waits on a pipe for the child to say "mounted" (with the accounts that could not
be used) or why not, so ``fsmount`` returns only when the mount works, with one line per
problem and the exit status of fsmount(1) when it cannot.

In the foreground under systemd (``Type=notify``), readiness is told through
``$NOTIFY_SOCKET`` (sd_notify(3)'s datagram protocol: a few lines, no library needed).
"""
from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Sequence

import trio

from .cli import setup_logging
from .exitstatus import Exit
from .mount import MountError, MountPlan, serve, state_dir

log = logging.getLogger(__name__)


def run(plan: MountPlan, *, foreground: bool, debug: bool) -> int:
    notify_socket = os.environ.pop("NOTIFY_SOCKET", None)  # for us, not for what we start
    if foreground:
        return _foreground(plan, debug, notify_socket)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            return _report(pipe.read().decode("utf-8", "replace"))
    os.close(read_end)
    try:
        _detach(plan, debug)
    except OSError as e:
        _tell(write_end, f"E{Exit.USAGE}\ncannot write the log in {state_dir(plan.settings)}: {e.strerror}")
        os._exit(1)

    def ready(problems: Sequence[str]) -> None:
        _tell(write_end, "\n".join(["ok", *problems]))

    try:
        trio.run(serve, plan, ready)
    except MountError as e:
        log.error("%s", e)
        _tell(write_end, f"E{e.status}\n{e}")
        os._exit(1)
    except BaseException:
        log.exception("fsmount stopped by an internal error")
        _tell(write_end, f"E{Exit.FAILED}\ninternal error; details in {state_dir(plan.settings) / 'fsmount.log'}")
        os._exit(1)
    os._exit(0)


def _foreground(plan: MountPlan, debug: bool, notify_socket: str | None) -> int:
    setup_logging(debug, None)

    def ready(problems: Sequence[str]) -> None:  # the problems are logged (to stderr) already
        status = f"mounted on {plan.mountpoint}" + (f"; {len(problems)} account(s) unusable" if problems else "")
        sd_notify(notify_socket, "READY=1", f"STATUS={status}")

    try:
        problems = trio.run(serve, plan, ready)
    except MountError as e:
        for line in str(e).splitlines():
            print(f"fsmount: {line}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        return Exit.OK
    return Exit.PARTIAL if problems else Exit.OK


def _report(message: str) -> int:
    """In the parent: print what the child told, and return the exit status."""
    head, _, rest = message.partition("\n")
    lines = [line for line in rest.splitlines() if line.strip()]
    if head == "ok":
        for line in lines:
            print(f"fsmount: {line}", file=sys.stderr)
        return Exit.PARTIAL if lines else Exit.OK
    status = int(head[1:]) if head[:1] == "E" and head[1:].isdigit() else Exit.FAILED
    for line in lines or ["the mount process died; see the log"]:
        print(f"fsmount: {line}", file=sys.stderr)
    return status


def sd_notify(address: str | None, *states: str) -> None:
    """Send ``states`` to systemd's notification socket, if fsmount was started with one."""
    if not address or address[0] not in "/@":
        return
    target = "\0" + address[1:] if address[0] == "@" else address  # "@": abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto("\n".join(states).encode(), target)
    except OSError as e:
        log.warning("cannot notify systemd at %s: %s", address, e)


def _detach(plan: MountPlan, debug: bool) -> None:
    os.setsid()
    os.chdir("/")
    setup_logging(debug, state_dir(plan.settings) / "fsmount.log")
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _tell(fd: int, message: str) -> None:
    try:
        os.write(fd, message.encode())
        os.close(fd)
    except OSError:  # already told "ok", or the parent is gone
        pass
