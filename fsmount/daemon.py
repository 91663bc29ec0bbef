"""Run a mount in the foreground, or detach once it is ready (like sshfs).

The parent waits on a pipe for the child to say "mounted" or why not, so ``fsmount`` returns
only when the mount works, with a one-line error and exit status 1 when it cannot.
"""
from __future__ import annotations

import logging
import os
import sys

import trio

from .cli import setup_logging
from .mount import MountError, MountPlan, serve, state_dir

log = logging.getLogger(__name__)


def run(plan: MountPlan, *, foreground: bool, debug: bool) -> int:
    if foreground:
        setup_logging(debug, None)
        try:
            trio.run(serve, plan, lambda: None)
        except MountError as e:
            print(f"fsmount: {e}", file=sys.stderr)
            return e.status
        except KeyboardInterrupt:
            return 0
        return 0
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write_end)
        with os.fdopen(read_end, "rb") as pipe:
            message = pipe.read().decode("utf-8", "replace")
        if message.startswith("ok"):
            return 0
        status, text = (int(message[1]), message[2:]) if message[1:2].isdigit() else (1, "")
        print(f"fsmount: {text.strip() or 'the mount process died; see the log'}", file=sys.stderr)
        return status
    os.close(read_end)
    _detach(plan, debug)

    def ready() -> None:
        os.write(write_end, b"ok\n")
        os.close(write_end)

    try:
        trio.run(serve, plan, ready)
    except MountError as e:
        log.error("%s", e)
        _tell(write_end, f"E{e.status}{e}")
        os._exit(1)
    except BaseException:
        log.exception("fsmount stopped by an internal error")
        _tell(write_end, f"E1internal error; details in {state_dir(plan.settings) / 'fsmount.log'}")
        os._exit(1)
    os._exit(0)


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
