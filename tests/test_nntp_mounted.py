"""NNTP through the real mount, driven by real tools; every result checked on the server."""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsmount.backends import nntp
from tests.mounting import check_log, is_mounted, mounted, private_env, run, wait_for
from tests.faultproxy import Relay, relaying
from tests.servers.inn import HOST, InnServer, inn  # noqa: F401  (fixture)

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse"), reason="no FUSE")


def config(server: InnServer, *, user: str | None = "alice", **options: object) -> str:
    who = f"{user}@" if user else ""
    lines = [
        "[accounts.news]",
        f'url = "nntps://{who}127.0.0.1:{server.tls_port}"',
        f'ca_file = "{server.ca}"',
    ]
    if user:
        lines.append('password = "secret1"')
    for key, value in options.items():
        lines.append(f"{key} = {value!r}".replace("'", '"').replace("True", "true")
                     .replace("False", "false"))
    return "\n".join(lines) + "\n"


def through(relay: Relay) -> str:
    """A mount of alice's news through ``relay``, in clear so that it can read the commands."""
    return (f'[accounts.news]\nurl = "nntp://alice@127.0.0.1:{relay.port}"\npassword = "secret1"\n'
            'tls = "off"\nplaintext_auth = true\n')


def article_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.suffix == ".eml")


def test_ls_cat_grep(inn: InnServer) -> None:
    ids = [inn.post("local.test", f"Note {i}", f"Line {i}\n.dotted {i}\n") for i in range(3)]
    needle = inn.post("comp.lang.python", "Zen", "Beautiful is better than ugly.\n")
    with mounted(config(inn)) as m:
        news = m.path / "news"
        assert sorted(os.listdir(news)) == ["comp.lang", "comp.lang.c", "comp.lang.python",
                                            "de.comp.lang.python.misc", "local.moderated",
                                            "local.test"]
        files = article_files(news / "local.test")
        assert [f.name.split(" ", 2)[2] for f in files] == [f"Note {i} [{i + 1}].eml" for i in range(3)]
        for f, mid in zip(files, ids):
            assert run("cat", f).stdout == inn.article(mid)
            assert f.stat().st_size == len(inn.article(mid))  # corrected after reading
        found = run("grep", "-rl", "Beautiful is better", news).stdout.decode().splitlines()
        assert [Path(p).parent.name for p in found] == ["comp.lang.python"]
        assert Path(found[0]).read_bytes() == inn.article(needle)
        again = run("grep", "-rlF", ".dotted 1", news).stdout.decode().splitlines()
        assert [Path(p).name for p in again] == [files[1].name]


def test_grep_fetches_each_article_once_in_pipelined_batches(inn: InnServer) -> None:
    ids = inn.post_many("local.test", 150, prefix="Bulk")
    with relaying(HOST, inn.port) as relay, mounted(through(relay)) as m:
        group = m.path / "news" / "local.test"
        found = run("grep", "-rl", "Body of bulk 123[.]", group).stdout.decode().splitlines()
        assert [Path(p).name.split(" ", 2)[2] for p in found] == ["Bulk 123 [123].eml"]
    asked = relay.commands("ARTICLE")
    assert sorted(asked) == sorted(f"ARTICLE {mid}" for mid in ids)  # each once, by Message-ID
    pipelined = [n for n in relay.batches("ARTICLE") if n > 1]  # sent before the first answer
    assert len(pipelined) >= 150 // nntp.ARTICLE_BATCH, relay.batches("ARTICLE")


def test_hierarchy_with_find(inn: InnServer, tmp_path: Path) -> None:
    inn.post("comp.lang", "Parent group article")
    inn.post("comp.lang.python", "Child group article")
    src = tmp_path / "new.eml"
    src.write_bytes(b"From: alice@example.org\nSubject: Into the hierarchy\n\nHi.\n")
    with mounted(config(inn, hierarchy=True),
                 expect_warnings=["never stored", "commit failed"]) as m:
        news = m.path / "news"
        assert sorted(os.listdir(news)) == ["comp", "de", "local"]
        found = run("find", news / "comp", "-name", "*.eml").stdout.decode().splitlines()
        rel = sorted(str(Path(p).relative_to(news).parent) for p in found)
        assert rel == ["comp/lang", "comp/lang/python"]
        assert (news / "comp" / "lang" / "python").is_dir()
        run("cp", src, news / "comp" / "lang" / "python")
        assert inn.group_high("comp.lang.python") == 2
        assert b"Newsgroups: comp.lang.python\r\n" in inn.article(2, "comp.lang.python")
        done = run("cp", src, news / "comp", check=False)  # only a parent, not a group
        assert done.returncode != 0 and b"Read-only file system" in done.stderr


def test_cp_posts_the_article(inn: InnServer, tmp_path: Path) -> None:
    src = tmp_path / "hello.eml"
    src.write_bytes(b"From: Alice <alice@example.org>\nSubject: Sent with cp\n\n"
                    b"Posted through the mount.\n.leading dot\n")
    with mounted(config(inn)) as m:
        group = m.path / "news" / "local.test"
        assert article_files(group) == []
        run("cp", src, group)
        assert inn.group_high("local.test") == 1
        stored = inn.article(1, "local.test")
        assert b"\r\nNewsgroups: local.test\r\n" in stored
        assert stored.endswith(b"\r\n\r\nPosted through the mount.\r\n.leading dot\r\n")
        [posted] = article_files(group)
        assert "Sent with cp [1].eml" in posted.name
        assert posted.read_bytes() == stored
        assert "hello.eml" not in os.listdir(group)  # still resolvable for a moment (aliases)
        # Python file I/O: a new file written and closed is posted too
        with open(group / "second.eml", "wb") as f:
            f.write(b"From: alice@example.org\nSubject: Written by Python\n\nSecond.\n")
        assert inn.group_high("local.test") == 2
        assert len(article_files(group)) == 2


def test_refused_posts_fail_at_close(inn: InnServer, tmp_path: Path) -> None:
    src = tmp_path / "a.eml"
    src.write_bytes(b"From: anon@example.org\nSubject: Not allowed\n\nbody\n")
    wrong = tmp_path / "b.eml"
    wrong.write_bytes(b"From: a@example.org\nNewsgroups: comp.lang.c\nSubject: Wrong group\n\nx\n")
    with mounted(config(inn, user=None),
                 expect_warnings=["refused", "never stored", "commit failed"]) as m:
        group = m.path / "news" / "local.test"
        done = run("cp", src, group, check=False)
        assert done.returncode != 0 and b"Permission denied" in done.stderr  # INN: 480
        done = run("cp", wrong, group, check=False)
        assert done.returncode != 0 and b"Invalid argument" in done.stderr
    assert inn.group_high("local.test") == 0 and inn.group_high("comp.lang.c") == 0


def test_articles_are_read_only(inn: InnServer, tmp_path: Path) -> None:
    inn.post("local.test", "Keep me")
    with mounted(config(inn)) as m:
        news = m.path / "news"
        [art] = article_files(news / "local.test")
        for cmd in (["rm", art], ["mv", art, news / "local.test" / "renamed.eml"],
                    ["mv", art, news / "comp.lang.c"]):
            done = run(*cmd, check=False)
            assert done.returncode != 0 and b"Operation not permitted" in done.stderr, cmd
        with pytest.raises(OSError) as e:
            with open(art, "ab") as f:
                f.write(b"more")
        assert e.value.errno in (errno.EPERM, errno.EACCES, errno.EROFS)
        with pytest.raises(OSError) as e:
            (news / "local.new").mkdir()
        assert e.value.errno in (errno.EROFS, errno.EPERM)
        assert article_files(news / "local.test") == [art]
    assert inn.group_high("local.test") == 1


def test_new_articles_appear(inn: InnServer) -> None:
    inn.post("local.test", "Old news")
    with mounted(config(inn, metadata_ttl=0.2, poll_interval=0.2)) as m:
        group = m.path / "news" / "local.test"
        assert len(article_files(group)) == 1
        inn.post("local.test", "Fresh news")
        wait_for(lambda: len(article_files(group)) == 2, 10, "the new article")
        assert any(f.name.endswith("Fresh news [2].eml") for f in article_files(group))
        inn.new_group("local.later")
        wait_for(lambda: (m.path / "news" / "local.later").is_dir(), 10, "the new group")


# -- benchmark (FSMOUNT_BENCH=1) -------------------------------------------------------------

FLOOR = Path(__file__).resolve().parents[2] / "shared" / "bench" / "fuse_floor.py"


@contextlib.contextmanager
def quiet_mount(config_toml: str, home: Path) -> Iterator[Path]:
    """Like ``mounted`` but without --debug: per-operation logging is not what users run."""
    mnt = home / "mnt"
    mnt.mkdir()
    cfg = home / "config.toml"
    cfg.write_text(config_toml)
    cfg.chmod(0o600)
    log = home / "fsmount.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "fsmount", "-f", "-c", str(cfg), str(mnt)],
                                stdout=out, stderr=subprocess.STDOUT, env=private_env(home))
    try:
        wait_for(lambda: is_mounted(mnt) or proc.poll() is not None, 30, "the mount")
        assert is_mounted(mnt), log.read_text()
        yield mnt
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        proc.wait(timeout=30)
        check_log(log.read_text(errors="replace"))


@contextlib.contextmanager
def floor_mount(source: Path, mnt: Path) -> Iterator[Path]:
    mnt.mkdir()
    proc = subprocess.Popen([sys.executable, str(FLOOR), str(source), str(mnt)])
    try:
        wait_for(lambda: is_mounted(mnt) or proc.poll() is not None, 30, "the floor mount")
        yield mnt
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        proc.wait(timeout=30)


def timed(*cmd: object) -> float:
    start = time.perf_counter()
    done = subprocess.run([str(c) for c in cmd], capture_output=True)
    assert done.returncode in (0, 1), done.stderr  # grep: 1 = no match
    return time.perf_counter() - start


@pytest.mark.skipif(not os.environ.get("FSMOUNT_BENCH"), reason="benchmark: set FSMOUNT_BENCH=1")
def test_benchmark_grep_2000_articles(inn: InnServer) -> None:
    """Cold grep -rl ≥ 50 % of a direct ARTICLE loop's rate; warm within 1.3× of fuse_floor.

    The home (with the content cache) is in /var/tmp: creating a file under /tmp costs ~1 ms
    on the test machine (measured), 50× more than elsewhere on the same disk.
    """
    count = 2000
    inn.post_many("local.test", count)
    with inn.client(tls=True) as c:
        nntp._acknowledge_quickly(c)  # as fast a client as fsmount's own
        c.group("local.test")
        start = time.perf_counter()
        for number in range(1, count + 1):
            c.article(str(number))
        direct = time.perf_counter() - start
    home = Path(tempfile.mkdtemp(prefix="bench-nntp-", dir="/var/tmp"))
    try:
        with quiet_mount(config(inn, max_articles=count), home) as mnt:
            group = mnt / "news" / "local.test"
            assert len(os.listdir(group)) == count
            cold = timed("grep", "-rl", "no such text", group)
            warm = timed("grep", "-rl", "no such text", group)
            local = home / "local"
            shutil.copytree(group, local)
        with floor_mount(local, home / "floor") as floor_mnt:
            timed("grep", "-rl", "no such text", floor_mnt)
            floor = timed("grep", "-rl", "no such text", floor_mnt)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    report = (f"{count} articles: direct ARTICLE loop {direct:.2f} s, cold grep {cold:.2f} s "
              f"({direct / cold:.0%} of direct), warm {warm:.2f} s, floor {floor:.2f} s "
              f"({warm / floor:.2f}× floor)")
    print(report)
    assert direct / cold >= 0.5, report
    assert warm <= 1.3 * floor, report


def test_an_article_cut_short_is_eio_never_a_short_file(inn: InnServer) -> None:
    """A server cutting ARTICLE answers short (but ending them in good form): ``cat`` fails
    with EIO and shows nothing short; served whole again, the article reads whole."""
    from tests.test_nntp_backend import ShortArticleProxy

    mid = inn.post("local.test", "Long", "".join(f"line {i:04d} of the body\n" for i in range(300)))
    proxy = ShortArticleProxy(inn)
    table = (f'[accounts.news]\nurl = "nntp://alice@127.0.0.1:{proxy.port}"\n'
             'password = "secret1"\ntls = "off"\nplaintext_auth = true\n')
    try:
        with mounted(table, expect_warnings=[r"bytes where it announced"]) as m:
            [f] = article_files(m.path / "news" / "local.test")
            done = run("cat", f, check=False)
            assert done.returncode != 0 and b"Input/output error" in done.stderr
            assert len(done.stdout) < len(inn.article(mid))
            with pytest.raises(OSError) as failed, open(f, "rb") as opened:
                opened.read()
            assert failed.value.errno == errno.EIO
            assert proxy.cut >= 2
            assert m.log_text().count(" WARNING ") == proxy.cut  # one per article cut
            proxy.keep = None
            assert run("cat", f).stdout == inn.article(mid)
    finally:
        proxy.close()
