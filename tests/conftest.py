"""What the whole suite shares: which tests must not run at the same time as each other,
and where the Python processes it starts keep their compiled modules."""
from __future__ import annotations

import os

import pytest

#: fsmount and the test servers run as new Python processes, hundreds of times a run. With
#: PYTHONDONTWRITEBYTECODE (set on these machines) each compiled every module of the tree it
#: imported anew, ~60 ms a start; they keep their bytecode here instead (outside the tree,
#: one copy per source path, so worktrees do not share it; Python checks each against its
#: source's mtime and size).
PYCACHE = f"/var/tmp/fsmount-pycache-{os.getuid()}"


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTHONDONTWRITEBYTECODE") and "PYTHONPYCACHEPREFIX" not in os.environ:
        del os.environ["PYTHONDONTWRITEBYTECODE"]
        os.environ["PYTHONPYCACHEPREFIX"] = PYCACHE


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
