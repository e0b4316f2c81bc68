"""Warehouse files opened by attaching them to one in-memory DuckDB per process.

`duckdb.connect(path)` builds a whole database instance (thread pool, catalog, buffer pool) for
every open and holds the GIL for most of it: about 15-30 ms an open. An LLM batch opens the
file several times while its calls are in flight (cache lookups, the writer's flushes), and each
open stalled the event loop that runs them. Attaching the file to an instance the process keeps
takes a few ms (`benchmarks/llm_throughput.py` prints it: about 5 ms with the warehouse's
tables). The file is attached while any connection of this process uses it and detached
(checkpointed, its lock released for other processes) when the last one closes, so the file is
held no longer than before.

A file this process creates is written in DuckDB 1.5's storage format rather than DuckDB's
default (0.10's, kept for old readers): with the warehouse's 30 tables, attaching it takes
about a third of the time and a checkpoint about half, which every flush and lookup pays.
Files made before keep their format.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from pathlib import Path

import duckdb

from miko_assets.warehouse.location import offline_config, quoted_literal

# The storage format of new warehouse files (DuckDB 1.5 or later reads them).
STORAGE_VERSION = "v1.5.0"


class AttachedFiles:
    """One process's in-memory DuckDB and the warehouse files attached to it, counted by user."""

    def __init__(self) -> None:
        # Spills of big queries go to a folder of this process, not `.tmp` in the working folder.
        spill = Path(tempfile.gettempdir()) / f"miko-duckdb-{os.getpid()}"
        self._host = duckdb.connect(
            config={
                **offline_config(),
                "temp_directory": str(spill),
                "storage_compatibility_version": STORAGE_VERSION,
            }
        )
        self._users: dict[str, int] = {}
        self._lock = threading.Lock()

    def open(self, path: Path) -> duckdb.DuckDBPyConnection:
        """A connection whose default database is the file at `path`, attached if no connection
        of this process has it open; raises DuckDB's IOException while another process holds it."""
        alias = alias_for(path)
        with self._lock:
            if alias not in self._users:
                self._host.execute(f"ATTACH '{quoted_literal(str(path))}' AS {alias}")
                self._users[alias] = 0
            self._users[alias] += 1
        try:
            con = self._host.cursor()
            con.execute(f"USE {alias}")
            return con
        except BaseException:
            self._release(alias)
            raise

    def close(self, con: duckdb.DuckDBPyConnection, path: Path) -> None:
        """Close `con`; the file is detached when it was the last connection to it."""
        try:
            con.close()
        finally:
            self._release(alias_for(path))

    def _release(self, alias: str) -> None:
        with self._lock:
            self._users[alias] -= 1
            if self._users[alias] == 0:
                del self._users[alias]
                self._host.execute(f"DETACH {alias}")


def alias_for(path: Path) -> str:
    """The name a file is attached under: one per absolute path."""
    return "warehouse_" + hashlib.sha1(str(path.absolute()).encode()).hexdigest()[:16]


_PROCESS_FILES: dict[int, AttachedFiles] = {}
_PROCESS_LOCK = threading.Lock()


def attached_files() -> AttachedFiles:
    """This process's `AttachedFiles` (made once; a forked child makes its own)."""
    with _PROCESS_LOCK:
        files = _PROCESS_FILES.get(os.getpid())
        if files is None:
            files = _PROCESS_FILES[os.getpid()] = AttachedFiles()
        return files
