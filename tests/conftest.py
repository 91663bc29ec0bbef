"""What the whole suite shares: where the Python processes it starts keep their compiled
modules."""
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
