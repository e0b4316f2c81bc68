"""Keeping the garbage collector's full passes short while a batch's calls are in flight.

A process that runs the LLM layer has a large heap before its first call (Dagster, pydantic,
DuckDB and their modules: about 300,000 tracked objects in a bare benchmark, more in a run
worker). A batch allocates enough long-lived objects (records, responses, in-flight requests)
to set off a full collection every batch or so, and a full pass walks the whole heap: 150 to
200 ms with the event loop stopped, every in-flight answer waiting. Freezing the heap when the
batch starts leaves a full pass only the objects made since; they are unfrozen when it ends, so
nothing older escapes collection for longer than the batch.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_holders = 0


@contextmanager
def older_objects_frozen() -> Iterator[None]:
    """Objects that exist when the block starts are left out of collections until it ends.

    Blocks may overlap (batches in several threads): the heap stays frozen until the last ends.
    """
    global _holders
    with _lock:
        if _holders == 0:
            gc.freeze()
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                gc.unfreeze()
