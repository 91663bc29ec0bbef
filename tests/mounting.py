"""Mount the real filesystem through the ``fsmount`` entry point, as a user would.

``mounted`` runs ``python -m fsmount -f --debug`` in a private XDG/HOME, waits until the kernel
shows the mount, and on exit unmounts with ``fusermount3 -u`` and fails the test if the log
holds a traceback, an ERROR, or a WARNING the test did not expect.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def scratch_dir(prefix: str) -> Path:
    """A private temporary directory for mount homes, caches and local copies.

    Not /tmp: on these machines creating a file there costs ~1 ms against ~0.02 ms in
    /var/tmp (same disk), which would make every cache miss look slow.
    """
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))


def wait_for(condition: Callable[[], object], timeout: float = 20.0, what: str = "condition",
             *, poll: float = 0.1) -> object:
    """Poll ``condition`` until it is truthy; the poll is the wait, not a guess at a duration.
    Polls soon, then every ``poll`` s: smaller for a cheap condition waited on often."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, poll)


def is_mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target for line in f)


@dataclass
class Mount:
    path: Path
    log: Path
    home: Path
    proc: subprocess.Popen
    env: dict[str, str]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def private_env(home: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "FSMOUNT_"))}
    env.update(
        HOME=str(home),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_CACHE_HOME=str(home / "cache"),
        XDG_STATE_HOME=str(home / "state"),
        PYTHONPATH=str(REPO),
    )
    env.update(extra or {})
    return env


@contextmanager
def mounted(
    config_toml: str | None = None,
    *,
    source: str | None = None,
    options: Sequence[str] = (),
    env: dict[str, str] | None = None,
    expect_warnings: Sequence[str] = (),
    home: Path | None = None,
    timeout: float = 30.0,
    debug: bool = True,
) -> Iterator[Mount]:
    """Mount ``source`` (or every account of ``config_toml``) and unmount afterwards.

    Pass the same ``home`` to mount twice over one cache and state directory; ``debug=False``
    for benchmarks (protocol logging costs time).
    """
    own_home = home is None
    home = home or scratch_dir("fsmount-test-")
    mnt = Path(tempfile.mkdtemp(prefix="mnt-", dir=home))
    log = home / f"{mnt.name}.log"
    cmd = [sys.executable, "-m", "fsmount", "-f", *(["--debug"] if debug else [])]
    if config_toml is not None:
        cfg = home / "config.toml"
        cfg.write_text(config_toml)
        cfg.chmod(0o600)
        cmd += ["-c", str(cfg)]
    if options:
        cmd += ["-o", ",".join(options)]
    cmd += [*([source] if source else []), str(mnt)]
    full_env = private_env(home, env)
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=full_env)
    mount = Mount(mnt, log, home, proc, full_env)
    try:
        try:
            # every test waits for this: polled often (a read of /proc/self/mounts)
            wait_for(lambda: is_mounted(mnt) or proc.poll() is not None, timeout, "the mount",
                     poll=0.01)
        except TimeoutError:
            proc.kill()
            raise
        if not is_mounted(mnt):
            raise RuntimeError(f"fsmount exited with {proc.returncode}:\n{mount.log_text()}")
        yield mount
    finally:
        unmount(mount)
        check_log(mount.log_text(), expect_warnings)
        if own_home:
            shutil.rmtree(home, ignore_errors=True)


def unmount(mount: Mount) -> None:
    if is_mounted(mount.path):
        done = subprocess.run(["fusermount3", "-u", str(mount.path)], capture_output=True, text=True)
        if done.returncode != 0 and is_mounted(mount.path):
            subprocess.run(["fusermount3", "-uz", str(mount.path)], capture_output=True)
    try:
        mount.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        mount.proc.kill()
        mount.proc.wait()
        raise AssertionError(f"fsmount did not exit after unmount:\n{mount.log_text()[-3000:]}")


_PROBLEM = re.compile(r"^.* (WARNING|ERROR|CRITICAL) .*$|^Traceback.*$", re.M)


def check_log(text: str, expected: Sequence[str] = ()) -> None:
    """Fail on a traceback or a WARNING/ERROR not matched by one of ``expected`` (regexes)."""
    problems = [
        m.group(0) for m in _PROBLEM.finditer(text)
        if not any(re.search(p, m.group(0)) for p in expected)
    ]
    if problems:
        raise AssertionError("unexpected problems in the fsmount log:\n" + "\n".join(problems[:20])
                             + "\n--- log tail ---\n" + text[-4000:])


def run(*cmd: str | Path, check: bool = True, **kw: object) -> subprocess.CompletedProcess:
    """Run a real tool; on failure show its output."""
    done = subprocess.run([str(c) for c in cmd], capture_output=True, **kw)  # type: ignore[call-overload]
    if check and done.returncode != 0:
        raise AssertionError(f"{cmd} exited {done.returncode}: {done.stderr!r} {done.stdout!r}"[:3000])
    return done
