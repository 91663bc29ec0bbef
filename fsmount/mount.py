"""Wire accounts → backends → cache → VFS, run until unmounted, and drain before leaving.

``serve`` reports readiness (or the one-line reason it could not mount) through callbacks,
so the CLI can detach only once the mount works, as sshfs does.
"""
from __future__ import annotations

import dataclasses
import gc
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyfuse3
import trio

from . import backends
from .backends.base import Backend
from .cache.content import ContentStore
from .cache.layer import CachedBackend
from .cache.links import Links
from .cache.metadata import ListingBudget
from .cache.spool import Spool
from .config import Account, xdg_dir
from .credentials import Secret
from .errors import AuthenticationFailed, ConfigError, FsError, PermissionDenied
from .exitstatus import Exit
from .vfs.attrs import Owner
from .vfs.operations import Operations
from .vfs.tree import Tree

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MountPlan:
    accounts: Mapping[str, Account]
    secrets: Mapping[str, Secret]
    single: str | None  # mount this account as the root (a SOURCE was given)
    mountpoint: str
    fuse_options: frozenset[str]
    settings: Mapping[str, object]
    owner: Owner


class MountError(Exception):
    """Why the mount could not start, one line per account for the user; ``status`` is the
    exit code (``Exit``)."""

    def __init__(self, message: str, status: int = Exit.FAILED) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Problem:
    """An account that could not be used at mount time: the line for the user, and whether
    trying again could help (``Exit.FAILED``) or not (``Exit.REFUSED``)."""

    message: str
    status: Exit


def cache_dir(settings: Mapping[str, object]) -> Path:
    return Path(str(settings["cache_dir"])).expanduser() if settings.get("cache_dir") else xdg_dir("CACHE", ".cache")


def state_dir(settings: Mapping[str, object]) -> Path:
    return Path(str(settings["state_dir"])).expanduser() if settings.get("state_dir") else xdg_dir("STATE", ".local/state")


async def check_account(name: str, account: Account, backend: Backend) -> Problem | None:
    """Connect and log in once, so a bad password or a dead server is reported at mount time."""
    try:
        with trio.fail_after(account["timeout"] + 5):
            await backend.stat(())
    except AuthenticationFailed as e:
        return Problem(f"{name}: login failed at {account.label}: {e}", Exit.REFUSED)
    except PermissionDenied as e:  # an untrusted certificate, a root folder refused
        return Problem(f"{name}: refused by {account.label}: {e}", Exit.REFUSED)
    except FsError as e:
        return Problem(f"{name}: cannot use {account.label}: {e or type(e).__name__}", Exit.FAILED)
    except trio.TooSlowError:
        return Problem(f"{name}: {account.label} did not answer within {account['timeout']:g} s", Exit.FAILED)
    return None


def _failure(problems: Sequence[Problem]) -> MountError:
    """Nothing can be mounted: one line per account; REFUSED only when every account was
    refused, since otherwise a later try may work."""
    refused = all(p.status == Exit.REFUSED for p in problems)
    return MountError("\n".join(p.message for p in problems), Exit.REFUSED if refused else Exit.FAILED)


@contextmanager
def _stderr_captured() -> Iterator[Callable[[], str]]:
    """Collect what is written to file descriptor 2 meanwhile, by this process and the ones
    it starts. libfuse (and fusermount3) say why a mount failed only there, and a detached
    fsmount has pointed fd 2 at /dev/null; the caller reports the text instead."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: (sink.seek(0), sink.read())[1].decode("utf-8", "replace")
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _kernel_init(ops: Operations, plan: MountPlan) -> None:
    """pyfuse3.init, with libfuse's reason in the error when the mount is refused."""
    with _stderr_captured() as said:
        try:
            pyfuse3.init(ops, plan.mountpoint, set(plan.fuse_options))
        except RuntimeError as e:
            reason = "; ".join(line.strip() for line in said().splitlines() if line.strip())
            raise MountError(f"cannot mount on {plan.mountpoint}: {reason or e}") from None
        text = said()
    if text:  # not for us: pass it on to where it was going
        sys.stderr.write(text)


async def serve(plan: MountPlan, ready: Callable[[Sequence[str]], None]) -> list[str]:
    """Mount and serve until unmounted. ``ready`` is called once the mount works, with the
    line for each account of a multi-account mount that could not be used (the mount serves
    the others); the same lines are returned at the end."""
    cache = cache_dir(plan.settings)
    store = ContentStore(cache / "content", int(plan.settings["cache_size"]))  # type: ignore[arg-type]
    spool = Spool(cache / "spool")
    env = backends.Environment(state_dir(plan.settings))
    try:
        made = {name: backends.create(acc, plan.secrets[name], env) for name, acc in plan.accounts.items()}
    except ConfigError as e:
        raise MountError(str(e), status=Exit.USAGE) from None
    try:
        problems: list[Problem] = []

        async def check(name: str) -> None:
            problem = await check_account(name, plan.accounts[name], made[name])
            if problem:
                problems.append(problem)

        async with trio.open_nursery() as nursery:
            for name in made:
                nursery.start_soon(check, name)
        if problems and (plan.single is not None or len(problems) == len(made)):
            raise _failure(problems)
        for problem in problems:  # a multi-account mount still serves the accounts that work
            log.warning("%s", problem.message)
        budget = ListingBudget(int(plan.settings["cache_entries"]))  # type: ignore[arg-type]
        cached = {
            name: CachedBackend(b, name, store, float(plan.accounts[name]["metadata_ttl"]),
                                parallel=int(plan.accounts[name]["connections"]),
                                stream_size=int(plan.settings["stream_size"]),  # type: ignore[arg-type]
                                decoded_view=bool(plan.accounts[name].options.get("decoded_view")),
                                budget=budget)
            for name, b in made.items()
        }
        env.links = Links(cached)  # the outbox files and posts through the cached accounts
        for name, layer in cached.items():
            if plan.accounts[name]["readonly"]:  # enforced here, whatever the backend offers
                layer.capabilities = dataclasses.replace(
                    layer.capabilities, write=False, overwrite=False, mkdir=False, remove=False,
                    rename=False, set_mode=False, set_mtime=False)
        ops = Operations(Tree(cached, plan.single), spool, plan.owner,
                         int(plan.settings["max_inodes"]))  # type: ignore[arg-type]
        _kernel_init(ops, plan)
        try:
            async with trio.open_nursery() as nursery:
                for c in cached.values():
                    c.nursery = nursery
                for b in made.values():
                    if hasattr(b, "run"):
                        await nursery.start(b.run)
                nursery.start_soon(_stop_on_signal, ops)
                # What start-up made (modules, accounts, the event loop) lives as long as
                # the mount: out of the collector's sight, each full collection walks only
                # what came since (cold ls -l of 10k messages: -5 % CPU).
                gc.freeze()
                ready([p.message for p in problems])
                await pyfuse3.main()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await ops.drain()
            pyfuse3.close(unmount=True)
    finally:
        with trio.CancelScope(shield=True):
            for b in made.values():
                try:
                    await b.aclose()
                except Exception as e:  # closing is best effort; the mount is already gone
                    log.debug("closing a backend: %s", e)
        store.close()
        spool.close()
    return [p.message for p in problems]


async def _stop_on_signal(ops: Operations) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            log.info("signal %d: finishing uploads under way, then unmounting (files still "
                     "open for writing are not stored)", signum)
            await ops.drain()
            pyfuse3.terminate()
            return
