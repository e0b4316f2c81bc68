"""One embedded-model computation at a time on this machine, across processes.

Used around llama.cpp generations (the embedded LLM) and the image tagger's forward pass.

llama.cpp uses every core it is given. Two run workers generating at once (a backfill runs
one process per partition) each spin their threads on the same cores: on 2 cores two
generations ran at 3.3 tokens/s each against 23 for one alone, so a backfill of N partitions
took about 3 times longer than running them one after another. A file lock held for each
generation makes the processes take turns, which costs nothing in throughput (the cores were
the bottleneck) and keeps every step's calls moving.

`MIKO_EMBEDDED_LOCK` names the lock file (default: one per user in the temporary folder);
processes that name different files do not wait for each other.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from miko_assets.file_lock import file_lock

ENV_LOCK_PATH = "MIKO_EMBEDDED_LOCK"


def lock_path(env: Mapping[str, str] = os.environ) -> Path:
    """The lock file shared by every process of this user on this machine."""
    chosen = env.get(ENV_LOCK_PATH)
    return Path(chosen) if chosen else Path(tempfile.gettempdir()) / f"miko-embedded-model-{os.getuid()}.lock"


@contextmanager
def exclusive_cores(path: Path | None = None) -> Iterator[float]:
    """Hold the machine-wide lock for one computation; yields the seconds spent waiting for it."""
    with file_lock(path or lock_path()) as waited:
        yield waited
