"""The journal of temporary upload names: only names this machine's dead processes made are
offered for removal."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fsmount.backends.uploadlog import _HOST, UploadLog


def dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def test_names_of_dead_processes_are_left_over_and_others_are_not(tmp_path: Path) -> None:
    first = UploadLog(tmp_path, "ftp", "h", 21, "u")
    journals = first.directory
    (journals / f"{_HOST}-{dead_pid()}.log").write_text("+ /a.part\n+ /b.part\n- /a.part\n")
    (journals / f"{_HOST}-{os.getppid()}.log").write_text("+ /alive.part\n")  # a live process
    (journals / f"elsewhere-{dead_pid()}.log").write_text("+ /other-host.part\n")
    first.close()
    log = UploadLog(tmp_path, "ftp", "h", 21, "u")
    assert log.leftovers() == ["/b.part"]
    log.started("/mine.part")
    assert log.leftovers() == ["/b.part"]  # an upload under way is never offered
    log.ended("/mine.part", removed=False)  # its DELE failed: offered for a retry
    assert log.leftovers() == ["/b.part", "/mine.part"]
    for name in log.leftovers():
        log.ended(name, removed=True)
    log.forget_finished_journals()
    assert log.leftovers() == [] and not log.has_leftovers
    log.close()
    assert sorted(p.name for p in journals.iterdir()) == sorted(
        [f"{_HOST}-{os.getppid()}.log", *(p.name for p in journals.glob("elsewhere-*"))])
    assert UploadLog(tmp_path, "ftp", "other", 21, "u").leftovers() == []  # another server


def test_a_killed_process_journal_holds_its_upload(tmp_path: Path) -> None:
    code = ("import sys; from pathlib import Path; from fsmount.backends.uploadlog import UploadLog;"
            "UploadLog(Path(sys.argv[1]), 's').started('/x.part')")
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True,
                   env={**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert UploadLog(tmp_path, "s").leftovers() == ["/x.part"]
