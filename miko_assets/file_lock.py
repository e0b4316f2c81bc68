"""An exclusive lock on a file, held across processes (a blocking `flock`)."""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(target: Path) -> Iterator[float]:
    """Hold an exclusive lock on `target` (created if missing) across processes; yields the
    seconds spent waiting for it.

    The wait is a blocking `flock`, so the kernel wakes a waiting process as soon as the
    holder releases, and processes alternate instead of one re-taking the lock at once.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        started = time.monotonic()
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield time.monotonic() - started
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
