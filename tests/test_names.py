"""Names: hostile remote names become safe local ones; message names are stable and safe."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from fsmount.backends.mailnames import key_of, message_name
from fsmount.vfs.names import local_name, may_be_escaped, to_fs


@pytest.mark.parametrize("remote", ["a/b", "line\r\nbreak", "..", ".", "nul\x00x", "x" * 300, "del\x7f"])
def test_hostile_names_become_safe(remote: str) -> None:
    local = local_name(remote)
    assert "/" not in local and "\x00" not in local and local not in (".", "..")
    assert all(c >= " " and c != "\x7f" for c in local)
    assert len(local.encode()) <= 255
    assert may_be_escaped(local)


def test_ordinary_names_are_kept() -> None:
    for name in ["report.pdf", "grüße €.txt", "日本語", ".hidden", "a b"]:
        assert local_name(name) == name and not may_be_escaped(name)


def test_long_names_keep_extension_and_stay_unique() -> None:
    a, b = local_name("a" * 300 + ".txt"), local_name("a" * 299 + "b.txt")
    assert a.endswith(".txt") and a != b


def test_message_name_readable_stable_and_keyed() -> None:
    date = datetime(2024, 5, 1, 13, 30, tzinfo=timezone.utc)
    name = message_name("42", "=?utf-8?q?Gr=C3=BC=C3=9Fe_/_hello?=", date)
    assert name == "2024-05-01 1330 Grüße hello [42].eml"
    assert key_of(name) == "42"
    assert message_name("42", "=?utf-8?q?Gr=C3=BC=C3=9Fe_/_hello?=", date) == name


def test_message_name_hostile_subject() -> None:
    name = message_name("7", "../../etc/passwd\r\n[evil].eml" + "x" * 500, None)
    assert "/" not in name and "\r" not in name and len(name.encode()) < 255
    assert key_of(name) == "7"


def test_a_long_name_with_an_undecodable_extension_is_shortened() -> None:
    """A server's name that is not UTF-8 (kept as surrogates) and too long: shortened with its
    hash, never an error that would fail the whole directory listing."""
    remote = "a" * 300 + ".\udcff"
    local = local_name(remote)
    assert local.endswith(".\udcff") and len(to_fs(local)) <= 255
    assert local != local_name("a" * 301 + ".\udcff")
