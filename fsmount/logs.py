"""Where the log goes: the terminal until fsmount detaches, then the state directory's file."""
from __future__ import annotations

import logging
import sys
from pathlib import Path


class _GoneRequests(logging.Filter):
    """pyfuse3 logs an ERROR when the kernel no longer waits for a reply (ENOENT: the caller
    was interrupted, or the mount is going away). Nothing is lost, so it is only INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        gone = "failed with No such file or directory" in record.getMessage()
        if record.levelno == logging.ERROR and gone:
            record.levelno, record.levelname = logging.INFO, "INFO"
            return logging.getLogger().isEnabledFor(logging.INFO)
        return True


def setup_logging(debug: bool, log_file: Path | None) -> None:
    handler: logging.Handler
    if log_file is None:
        handler = logging.StreamHandler(sys.stderr)
    else:
        log_file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.getLogger("pyfuse3").addFilter(_GoneRequests())
