"""fsmount benchmarks: ratios against a direct protocol client on the same server, the
incumbent tool where there is one (rclone for FTP), and the floor of any Python FUSE
filesystem (../shared/bench/fuse_floor.py, a bare pyfuse3 passthrough of a local copy).

usage: python3 tests/bench.py [ftp-read] [ftp] [ftp-walk [--entries N] [--runs N]] [imap] [pop3] [nntp]
       (default: all; loopback only)

Each line prints what was measured, the two times and their ratio, and the target from the
issue. Timings are wall-clock medians of a few runs where a run is cheap.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.mounting import is_mounted, mounted, scratch_dir, wait_for  # noqa: E402

FTP_FLOOR = Path(__file__).resolve().parent / "ftp_floor.py"
FLOOR = next((p for p in (Path(__file__).resolve().parent.parent.parent / "shared" / "bench" / "fuse_floor.py",
                          Path("/work/shared/bench/fuse_floor.py")) if p.exists()), Path("fuse_floor.py"))
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
def foreground_mount(cmd: list[str], mnt: Path, what: str, timeout: float,
                     env: dict[str, str] | None = None) -> Iterator[Path]:
    """Another program's FUSE mount on ``mnt`` (the floor, rclone), unmounted afterwards."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=None if env is None else {**os.environ, **env})
    try:
        wait_for(lambda: is_mounted(mnt) or proc.poll() is not None, timeout, what)
        if not is_mounted(mnt):
            raise RuntimeError(f"{what} did not start ({cmd[:2]} exited {proc.returncode})")
        yield mnt
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        proc.wait(timeout=timeout)
        mnt.rmdir()


def floor_mount(source: Path, direct_io: bool = False,
                flush: bool = False) -> AbstractContextManager[Path]:
    """The floor; with ``direct_io`` its files bypass the page cache as fsmount's big files
    do, so reads arrive as the reader asks (1 MiB) instead of as 128 KiB read-ahead. With
    ``flush`` it answers FLUSH, as any mount that takes writes must (close() returns what
    storing the file did): the floor of a writable filesystem, one request more per close."""
    mnt = scratch_dir("floor-")
    cmd = [sys.executable, "-c", _FLOOR_VARIANT, str(int(direct_io)), str(int(flush)), str(FLOOR),
           str(source), str(mnt)]
    return foreground_mount(cmd, mnt, "the floor mount", 20)


_FLOOR_VARIANT = """
import runpy, sys
direct_io, answers_flush = sys.argv[1] == "1", sys.argv[2] == "1"
sys.argv = sys.argv[3:]  # FLOOR SOURCE MOUNTPOINT, as if run itself
floor = runpy.run_path(sys.argv[0])
base = floor["Passthrough"]
class Variant(base):
    async def open(self, inode, flags, ctx):
        fi = await base.open(self, inode, flags, ctx)
        fi.direct_io = direct_io
        return fi
if answers_flush:
    async def flush(self, fh):
        pass
    Variant.flush = flush
floor["main"].__globals__["Passthrough"] = Variant
floor["main"]()
"""


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


def grep_time(where: Path, needle: str = "no-such-needle") -> float:
    return clock(lambda: subprocess.run(["grep", "-rl", needle, str(where)],
                                        stdout=subprocess.DEVNULL))


def grep_cold_warm(label: str, mount_dir: Path, floor_dir: Path, direct: float, needle: str,
                   writable: bool = False) -> float:
    """The mail-style benchmark: cold and warm ``grep -rl`` against a direct loop and the floor;
    the cold time, for comparisons of the caller's. For a ``writable`` account the warm bound
    is also shown: the floor answering FLUSH, as such a mount must.

    Warm runs alternate with the floor's, so that a shared machine's drift hits both alike.
    """
    cold = grep_time(mount_dir, needle)
    with floor_mount(floor_dir) as fl:
        floor_first = grep_time(fl, needle)  # the kernel has none of it yet: the floor's own "cold"
        pairs = [(grep_time(mount_dir, needle), grep_time(fl, needle)) for _ in range(5)]
    warm = sorted(p[0] for p in pairs)[2]
    floor = sorted(p[1] for p in pairs)[2]
    report(f"{label}: cold grep -rl (fsmount) vs direct fetch loop", cold, direct, "direct", "<= 2.00x")
    report(f"{label}: first grep -rl of the floor vs direct fetch loop", floor_first, direct, "direct",
           "(a bound)")
    report(f"{label}: warm grep -rl (fsmount) vs floor", warm, floor,
           "floor", "<= 1.60x" if writable else "<= 1.30x")
    if writable:
        with floor_mount(floor_dir, flush=True) as fl:
            grep_time(fl, needle)
            flush_warm = clock(lambda: grep_time(fl, needle), 3)
        report(f"{label}: warm grep -rl of a floor answering FLUSH vs floor", flush_warm, floor,
               "floor", "(a bound)")
    return cold


def alternating(runs: int, measure: dict[str, Callable[[], float]],
                settle: Callable[[], object] = lambda: None) -> dict[str, list[float]]:
    """Seconds of each measurement in ``runs`` rounds, their order rotated from round to round
    so that a shared machine's drift hits each alike; ``settle`` runs before each (``os.sync``:
    none pays for the previous one's write-back)."""
    times: dict[str, list[float]] = {what: [] for what in measure}
    names = list(measure)
    for i in range(runs):
        k = i % len(names)
        for what in names[k:] + names[:k]:
            settle()
            times[what].append(measure[what]())
    return times


def per_round(what: str, times: dict[str, list[float]], who: str, against: str, target: str,
              speed: bool = False) -> None:
    """min/median/max over the rounds of ``who``'s time as a multiple of ``against``'s (with
    ``speed``: of its speed as a fraction of theirs)."""
    ratios = sorted((t / o if speed else o / t) for o, t in zip(times[who], times[against]))
    median = f"{ratios[len(ratios) // 2]:.2f}x"
    print(f"{what}: min {ratios[0]:.2f}x median {median} max {ratios[-1]:.2f}x (target {target})",
          flush=True)
    RESULTS.append((what, median, against, target))


# -- FTP ----------------------------------------------------------------------------------


def _make_file(path: Path, size: int) -> None:
    """Incompressible content, written in 8 MiB pieces (memory stays flat)."""
    with open(path, "wb") as f:
        piece = os.urandom(8 << 20)
        for _ in range(size // len(piece)):
            f.write(piece)
        f.write(piece[: size % len(piece)])


@contextmanager
def rclone_mount(port: int) -> Iterator[Path]:
    """The incumbent: ``rclone mount`` of the same server, default VFS options."""
    mnt = scratch_dir("rclone-")
    secret = subprocess.run(["rclone", "obscure", "secret"], capture_output=True, text=True).stdout.strip()
    cache = scratch_dir("rclone-cache-")
    try:
        with foreground_mount(
                ["rclone", "mount", ":ftp:", str(mnt), "--ftp-host", "127.0.0.1", "--ftp-port", str(port),
                 "--ftp-user", "alice", "--ftp-pass", secret, "--cache-dir", str(cache),
                 "--config", "/dev/null"], mnt, "the rclone mount", 30):
            yield mnt
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def _ftp_direct(server, big: int, up: Path, small: list[Path], offsets: list[int]) -> dict[str, float]:
    import ftplib

    c = server.client()
    times = {}
    times["down"] = clock(lambda: c.retrbinary("RETR big.bin", lambda b: None, blocksize=1 << 20), 3)
    with open(up, "rb") as f:
        times["up"] = clock(lambda: (f.seek(0), c.storbinary("STOR direct-up.bin", f, blocksize=1 << 20)), 3)
    c.mkd("direct-small")
    subprocess.run(["sync"])  # the big upload's write-back must not run into the small files

    def stor_all() -> None:
        for p in small:
            with open(p, "rb") as f:
                c.storbinary(f"STOR direct-small/{p.name}", f)

    times["small"] = clock(stor_all)
    c.mkd("direct-safe")
    subprocess.run(["sync"])

    def stor_all_safely() -> None:  # what fsmount does: no partial file under its final name
        for p in small:
            with open(p, "rb") as f:
                c.storbinary(f"STOR direct-safe/.{p.name}.part", f)
            c.sendcmd(f"RNFR direct-safe/.{p.name}.part")
            c.sendcmd(f"RNTO direct-safe/{p.name}")

    times["small_safe"] = clock(stor_all_safely)

    def random_reads() -> None:
        for off in offsets:
            conn = c.transfercmd("RETR rnd.bin", rest=off)
            got = b""
            while len(got) < 4096:
                piece = conn.recv(4096 - len(got))
                if not piece:
                    break
                got += piece
            conn.close()
            try:
                c.voidresp()
            except ftplib.error_temp:  # 426: transfer aborted, as intended
                pass

    times["random"] = clock(random_reads)
    times["mlsd"] = clock(lambda: list(c.mlsd("many")), 3)
    c.quit()
    return times


def _tool_ops(mnt: Path, up: Path, smalldir: Path, offsets: list[int], tag: str,
              server_dir: Path) -> dict[str, float]:
    """The same operations through a mount (fsmount's or rclone's)."""
    times = {}
    drop_page_cache()
    times["down"] = clock(lambda: sh("cat", mnt / "big.bin"))  # cat writes to /dev/null via stdout
    times["up"] = clock(lambda: sh("cp", up, mnt / f"{tag}-up.bin"))
    subprocess.run(["sync"])  # as for the direct STORs
    times["small"] = clock(lambda: sh("cp", "-r", smalldir, mnt / f"{tag}-small"))

    def random_reads() -> None:
        fd = os.open(mnt / "rnd.bin", os.O_RDONLY)
        try:
            for off in offsets:
                os.pread(fd, 4096, off)
        finally:
            os.close(fd)

    times["random"] = clock(random_reads)
    subprocess.run(["sync"])  # the copies' write-back must not run into the listing,
    for p in server_dir.iterdir():  # and the server's disk is as warm as for the direct MLSD
        p.stat()
    times["ls_cold"] = clock(lambda: sh("ls", "-l", mnt / "many"))
    times["ls_warm"] = clock(lambda: sh("ls", "-l", mnt / "many"), 3)
    return times


def bench_ftp() -> None:
    import random

    from tests.servers.ftp import running_ftp

    work = scratch_dir("bench-ftp-")
    root = work / "root"
    (root / "many").mkdir(parents=True)
    big = 512 << 20
    _make_file(root / "big.bin", big)
    _make_file(root / "rnd.bin", 64 << 20)
    _make_file(root / "huge.bin", 2 << 30)
    up = work / "up.bin"
    _make_file(up, 256 << 20)
    for i in range(10_000):
        (root / "many" / f"entry-{i:05d}.txt").write_bytes(b"x" * (i % 100))
    smalldir = work / "small"
    smalldir.mkdir()
    small = []
    for i in range(1000):
        p = smalldir / f"small-{i:04d}.txt"
        p.write_bytes(os.urandom(100 + i * 7))
        small.append(p)
    offsets = [random.Random(i).randrange(0, (64 << 20) - 4096) for i in range(200)]
    with running_ftp(root=root) as server:
        direct = _ftp_direct(server, big, up, small, offsets)
        config = (f'[accounts.ftp]\nurl = "ftp://alice@127.0.0.1:{server.port}/"\n'
                  'password = "secret"\nplaintext_auth = true\ntls = "off"\n')
        with mounted(config, source="ftp", debug=False) as m:
            ours = _tool_ops(m.path, up, smalldir, offsets, "fsmount", root / "many")
            assert (root / "fsmount-up.bin").stat().st_size == up.stat().st_size
            huge_out = clock(lambda: sh("cp", m.path / "huge.bin", work / "huge-out.bin"))
            huge_in = clock(lambda: sh("cp", work / "huge-out.bin", m.path / "huge-in.bin"))
            peak = rss_peak(m.proc.pid)
            for f in ("huge.bin", "huge-in.bin"):
                (root / f).unlink()
            (work / "huge-out.bin").unlink()
        with rclone_mount(server.port) as rc:
            theirs = _tool_ops(rc, up, smalldir, offsets, "rclone", root / "many")
        local_many = root / "many"
        with floor_mount(root) as fl:
            drop_page_cache()
            floor_down = clock(lambda: sh("cat", fl / "big.bin"))
            floor_ls = clock(lambda: sh("ls", "-l", fl / "many"), 3)
        del local_many
    with running_ftp(root=root, throttle=100_000_000) as slow:
        c = slow.client()
        capped_direct = clock(lambda: c.retrbinary("RETR rnd.bin", lambda b: None, blocksize=1 << 20))
        c.quit()
        config = (f'[accounts.ftp]\nurl = "ftp://alice@127.0.0.1:{slow.port}/"\n'
                  'password = "secret"\nplaintext_auth = true\ntls = "off"\n')
        with mounted(config, source="ftp", debug=False) as m:
            capped = clock(lambda: sh("cat", m.path / "rnd.bin"))
    shutil.rmtree(work)

    rate("512 MiB sequential read, server's disk cold: fsmount vs direct RETR", big, ours["down"], direct["down"], "direct", ">= 50%")
    rate("512 MiB sequential read: rclone vs direct RETR", big, theirs["down"], direct["down"], "direct", "(26%)")
    rate("512 MiB sequential read: fsmount vs floor", big, ours["down"], floor_down, "floor", "")
    rate("64 MiB read over a 100 MB/s link: fsmount vs direct", 64 << 20, capped, capped_direct, "direct", ">= 95%")
    rate("cp 256 MiB in: fsmount vs direct STOR", 256 << 20, ours["up"], direct["up"], "direct", ">= 50%")
    rate("cp 256 MiB in: rclone vs direct STOR", 256 << 20, theirs["up"], direct["up"], "direct", "(29%)")
    report("cp -r 1000 small files: fsmount vs 1000 direct STORs", ours["small"], direct["small"], "direct", "<= 2x")
    report("cp -r 1000 small files: fsmount vs 1000 direct STOR+RNFR+RNTO", ours["small"],
           direct["small_safe"], "safe", "(the same safe upload)")
    report("cp -r 1000 small files: rclone vs 1000 direct STORs", theirs["small"], direct["small"], "direct", "(7x)")
    report("200 random 4 KiB reads: fsmount vs direct REST+RETR", ours["random"], direct["random"], "direct", "<= 3x")
    report("200 random 4 KiB reads: rclone vs direct REST+RETR", theirs["random"], direct["random"], "direct", "(370x)")
    report("ls -l 10,000 entries cold: fsmount vs one MLSD", ours["ls_cold"], direct["mlsd"], "MLSD", "<= 2.5x")
    report("ls -l 10,000 entries cold: rclone vs one MLSD", theirs["ls_cold"], direct["mlsd"], "MLSD", "(5-8x)")
    report("ls -l 10,000 entries warm: fsmount vs floor", ours["ls_warm"], floor_ls, "floor", f"<= 0.3 s: {ours['ls_warm']:.3f} s")
    print(f"{'2 GiB copy out + 2 GiB copy in':<58} {huge_out:6.1f}s + {huge_in:6.1f}s; fsmount peak RSS "
          f"{peak / 2**20:.0f} MiB (target < 150 MiB)", flush=True)



def spread(times: list[float]) -> str:
    t = sorted(times)
    return f"min {t[0]:.3f} median {t[len(t) // 2]:.3f} max {t[-1]:.3f} s"


def bench_ftp_read(runs: int = 5, size: int = 256 << 20) -> None:
    """A cold sequential read (``dd bs=1M``) of a big file the server holds in its page
    cache: direct RETR, the floor and fsmount, alternating, each mount fresh (nothing in its
    caches). The spread shows how noisy the shared machine was; ratios are per round."""
    from tests.servers.ftp import running_ftp

    work = scratch_dir("bench-ftp-read-")
    root = work / "root"
    root.mkdir()
    _make_file(root / "big.bin", size)

    def dd(path: Path) -> float:
        return clock(lambda: subprocess.run(["dd", f"if={path}", "of=/dev/null", "bs=1M"], check=True,
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    with running_ftp(root=root) as server:
        c = server.client()

        def direct() -> float:
            return clock(lambda: c.retrbinary("RETR big.bin", lambda b: None, blocksize=1 << 20))

        def floor(direct_io: bool) -> float:
            with floor_mount(root, direct_io=direct_io) as fl:
                return dd(fl / "big.bin")

        def ftp_floor() -> float:
            mnt = scratch_dir("ftp-floor-")
            cmd = [sys.executable, str(FTP_FLOOR), str(server.port), "alice", "big.bin", str(size),
                   str(mnt)]
            with foreground_mount(cmd, mnt, "the FTP floor", 20,
                                  env={"FTP_FLOOR_PASSWORD": "secret"}):
                return dd(mnt / "big.bin")

        def fsmount() -> float:
            with mounted(config, source="ftp", debug=False) as m:
                (m.path / "big.bin").stat()
                return dd(m.path / "big.bin")

        direct()  # the server's file into its page cache
        config = (f'[accounts.ftp]\nurl = "ftp://alice@127.0.0.1:{server.port}/"\n'
                  'password = "secret"\nplaintext_auth = true\ntls = "off"\n')
        times = alternating(runs, {"direct": direct, "floor": lambda: floor(False),
                                   "floor-dio": lambda: floor(True), "ftp-floor": ftp_floor,
                                   "fsmount": fsmount})
        c.quit()
    shutil.rmtree(work)
    mib = size >> 20
    for what, t in times.items():
        print(f"{mib} MiB cold dd, warm server file: {what:<9} {spread(t)}", flush=True)
    print("(floor-dio: the floor with direct_io, as fsmount serves big files: the bound for any "
          "pyfuse3 filesystem reading 1 MiB requests, with no network at all; ftp-floor "
          "(tests/ftp_floor.py): one RETR received by a thread, served as it arrives, with "
          "direct_io: the bound for any pyfuse3 filesystem reading over FTP)", flush=True)
    for who, against, target in (("fsmount", "direct", ">= 0.60x"),
                                 ("fsmount", "floor", ">= 0.75x"),
                                 ("floor-dio", "direct", "(a bound)"),
                                 ("ftp-floor", "direct", "(a bound)"),
                                 ("fsmount", "ftp-floor", "")):
        per_round(f"{mib} MiB cold read: {who} speed vs {against}", times, who, against, target,
                  speed=True)


def _make_tree(root: Path, entries: int) -> int:
    """About ``entries`` empty files and folders: ``entries // 11`` folders of 10 files,
    under one top-level folder per hundred. Made with bare os calls (1M in under a minute);
    the number actually made is returned."""
    folders = max(1, entries // 11)
    made = 0
    flags = os.O_CREAT | os.O_WRONLY | os.O_EXCL
    for f in range(folders):
        top = root / f"t{f // 100:04d}"
        if f % 100 == 0:
            os.mkdir(top)
            made += 1
        d = f"{top}/d{f % 100:02d}"
        os.mkdir(d)
        for i in range(10):
            os.close(os.open(f"{d}/file-{i}.txt", flags, 0o644))
        made += 11
    return made


def _mlsd_walk(server) -> int:
    """What any FTP client walking the tree must do at least: one MLSD per folder, in turn,
    on one connection. The number of entries seen."""
    c = server.client()
    seen, todo = 0, [""]
    while todo:
        d = todo.pop()
        for name, facts in c.mlsd(d, facts=["type", "size", "modify"]):
            if facts.get("type") == "dir":
                todo.append(f"{d}/{name}" if d else name)
            if facts.get("type") in ("dir", "file"):
                seen += 1
    c.quit()
    return seen


def _rclone_lsf(port: int) -> int:
    secret = subprocess.run(["rclone", "obscure", "secret"], capture_output=True, text=True).stdout.strip()
    out = subprocess.run(["rclone", "lsf", "-R", ":ftp:", "--ftp-host", "127.0.0.1", "--ftp-port", str(port),
                          "--ftp-user", "alice", "--ftp-pass", secret, "--config", "/dev/null"],
                         capture_output=True, check=True)
    return out.stdout.count(b"\n")


def _find(where: Path) -> int:
    out = subprocess.run(["find", str(where)], capture_output=True, check=True)
    return out.stdout.count(b"\n") - 1  # not the top itself


def _time_wait() -> int:
    """Loopback TCP connections in TIME_WAIT (``/proc/net/tcp``'s state 06)."""
    with open("/proc/net/tcp") as f:
        return sum(1 for line in f if line.split()[3:4] == ["06"])


def _settled(limit: int = 500, timeout: float = 120) -> None:
    """Wait until the last walk's data connections have left TIME_WAIT: each walk leaves one
    per folder (5,000 here), and on this machine's loopback a walk that starts while thousands
    expire ran 2-3x slower (11 s then 27-33 s, whichever variant it was), which made a
    round's ratio depend on its place in the order, not on the client."""
    try:
        wait_for(lambda: _time_wait() < limit, timeout, "TIME_WAIT to drain", poll=1)
    except TimeoutError:
        print(f"(TIME_WAIT still {_time_wait()} after {timeout:g} s)", flush=True)


def _timed(fn: Callable[[], int], want: int, what: str) -> float:
    _settled()
    start = time.perf_counter()
    got = fn()
    took = time.perf_counter() - start
    if got != want:
        raise AssertionError(f"{what} saw {got} entries, not {want}")
    return took


def bench_ftp_walk(entries: int = 55_000, runs: int = 0) -> None:
    """``find`` over a big FTP tree: cold (a fresh mount) against a direct recursive MLSD walk
    and ``rclone lsf -R``, warm (within the listing TTL) against the floor over the server's
    own directory, and the mount's peak RSS after one and after two walks.

    The account's ``metadata_ttl`` is raised to an hour so that every warm round is within it
    (at the default 30 s the later rounds of a big tree would relist: a cold walk again).
    """
    from tests.servers.ftp import running_ftp

    runs = runs or (5 if entries <= 100_000 else 2)
    work = scratch_dir("bench-ftp-walk-")
    root = work / "root"
    root.mkdir()
    start = time.perf_counter()
    made = _make_tree(root, entries)
    print(f"tree of {made} entries ({made // 11} folders) made in {time.perf_counter() - start:.1f} s",
          flush=True)
    times: dict[str, list[float]] = {"mlsd": [], "rclone": [], "cold": [], "warm": [], "floor": []}
    peaks: list[tuple[int, int, int]] = []  # VmHWM after the first, the second, the last walk
    try:
        with running_ftp(root=root) as server:
            config = (f'[accounts.ftp]\nurl = "ftp://alice@127.0.0.1:{server.port}/"\n'
                      'password = "secret"\nplaintext_auth = true\ntls = "off"\nmetadata_ttl = 3600\n')
            _mlsd_walk(server)  # the server's directories into its dentry cache, for all alike
            for i in range(min(runs, 3)):
                order = ["mlsd", "rclone", "cold"]
                for what in order[i % 3:] + order[:i % 3]:
                    if what == "mlsd":
                        times["mlsd"].append(_timed(lambda: _mlsd_walk(server), made, "MLSD walk"))
                    elif what == "rclone":
                        times["rclone"].append(_timed(lambda: _rclone_lsf(server.port), made, "rclone lsf"))
                    else:
                        with mounted(config, source="ftp", debug=False) as m:
                            times["cold"].append(_timed(lambda: _find(m.path), made, "cold find"))
                            first = rss_peak(m.proc.pid)
                            if i == 0:
                                _find(m.path)
                                peaks.append((first, rss_peak(m.proc.pid), 0))
            with mounted(config, source="ftp", debug=False) as m, floor_mount(root) as fl:
                _find(m.path)
                _find(fl)
                for i in range(runs):
                    pair = [("warm", m.path), ("floor", fl)]
                    for what, where in pair if i % 2 == 0 else pair[::-1]:
                        times[what].append(_timed(lambda: _find(where), made, f"{what} find"))
                peaks.append((0, 0, rss_peak(m.proc.pid)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    label = f"find over {made} FTP entries"
    for what, t in times.items():
        print(f"{label}: {what:<6} {spread(t)}", flush=True)
    for ours, theirs, target in (("cold", "mlsd", "<= 2.00x"), ("cold", "rclone", "(rclone)"),
                                 ("warm", "floor", "<= 1.20x")):
        per_round(f"{label}: {ours} fsmount vs {theirs}", times, ours, theirs, target)
    first, second = peaks[0][:2]
    last = peaks[-1][2]
    print(f"{label}: fsmount peak RSS (VmHWM) after one walk {first / 2**20:.0f} MiB, after two "
          f"{second / 2**20:.0f} MiB; a mount after {runs + 1} warm walks {last / 2**20:.0f} MiB "
          f"(target < 200 MiB at 1,000,000 entries)", flush=True)


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

            direct = clock(direct_loop, 3)
            local = scratch_dir("bench-nntp-")
            for n in range(1, count + 1):  # the same articles as local files, for the floor
                lines = c.article(str(n))[1].lines
                (local / f"{n:05d}.eml").write_bytes(b"".join(line + b"\r\n" for line in lines))
        for readonly in (False, True):  # posting needs FLUSH answered: one request per close
            config = (f'[accounts.news]\nurl = "nntp://alice@127.0.0.1:{inn.port}"\n'
                      f'password = "secret1"\nplaintext_auth = true\ntls = "off"\n'
                      f'max_articles = {count}\ngroups = ["local.test"]\n'
                      f'readonly = {str(readonly).lower()}\n')
            with mounted(config, debug=False) as m:
                grep_cold_warm(f"nntp {count} articles{', read-only account' if readonly else ''}",
                               m.path / "news" / "local.test", local, direct, "no-such-needle")
        shutil.rmtree(local)


# -- POP3 ---------------------------------------------------------------------------------


def bench_pop3(count: int = 2000) -> None:
    import poplib

    from tests.servers.dovecot import dovecot

    msgs = [(f"From: Carol <carol@example.org>\r\nTo: alice@example.org\r\nSubject: Message {i}\r\n"
             f"Date: Mon, 01 Jan 2024 10:00:00 +0000\r\nMessage-ID: <m{i}@example.org>\r\n\r\n"
             + f"Body line {i} of some mail text, long enough to look like a real message.\r\n" * 40).encode()
            for i in range(count)]
    with dovecot() as srv:
        srv.write_maildir("alice", "INBOX", msgs)
        c = poplib.POP3(srv.host, srv.pop3_port, timeout=30)
        c.user("alice")
        c.pass_("secret1")
        n = c.stat()[0]
        direct = clock(lambda: [c.retr(i) for i in range(1, n + 1)], 3)
        local = scratch_dir("bench-pop3-")
        for i in range(1, n + 1):
            (local / f"{i:05d}.eml").write_bytes(b"\r\n".join(c.retr(i)[1]) + b"\r\n")
        c.quit()
        config = (f'[accounts.mail]\nurl = "pop3://alice@127.0.0.1:{srv.pop3_port}"\n'
                  'password = "secret1"\nplaintext_auth = true\ntls = "off"\n')
        with mounted(config, debug=False) as m:
            grep_cold_warm(f"pop3 {n} messages", m.path / "mail", local, direct, "no-such-needle")
        shutil.rmtree(local)


def bench_imap() -> None:
    from tests.test_imap_mounted import bench_imap as run, bench_imap_memory

    run(10_000)
    bench_imap_memory(100_000)


SECTIONS = {"ftp-read": bench_ftp_read, "ftp-walk": bench_ftp_walk, "ftp": bench_ftp, "imap": bench_imap, "pop3": bench_pop3, "nntp": bench_nntp}


def main(argv: list[str]) -> int:
    """Sections in the order given; ``--key value`` after a section are its keyword
    arguments (integers), e.g. ``ftp-walk --entries 1000000``."""
    chosen: list[tuple[str, dict[str, int]]] = []
    args = iter(argv)
    for arg in args:
        if arg.startswith("--") and chosen:
            chosen[-1][1][arg[2:].replace("-", "_")] = int(next(args))
        else:
            chosen.append((arg, {}))
    for name, kwargs in chosen or [(name, {}) for name in SECTIONS]:
        print(f"== {name}", flush=True)
        SECTIONS[name](**kwargs)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
