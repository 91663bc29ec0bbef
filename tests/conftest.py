"""What the whole suite shares: which tests must not run at the same time as each other."""
from __future__ import annotations

import pytest


def _uses_inn(item: pytest.Item) -> bool:
    node = item.nodeid
    return ("nntp" in node or "[inn-" in node or "_inn" in node or "newsgroups" in node
            or bool({"inn", "inn_without_tls", "inn_srv"} & set(getattr(item, "fixturenames", ()))))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """With ``-n N --dist loadgroup``, INN's tests run one after the other in one test
    process: several INN servers at once slowed each other's readers past the tests' timeouts
    (seen in the Debian 13 chroot: 4 of 60 INN tests timed out with four processes)."""
    for item in items:
        if _uses_inn(item):
            item.add_marker(pytest.mark.xdist_group("inn"))
