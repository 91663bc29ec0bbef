"""Mount-time honesty, through the real CLI and real mounts: what fsmount refuses, what it
reports on the terminal, its exit statuses (fsmount(1) EXIT STATUS), what ``df`` shows, and
the errno of a server that refuses connections."""
from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsmount.exitstatus import Exit
from tests.mounting import REPO, is_mounted, mounted, private_env, run, scratch_dir, wait_for
from tests.servers.ftp import FtpServer, running_ftp


@pytest.fixture
def ftp() -> Iterator[FtpServer]:
    with running_ftp() as server:
        yield server


@pytest.fixture
def home() -> Iterator[Path]:
    d = scratch_dir("fsmount-test-")
    yield d
    for mnt in (d / "mnt", d / "mnt2"):
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False)
    shutil.rmtree(d, ignore_errors=True)


def account(name: str, port: int, password: str = "secret", timeout: float | None = None) -> str:
    """``timeout``: also how long a refused connection is retried (3 s at most by default)."""
    return (f'[accounts.{name}]\nurl = "ftp://alice@127.0.0.1:{port}/"\npassword = "{password}"\n'
            'plaintext_auth = true\ntls = "off"\n' + (f"timeout = {timeout}\n" if timeout else ""))


def fsmount(home: Path, *args: str | Path, env: dict[str, str] | None = None,
            config: str | None = None) -> subprocess.CompletedProcess:
    """The real CLI in its default (detached) mode; returns once it has mounted or failed."""
    cmd = [sys.executable, "-m", "fsmount"]
    if config is not None:
        (home / "config.toml").write_text(config)
        (home / "config.toml").chmod(0o600)
        cmd += ["-c", str(home / "config.toml")]
    return subprocess.run([*cmd, *map(str, args)], capture_output=True, text=True, timeout=90,
                          stdin=subprocess.DEVNULL, env=private_env(home, env))


def one_line(done: subprocess.CompletedProcess, status: int, pattern: str) -> None:
    assert done.returncode == status, (done.returncode, done.stderr)
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("fsmount: "), done.stderr
    assert re.search(pattern, done.stderr), done.stderr
    assert "Traceback" not in done.stderr


def mounts_at(path: Path) -> int:
    with open("/proc/self/mounts") as f:
        return sum(line.split()[1] == str(path) for line in f)


# -- refusals ----------------------------------------------------------------------------------


def test_a_second_mount_on_a_mounted_mountpoint_is_refused(ftp: FtpServer) -> None:
    with mounted(account("alpha", ftp.port), source="alpha") as m:
        (m.path / "first.txt").write_bytes(b"through the first mount")
        done = fsmount(m.home, "-c", m.home / "config.toml", "alpha", m.path)
        try:
            one_line(done, Exit.MOUNTPOINT, r"is already mounted \(fsmount:127\.0\.0\.1, type fuse\.fsmount\)")
            assert mounts_at(m.path) == 1  # nothing stacked over the first mount
            assert (m.path / "first.txt").read_bytes() == b"through the first mount"
        finally:
            while mounts_at(m.path) > 1:  # what a second mount stacked, had it been let
                subprocess.run(["fusermount3", "-u", str(m.path)], check=True)


def test_a_non_empty_mountpoint_is_refused_unless_nonempty(ftp: FtpServer, home: Path) -> None:
    (ftp.root / "remote.txt").write_bytes(b"on the server")
    mnt = home / "mnt"
    mnt.mkdir()
    (mnt / "local.txt").write_bytes(b"would be hidden")
    cfg = account("alpha", ftp.port)
    one_line(fsmount(home, "alpha", mnt, config=cfg), Exit.MOUNTPOINT, r"is not empty \(it holds 'local\.txt'\).*-o nonempty")
    assert not is_mounted(mnt)
    done = fsmount(home, "-o", "nonempty", "alpha", mnt, config=cfg)
    assert done.returncode == 0 and done.stderr == "", done.stderr
    try:
        assert os.listdir(mnt) == ["remote.txt"]
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=True)
    assert (mnt / "local.txt").read_bytes() == b"would be hidden"


def test_a_dead_mount_is_named_with_the_way_to_clear_it(ftp: FtpServer, home: Path) -> None:
    mnt = home / "mnt"
    mnt.mkdir()
    (home / "config.toml").write_text(account("alpha", ftp.port))
    (home / "config.toml").chmod(0o600)
    proc = subprocess.Popen([sys.executable, "-m", "fsmount", "-f", "-c", str(home / "config.toml"), "alpha", str(mnt)],
                            env=private_env(home), stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: is_mounted(mnt), what="the mount")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    with pytest.raises(OSError) as e:
        os.stat(mnt)
    assert e.value.errno == errno.ENOTCONN
    one_line(fsmount(home, "alpha", mnt, config=account("alpha", ftp.port)), Exit.MOUNTPOINT,
             rf"process has ended.*fusermount3 -uz {re.escape(str(mnt))}")
    assert mounts_at(mnt) == 1


def test_a_missing_mountpoint(home: Path) -> None:
    one_line(fsmount(home, "ftp://127.0.0.1/", home / "nowhere"), Exit.MOUNTPOINT, "no such directory")


# -- several accounts ------------------------------------------------------------------------


def test_a_multi_account_mount_names_each_unusable_account(ftp: FtpServer, home: Path) -> None:
    mnt = home / "mnt"
    mnt.mkdir()
    cfg = (account("good", ftp.port) + account("wrongpw", ftp.port, "nope")
           + account("down", 1, timeout=1))
    done = fsmount(home, mnt, config=cfg)
    try:
        assert done.returncode == Exit.PARTIAL, done.stderr
        lines = sorted(done.stderr.splitlines())
        assert len(lines) == 2, done.stderr
        assert lines[0].startswith("fsmount: down: ") and "Connection refused" in lines[0]
        assert lines[1].startswith("fsmount: wrongpw: login failed") and "530" in lines[1]
        run("cp", "/etc/hostname", mnt / "good" / "h.txt")  # the account that works is served
        assert (ftp.root / "h.txt").read_bytes() == Path("/etc/hostname").read_bytes()
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)


def test_a_foreground_multi_account_mount_logs_each_unusable_account_and_exits_5(ftp: FtpServer) -> None:
    cfg = account("good", ftp.port) + account("wrongpw", ftp.port, "nope")
    with mounted(cfg, expect_warnings=[r"WARNING fsmount\.mount: wrongpw: login failed"]) as m:
        assert sorted(os.listdir(m.path)) == ["good", "wrongpw"]
    assert m.proc.returncode == Exit.PARTIAL


@pytest.mark.parametrize(("down", "status"), [(False, Exit.REFUSED), (True, Exit.FAILED)])
def test_a_multi_account_mount_where_none_works(ftp: FtpServer, home: Path, down: bool, status: int) -> None:
    mnt = home / "mnt"
    mnt.mkdir()
    cfg = account("one", ftp.port, "nope") + account("two", 1 if down else ftp.port, "nope", timeout=1)
    done = fsmount(home, mnt, config=cfg)
    assert done.returncode == status, done.stderr
    assert sorted(line.split(":")[1] for line in done.stderr.splitlines()) == [" one", " two"]
    assert not is_mounted(mnt)


# -- what the kernel says, and where fsmount keeps its files ---------------------------------


def in_own_mount_namespace(script: str, changes: str) -> list[str]:
    """The command running ``sh -ec script ARGS...`` in a mount namespace of its own, so it
    can change the mount ``changes`` (/dev, /root) without touching the machine; the
    namespace ends with its last process."""
    private = ["unshare", "--mount", "--propagation", "private"]
    if subprocess.run([*private, "true"], capture_output=True).returncode == 0:
        return [*private, "sh", "-ec", script, "sh"]
    # In a chroot "/" is no mount point and cannot be made private: the mount the script
    # changes is made private instead (it must be a mount point of its own).
    if not os.path.ismount(changes):
        pytest.skip(f"no private mount namespace here, and {changes} is no mount point")
    return ["unshare", "--mount", "--propagation", "unchanged", "sh", "-ec",
            f"mount --make-rprivate {changes}; {script}", "sh"]


def test_detached_mode_prints_the_kernels_reason(ftp: FtpServer, home: Path) -> None:
    """No /dev/fuse: libfuse says so on the stderr of the detached child, which is /dev/null
    by then; the waiting parent must print it."""
    (home / "mnt").mkdir()
    script = 'mount -t tmpfs tmpfs /dev; mknod -m 666 /dev/null c 1 3; exec "$@"'
    done = subprocess.run([*in_own_mount_namespace(script, "/dev"), sys.executable, "-m", "fsmount",
                           "-o", "plaintext_auth,tls=off", ftp.url("ftp"), str(home / "mnt")],
                          capture_output=True, text=True, timeout=90,
                          env=private_env(home, {"FSMOUNT_PASSWORD": "secret"}))
    one_line(done, Exit.FAILED, r"cannot mount on .*: fuse: device not found")


@pytest.mark.parametrize("kind", ["missing", "another user's"])
def test_a_home_that_is_not_the_users_falls_back_to_the_passwd_home(ftp: FtpServer, home: Path, kind: str) -> None:
    """mount.fuse3 runs an fstab user mount with HOME=/root. Here, as root, HOME names a
    missing directory or one owned by someone else; /root is a fresh tmpfs in a private mount
    namespace, where the cache and the log must land (python stays reachable through a bind)."""
    prefix = Path(sys.prefix).resolve()
    if not str(prefix).startswith("/root/"):
        pytest.skip("this python is not under /root: keeping it reachable needs another setup")
    bad = home / "bad-home"
    if kind != "missing":
        bad.mkdir()
        os.chown(bad, 65534, 65534)
    mnt, pyenv = home / "mnt", home / "pyenv"
    mnt.mkdir()
    pyenv.mkdir()
    env = {k: v for k, v in private_env(home, {"FSMOUNT_PASSWORD": "secret"}).items()
           if not k.startswith("XDG_")}
    env["HOME"] = str(bad)
    script = "; ".join([
        f"mount --bind {prefix} {pyenv}", "mount -t tmpfs tmpfs /root",  # a fresh, empty /root
        f"mkdir -p {prefix}", f"mount --bind {pyenv} {prefix}",  # with this python in it
        '"$@"', f"echo hello > {mnt}/h.txt", "ls /root/.cache/fsmount /root/.local/state/fsmount",
        f"fusermount3 -u {mnt}",
    ])
    done = subprocess.run([*in_own_mount_namespace(script, "/root"), sys.executable, "-m", "fsmount",
                           "-o", "plaintext_auth,tls=off", ftp.url("ftp"), str(mnt)],
                          capture_output=True, text=True, timeout=90, env=env, cwd=REPO)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert (ftp.root / "h.txt").read_bytes() == b"hello\n"
    assert "spool" in done.stdout and "fsmount.log" in done.stdout, done.stdout
    assert not bad.exists() if kind == "missing" else list(bad.iterdir()) == []


def test_an_unusable_cache_directory_is_one_line(home: Path) -> None:
    (home / "mnt").mkdir()
    done = fsmount(home, "ftp://127.0.0.1:1/", home / "mnt", env={"XDG_CACHE_HOME": "/proc/no-such"})
    one_line(done, Exit.USAGE, r"cannot use /proc/no-such/fsmount for the cache directory.*XDG_CACHE_HOME")


# -- systemd ---------------------------------------------------------------------------------


def test_foreground_mount_tells_systemd_when_it_is_ready(ftp: FtpServer, home: Path) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(home / "notify"))
    sock.settimeout(60)
    with mounted(account("alpha", ftp.port), source="alpha", env={"NOTIFY_SOCKET": str(home / "notify")}) as m:
        message = sock.recv(4096).decode()
        assert is_mounted(m.path)
        assert message.splitlines()[0] == "READY=1" and f"STATUS=mounted on {m.path}" in message
    sock.close()


def test_the_unit_does_not_restart_what_cannot_work() -> None:
    unit = (REPO / "contrib" / "fsmount@.service").read_text()
    settings = dict(re.findall(r"^(\w+)=(.*)$", unit, re.M))
    assert settings["Type"] == "notify"
    assert settings["Restart"] == "on-failure"
    assert {int(s) for s in settings["RestartPreventExitStatus"].split()} == {
        Exit.USAGE, Exit.REFUSED, Exit.MOUNTPOINT}
    if shutil.which("systemd-analyze"):
        done = subprocess.run(["systemd-analyze", "verify", "--man=no", str(REPO / "contrib" / "fsmount@.service")],
                              capture_output=True, text=True)
        assert "Unknown key" not in done.stderr and "Failed to parse" not in done.stderr, done.stderr


# -- df and errno ----------------------------------------------------------------------------


def test_df_shows_the_spools_free_space_and_nothing_used(ftp: FtpServer) -> None:
    with mounted(account("alpha", ftp.port), source="alpha") as m:
        mine = os.statvfs(m.path)
        local = os.statvfs(m.home / "cache" / "fsmount" / "spool")
        assert mine.f_blocks == mine.f_bfree == mine.f_bavail
        assert abs(mine.f_bavail * mine.f_frsize - local.f_bavail * local.f_frsize) < 256 << 20
        assert mine.f_files == mine.f_ffree == 0
        size, used, avail = run("df", "-B1", "--output=size,used,avail", m.path).stdout.split()[3:]
        assert int(used) == 0 and int(size) == int(avail)
        # the disk is shared: its free space may move between the two looks
        assert abs(int(avail) - mine.f_bavail * mine.f_frsize) < 256 << 20
    with mounted(account("alpha", ftp.port), source="alpha", options=["ro"]) as m:
        mine = os.statvfs(m.path)
        assert mine.f_blocks == mine.f_bavail == 0 and mine.f_flag & os.ST_RDONLY


def test_a_refused_connection_is_eio_as_documented(ftp: FtpServer) -> None:
    (ftp.root / "sub").mkdir()
    with mounted(account("alpha", ftp.port, timeout=1.5), source="alpha",
                 expect_warnings=[r"unreachable|Connection refused"]) as m:
        ftp.stop()  # its port now refuses connections
        with pytest.raises(OSError) as e:
            os.listdir(m.path / "sub")
        assert e.value.errno == errno.EIO, os.strerror(e.value.errno)
