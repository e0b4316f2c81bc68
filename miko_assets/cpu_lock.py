"""One embedded-model computation per core on this machine, across processes.

Used around llama.cpp generations (the embedded LLM) and the image tagger's forward pass. Each
computation runs on one thread and holds one *core slot*: a lock file per core, shared by every
process of this user.

Threads that spin on shared cores are what made embedded work slow: two run workers generating
at once with two threads each ran at 3.3 tokens/s each against 23 for one alone, and one
generation on two threads fell from 0.46 to 1.6 s a call whenever any other process took a core.
One thread per computation and one computation per core keep every thread on a core of its own,
so parallel partition runs take turns slot by slot instead of stalling each other.

`MIKO_EMBEDDED_LOCK` names the lock files' stem (default: one per user in the temporary folder);
processes that name different stems do not wait for each other.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from miko_assets.file_lock import file_lock

ENV_LOCK_PATH = "MIKO_EMBEDDED_LOCK"
# More one-thread computations than this gain little on a small model and cost memory.
MAX_DEFAULT_SLOTS = 4


def lock_path(env: Mapping[str, str] = os.environ) -> Path:
    """The stem of the lock files shared by every process of this user on this machine."""
    chosen = env.get(ENV_LOCK_PATH)
    return Path(chosen) if chosen else Path(tempfile.gettempdir()) / f"miko-embedded-model-{os.getuid()}.lock"


def core_count() -> int:
    """The cores this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


def default_slots() -> int:
    """How many one-thread embedded computations a process runs at once by default."""
    return min(core_count(), MAX_DEFAULT_SLOTS)


@contextmanager
def core_slot(index: int = 0, path: Path | None = None) -> Iterator[float]:
    """Hold core slot `index` (modulo the cores) machine-wide for one computation on one
    thread; yields the seconds spent waiting for it. Processes waiting for the same slot take
    turns."""
    stem = path or lock_path()
    with file_lock(stem.with_name(f"{stem.name}.{index % core_count()}")) as waited:
        yield waited
