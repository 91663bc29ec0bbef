"""The mount as a whole: several accounts under one root, daemon mode, mount options."""
from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mounting import is_mounted, mounted, private_env, run, scratch_dir, wait_for
from tests.servers.ftp import FtpServer, running_ftp


@pytest.fixture
def two_ftp() -> tuple[FtpServer, FtpServer]:
    with running_ftp() as a, running_ftp() as b:
        yield a, b


def config(**servers: FtpServer) -> str:
    return "".join(
        f'[accounts.{name}]\nurl = "ftp://alice@127.0.0.1:{s.port}/"\npassword = "secret"\n'
        'plaintext_auth = true\ntls = "off"\n'
        for name, s in servers.items()
    )


def test_one_folder_per_account_and_mv_across_accounts(two_ftp: tuple[FtpServer, FtpServer]) -> None:
    a, b = two_ftp
    (a.root / "report.txt").write_bytes(b"quarterly numbers\n")
    with mounted(config(alpha=a, beta=b)) as m:
        assert sorted(os.listdir(m.path)) == ["alpha", "beta"]
        assert run("ls", "-l", m.path).stdout.count(b"\nd") == 2
        with pytest.raises(OSError) as e:
            os.rename(m.path / "alpha" / "report.txt", m.path / "beta" / "report.txt")
        assert e.value.errno == errno.EXDEV
        run("mv", m.path / "alpha" / "report.txt", m.path / "beta" / "")  # mv copies, then deletes
        assert (b.root / "report.txt").read_bytes() == b"quarterly numbers\n"
        assert not (a.root / "report.txt").exists()
        with pytest.raises(OSError) as e:
            (m.path / "stray.txt").write_text("no account here")
        assert e.value.errno == errno.EROFS
    fields = [line.split() for line in open("/proc/self/mounts")]
    assert not any(f[1] == str(m.path) for f in fields)


def test_fsname_and_read_only_option(two_ftp: tuple[FtpServer, FtpServer]) -> None:
    a, _ = two_ftp
    (a.root / "keep.txt").write_bytes(b"keep")
    with mounted(config(alpha=a), source="alpha", options=["ro"]) as m:
        line = next(l.split() for l in open("/proc/self/mounts") if l.split()[1] == str(m.path))
        assert line[0] == "fsmount:127.0.0.1" and line[2] == "fuse.fsmount" and "ro" in line[3].split(",")
        assert (m.path / "keep.txt").read_bytes() == b"keep"
        done = run("cp", "/etc/hostname", m.path / "new.txt", check=False)
        assert done.returncode != 0 and b"Read-only file system" in done.stderr
        assert not (a.root / "new.txt").exists()


def test_daemon_mode_detaches_once_mounted(two_ftp: tuple[FtpServer, FtpServer]) -> None:
    a, _ = two_ftp
    home = scratch_dir("fsmount-test-")
    mnt = home / "mnt"
    mnt.mkdir()
    cfg = home / "config.toml"
    cfg.write_text(config(alpha=a))
    cfg.chmod(0o600)
    done = subprocess.run([sys.executable, "-m", "fsmount", "-c", str(cfg), "alpha", str(mnt)],
                          capture_output=True, text=True, env=private_env(home), timeout=60)
    try:
        assert done.returncode == 0, done.stderr
        assert done.stderr == "" and is_mounted(mnt)  # mounted before fsmount returned
        run("cp", "/etc/hostname", mnt / "h.txt")
        assert (a.root / "h.txt").read_bytes() == Path("/etc/hostname").read_bytes()
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
    wait_for(lambda: not is_mounted(mnt), what="the unmount")
    log = home / "state" / "fsmount" / "fsmount.log"
    assert not log.exists() or "Traceback" not in log.read_text()


def test_daemon_mode_reports_a_wrong_password(two_ftp: tuple[FtpServer, FtpServer], tmp_path: Path) -> None:
    a, _ = two_ftp
    (tmp_path / "mnt").mkdir()
    env = private_env(tmp_path, {"FSMOUNT_PASSWORD": "wrong"})
    done = subprocess.run([sys.executable, "-m", "fsmount", "-o", "plaintext_auth,tls=off",
                           a.url("ftp"), str(tmp_path / "mnt")],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 3  # refused: systemd must not try again
    assert done.stderr.startswith("fsmount: ") and "login failed" in done.stderr
    assert done.stderr.count("\n") == 1 and not is_mounted(tmp_path / "mnt")


def test_readonly_account_setting(two_ftp: tuple[FtpServer, FtpServer]) -> None:
    a, _ = two_ftp
    (a.root / "keep.txt").write_bytes(b"keep")
    with mounted(config(alpha=a) + "readonly = true\n", source="alpha") as m:
        assert (m.path / "keep.txt").read_bytes() == b"keep"
        for cmd in (["cp", "/etc/hostname", m.path / "new.txt"], ["rm", m.path / "keep.txt"],
                    ["mkdir", m.path / "d"]):
            done = run(*cmd, check=False)
            assert done.returncode != 0 and b"Read-only file system" in done.stderr, cmd
        assert sorted(p.name for p in a.root.iterdir()) == ["keep.txt"]
