"""fsmount benchmarks: ratios against a direct protocol client on the same server, the
incumbent tool where there is one (rclone for FTP), and the floor of any Python FUSE
filesystem (../shared/bench/fuse_floor.py, a bare pyfuse3 passthrough of a local copy).

usage: python3 tests/bench.py [ftp] [imap] [pop3] [nntp]    (default: all; loopback only)

Each line prints what was measured, the two times and their ratio, and the target from the
issue. Timings are wall-clock medians of a few runs where a run is cheap.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.mounting import is_mounted, mounted, wait_for  # noqa: E402

FLOOR = Path(__file__).resolve().parent.parent.parent / "shared" / "bench" / "fuse_floor.py"
RESULTS: list[tuple[str, str, str, str]] = []


def clock(fn: Callable[[], object], repeat: int = 1) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def sh(*cmd: str | Path) -> None:
    subprocess.run([str(c) for c in cmd], check=True, stdout=subprocess.DEVNULL)


def report(what: str, ours: float, theirs: float, against: str, target: str) -> None:
    """One result line: our time, the reference time, and ours as a multiple of it."""
    ratio = ours / theirs if theirs else float("inf")
    line = f"{what:<58} {ours:8.3f}s vs {against} {theirs:8.3f}s  = {ratio:5.2f}x  (target {target})"
    print(line, flush=True)
    RESULTS.append((what, f"{ratio:.2f}x", against, target))


def rate(what: str, nbytes: int, ours: float, theirs: float, against: str, target: str) -> None:
    """Throughput as a fraction of the reference's."""
    pct = theirs / ours * 100 if ours else 0.0
    line = (f"{what:<58} {nbytes / ours / 1e6:8.0f} MB/s vs {against} {nbytes / theirs / 1e6:8.0f} MB/s"
            f"  = {pct:5.1f}%  (target {target})")
    print(line, flush=True)
    RESULTS.append((what, f"{pct:.1f}%", against, target))


@contextmanager
def floor_mount(source: Path) -> Iterator[Path]:
    mnt = Path(tempfile.mkdtemp(prefix="floor-"))
    proc = subprocess.Popen([sys.executable, str(FLOOR), str(source), str(mnt)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: is_mounted(mnt) or proc.poll() is not None, 20, "the floor mount")
        yield mnt
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        proc.wait(timeout=20)
        mnt.rmdir()


def rss_peak(pid: int) -> int:
    """VmHWM (peak resident set) of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def drop_page_cache() -> None:
    """Cold means cold: the kernel must not serve a previous run's pages."""
    subprocess.run(["sync"])
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        pass


def grep_cold_warm(label: str, mount_dir: Path, floor_dir: Path, direct: float, needle: str) -> None:
    """The mail-style benchmark: cold and warm ``grep -rl`` against a direct loop and the floor."""
    cold = clock(lambda: subprocess.run(["grep", "-rl", needle, str(mount_dir)], stdout=subprocess.DEVNULL))
    warm = clock(lambda: subprocess.run(["grep", "-rl", needle, str(mount_dir)], stdout=subprocess.DEVNULL), 3)
    with floor_mount(floor_dir) as fl:
        subprocess.run(["grep", "-rl", needle, str(fl)], stdout=subprocess.DEVNULL)
        floor = clock(lambda: subprocess.run(["grep", "-rl", needle, str(fl)], stdout=subprocess.DEVNULL), 3)
    report(f"{label}: cold grep -rl (fsmount) vs direct fetch loop", cold, direct, "direct", "<= 2.00x")
    report(f"{label}: warm grep -rl (fsmount) vs floor", warm, floor, "floor", "<= 1.30x")


# -- NNTP ---------------------------------------------------------------------------------


def bench_nntp(count: int = 2000) -> None:
    from tests.servers.inn import running_inn

    with running_inn() as inn:
        inn.post_many("local.test", count)
        from fsmount.backends.nntp import _acknowledge_quickly

        with inn.client() as c:
            _acknowledge_quickly(c)  # as fsmount does: without it INN's Nagle costs 40 ms/article
            c.group("local.test")

            def direct_loop() -> None:
                for n in range(1, count + 1):
                    c.article(str(n))

            direct = clock(direct_loop)
        local = Path(tempfile.mkdtemp(prefix="bench-nntp-"))
        for n in range(1, count + 1):
            (local / f"{n:05d}.eml").write_bytes(inn.article(n, "local.test"))
        config = (f'[accounts.news]\nurl = "nntp://alice@127.0.0.1:{inn.port}"\n'
                  f'password = "secret1"\nplaintext_auth = true\ntls = "off"\nmax_articles = {count}\n'
                  f'groups = ["local.test"]\n')
        with mounted(config) as m:
            grep_cold_warm(f"nntp {count} articles", m.path / "news" / "local.test", local, direct,
                           "no-such-needle")
        shutil.rmtree(local)


SECTIONS = {"nntp": bench_nntp}


def main(argv: list[str]) -> int:
    chosen = argv or list(SECTIONS)
    for name in chosen:
        print(f"== {name}", flush=True)
        SECTIONS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
