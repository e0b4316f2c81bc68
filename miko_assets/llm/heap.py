"""The garbage collector's settings while a batch's calls are in flight.

A process that runs the LLM layer has a large heap before its first call (Dagster, pydantic,
DuckDB and their modules: about 263,000 tracked objects in `benchmarks/llm_throughput.py`, more
in a run worker). A batch allocates enough long-lived objects (records, responses, in-flight
requests) to set off a full collection about once a batch, and a full pass walks the whole heap
with the event loop stopped and every in-flight answer waiting. So while a batch runs:
- the heap that existed when it started is frozen, and a full pass walks only the objects made
  since; they are unfrozen when it ends, so nothing older escapes collection for longer;
- the youngest generation is collected every 20,000 allocations instead of 700. Most of what a
  batch keeps lives until the batch ends (its responses) or until the next flush (its
  records), so frequent young passes mostly move live objects along.
The benchmark prints the collector's time per run: at concurrency 256, 223 to 293 ms a batch
of 2,000 calls before these settings, 5 to 15 ms with them."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

# Allocations (net of frees) of tracked objects between two collections of the youngest
# generation while a batch runs (Python's default: 700).
BATCH_YOUNG_THRESHOLD = 20_000

_lock = threading.Lock()
_holders = 0
_saved_threshold: tuple[int, int, int] | None = None


@contextmanager
def collector_settings_for_a_batch() -> Iterator[None]:
    """Freeze the current heap and collect young objects less often until the block ends.

    Blocks may overlap (batches in several threads): the settings hold until the last ends.
    """
    global _holders, _saved_threshold
    with _lock:
        if _holders == 0:
            gc.freeze()
            _saved_threshold = gc.get_threshold()
            gc.set_threshold(BATCH_YOUNG_THRESHOLD, *_saved_threshold[1:])
        _holders += 1
    try:
        yield
    finally:
        with _lock:
            _holders -= 1
            if _holders == 0:
                assert _saved_threshold is not None
                gc.set_threshold(*_saved_threshold)
                gc.unfreeze()
