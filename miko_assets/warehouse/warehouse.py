"""The warehouse: a DuckDB file or a DuckLake, behind one class: short connections, lock and
conflict retry, schema migration, atomic partition replace."""

from __future__ import annotations

import importlib.metadata
import itertools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb

from miko_assets.clock import utc_now
from miko_assets.warehouse.attached_files import AttachedFiles, attached_files
from miko_assets.warehouse.location import (
    CATALOG_KINDS,
    DATA_PATH_SETTING,
    WAREHOUSE_SETTING,
    WarehouseConfigError,
    WarehouseLocation,
    attach_statement,
    load_extension,
    offline_config,
    parse_location,
    redact,
)
from miko_assets.warehouse.schema import SCHEMA, TABLES, Table

if TYPE_CHECKING:  # frames come from DuckDB's `.df()`; reading one row needs no pandas
    import pandas as pd

log = logging.getLogger(__name__)
T = TypeVar("T")

_LOCK_MESSAGES = ("could not set lock", "conflicting lock", "database is locked")
# Per-instance DuckDB settings, applied on every open:
# - DuckDB answers `WHERE col = ?` from an ART index when fewer than max(index_scan_max_count,
#   0.1% of the table) rows match (default 2,048) and then fetches them row by row, so reading a
#   1,000-row partition took ~15x longer than the zone-map scan. Lookups by id match a few rows.
# - The checkpoint on close may vacuum: with indexes on a table it cannot drop deleted rows, only
#   repack row groups, and repacking inside a partition write made every second or third write
#   of intentions take 1-4 s instead of 0.6 s at the paper's scale. Without it, each write
#   leaves its own small row group.
_SETTINGS = ("SET index_scan_max_count = 256", "SET max_vacuum_tasks = 0")


# Raised when a change to schema.py cannot be applied by adding columns: a warehouse stamped
# with a newer version is refused, an older one is migrated and stamped anew.
SCHEMA_VERSION = 1
_INFO_TABLE = "warehouse_info"
_LAKE = "lake"


class WarehouseLockTimeout(RuntimeError):
    """The file stayed locked by another process for longer than the configured timeout."""


class WarehouseConflictTimeout(RuntimeError):
    """A DuckLake transaction kept conflicting with other writers for longer than the timeout."""


class Warehouse:
    """A DuckDB file or a DuckLake. Every operation opens a connection, does its work and closes it.

    File: only one process can hold it open for writing, so connections are kept short and an
    open that fails on the file lock is retried with exponential backoff and jitter. A file is
    attached to one in-memory DuckDB of the process while it is open (`attached_files`).
    DuckLake (catalog in Postgres or SQLite, Parquet data in a shared folder): many processes on
    many machines write at once; a transaction that conflicts with another writer's is rolled
    back whole and run again. Each process attaches the lake once and hands out cursors.
    """

    def __init__(self, path: str | Path | WarehouseLocation, lock_timeout_s: float = 300.0) -> None:
        self.location = (
            path if isinstance(path, WarehouseLocation)
            else parse_location(str(path), os.environ.get(DATA_PATH_SETTING))
        )
        self.path = self.location.path
        self.lock_timeout_s = lock_timeout_s
        self._schema_ready = False

    @property
    def is_ducklake(self) -> bool:
        return self.location.is_ducklake

    def describe(self) -> str:
        """Where the warehouse is, as a person may see it (no password)."""
        return self.location.describe()

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection with the `miko` schema on the search path; retried while the file is locked."""
        if self.is_ducklake:
            con = _attached_lake(self.location).cursor()
            try:
                con.execute(f"USE {_LAKE}.{SCHEMA}")
                yield con
            finally:
                con.close()
            return
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        files = attached_files()
        con = self._open_with_retry(files)
        try:
            con.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            con.execute(f"SET search_path = '{SCHEMA}'")
            for setting in _SETTINGS:
                con.execute(setting)
            yield con
        finally:
            files.close(con, self.path)

    @contextmanager
    def session(self) -> Iterator[None]:
        """Keep the file open for a series of operations (e.g. many lineage lookups).

        Every `connect()` inside reuses the attached file instead of attaching it again (and
        checkpointing it when it is detached). The file stays locked for the whole block: never
        hold one across LLM calls.
        """
        with self.connect():
            yield

    def _open_with_retry(self, files: AttachedFiles) -> duckdb.DuckDBPyConnection:
        assert self.path is not None
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.02
        while True:
            try:
                return files.open(self.path)
            except duckdb.IOException as exc:
                if not any(m in str(exc).lower() for m in _LOCK_MESSAGES):
                    raise
                if time.monotonic() >= deadline:
                    raise WarehouseLockTimeout(
                        f"{self.path} stayed locked for {self.lock_timeout_s:.0f}s: {exc}"
                    ) from exc
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 1.0)

    # -- schema ---------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create missing tables and add missing columns to existing ones (rows are kept).

        Refuses, in one line, a warehouse stamped by a miko with a newer schema.
        """
        if self._schema_ready or (self.is_ducklake and self.location in _READY_LAKES):
            return

        def migrate(con: duckdb.DuckDBPyConnection) -> None:
            stamped = _check_stamp(con, self.location)
            found = _SchemaFound.read(con)
            for table in list(TABLES.values()):
                _create_or_migrate(con, table, found, keys=not self.is_ducklake)
                if table.keeps_history:
                    _create_or_migrate(con, history_table(table), found, keys=not self.is_ducklake)
            if stamped != (str(SCHEMA_VERSION), _miko_version()):
                _stamp(con)

        self._retrying(migrate, {})
        self._schema_ready = True
        if self.is_ducklake:
            _READY_LAKES.add(self.location)

    # -- transactions ---------------------------------------------------------------------

    @contextmanager
    def transaction(self, **relations: Any) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection inside one transaction, committed when the block ends and rolled back
        if it raises. `relations` (DataFrames or Arrow tables) are registered under their
        keyword names for the block, so SQL can read them (`INSERT ... SELECT * FROM name`).

        Not retried: on a DuckLake, where writers can conflict, write through `write()`."""
        self.ensure_schema()
        with self._transaction(**relations) as con:
            yield con

    def write(self, body: Callable[[duckdb.DuckDBPyConnection], T], **relations: Any) -> T:
        """Run `body` in one transaction (as `transaction()`); when it conflicts with another
        writer (DuckLake), run it again from the start, with exponential backoff and jitter,
        until `lock_timeout_s`."""
        self.ensure_schema()
        return self._retrying(body, relations)

    @contextmanager
    def _transaction(self, **relations: Any) -> Iterator[duckdb.DuckDBPyConnection]:
        with self.connect() as con:
            for name, relation in relations.items():
                con.register(name, relation)
            try:
                con.execute("BEGIN TRANSACTION")
                try:
                    yield con
                except BaseException:
                    with suppress(duckdb.Error):  # a failed statement may have ended it already
                        con.execute("ROLLBACK")
                    raise
                con.execute("COMMIT")
            finally:
                for name in relations:
                    con.unregister(name)

    def _retrying(self, body: Callable[[duckdb.DuckDBPyConnection], T], relations: dict[str, Any]) -> T:
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.05
        for attempt in itertools.count(1):
            try:
                with self._transaction(**relations) as con:
                    return body(con)
            except duckdb.Error as exc:
                # Another writer changed what this transaction read (DuckLake), or held the
                # SQLite catalog when this one read its snapshot or committed.
                message = str(exc).lower()
                conflict = isinstance(exc, duckdb.TransactionException) and "conflict" in message
                if not (conflict or any(m in message for m in _LOCK_MESSAGES)):
                    raise
                if time.monotonic() >= deadline:
                    raise WarehouseConflictTimeout(
                        f"{self.describe()}: a write kept conflicting with other writers for "
                        f"{self.lock_timeout_s:.0f}s ({attempt} attempts)"
                    ) from None
                log.info("warehouse write conflicted with another writer (attempt %d); retrying", attempt)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, 2.0)
        raise AssertionError("unreachable")

    # -- reads and writes -----------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> pd.DataFrame:
        return self.read(lambda con: con.execute(sql, params).df())

    def rows(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[tuple]:
        return self.read(lambda con: con.execute(sql, params).fetchall())

    def read(self, body: Callable[[duckdb.DuckDBPyConnection], T]) -> T:
        """`body` (several queries on one connection); on a DuckLake retried while another
        writer holds a SQLite catalog."""
        self.ensure_schema()
        if self.is_ducklake:
            return self._retrying(body, {})
        with self.connect() as con:
            return body(con)

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> None:
        self.ensure_schema()
        with self.connect() as con:
            con.execute(sql, params)

    def append(self, table_name: str, frame: pd.DataFrame) -> int:
        """Insert rows by column name in one transaction."""
        table = TABLES[table_name]
        self.ensure_schema()
        if frame.empty:
            return 0
        self.write(lambda con: _insert_frame(con, table, frame))
        return len(frame)

    def replace_partition(
        self,
        table_name: str,
        batch: str,
        frame: pd.DataFrame,
        *,
        replaced_by_run: str | None = None,
        unchanged_key: Sequence[str] = (),
    ) -> int:
        """Atomically replace the rows of one partition (`batch`) of one table."""
        self.replace_partitions(
            batch, {table_name: frame}, replaced_by_run=replaced_by_run, unchanged_key=unchanged_key
        )
        return len(frame)

    def replace_partitions(
        self,
        batch: str,
        frames: dict[str, pd.DataFrame],
        *,
        replaced_by_run: str | None = None,
        unchanged_key: Sequence[str] = (),
    ) -> None:
        """Replace one partition of several tables in a single transaction.

        For each table: supersede the old rows into its history twin (when it keeps history;
        rows whose `unchanged_key` values reappear in the new frame are the same generation and
        are not archived), delete them, insert the new frame by column name. Any error rolls
        back and every table keeps its previous rows.
        """
        tables = [(TABLES[name], frame) for name, frame in frames.items()]
        self.ensure_schema()
        superseded_at = utc_now()

        def replace(con: duckdb.DuckDBPyConnection) -> None:
            for table, frame in tables:
                if table.keeps_history:
                    _archive(con, table, batch, frame, (superseded_at, replaced_by_run), unchanged_key)
                con.execute(f"DELETE FROM {table.name} WHERE batch = ?", [batch])
                if not frame.empty:
                    _insert_frame(con, table, frame)

        self.write(replace)

    def insert_new(self, table_name: str, frame: pd.DataFrame) -> int:
        """Insert the rows whose primary key is not in the table yet; returns how many were new.

        The same on both backends (DuckLake enforces no key, so no `INSERT OR IGNORE`).
        """
        table = TABLES[table_name]
        self.ensure_schema()
        if frame.empty:
            return 0
        return self.write(lambda con: _insert_new(con, table, frame))


def history_table(table: Table) -> Table:
    return Table(
        f"{table.name}_history",
        table.columns + (("superseded_at", "TIMESTAMP"), ("superseded_by_run", "VARCHAR")),
        indexes=table.indexes,
        fill_on_add=table.fill_on_add,
    )


@dataclass(frozen=True)
class _SchemaFound:
    """The columns and indexes the warehouse has, read in two queries rather than two per table."""

    columns: dict[str, set[str]]
    indexes: set[str]

    @classmethod
    def read(cls, con: duckdb.DuckDBPyConnection) -> _SchemaFound:
        columns: dict[str, set[str]] = {}
        for table, column in con.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_catalog = current_database() AND table_schema = ?",
            [SCHEMA],
        ).fetchall():
            columns.setdefault(table, set()).add(column)
        indexes = {row[0] for row in con.execute(
            "SELECT index_name FROM duckdb_indexes() WHERE database_name = current_database() AND schema_name = ?",
            [SCHEMA],
        ).fetchall()}
        return cls(columns, indexes)


def _create_or_migrate(con: duckdb.DuckDBPyConnection, table: Table, found: _SchemaFound, *, keys: bool) -> None:
    """`keys`: declare the primary key and indexes (a DuckLake supports neither)."""
    existing = found.columns.get(table.name, set())
    if not existing:
        cols = ", ".join(f"{name} {ctype}" for name, ctype in table.columns)
        declared = table.primary_key and keys and table.declare_key
        pk = f", PRIMARY KEY ({', '.join(table.primary_key)})" if declared else ""
        con.execute(f"CREATE TABLE IF NOT EXISTS {table.name} ({cols}{pk})")
        if table.created_with:
            names, values = zip(*table.created_with)
            con.execute(f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join(values)})")
    else:
        fills = dict(table.fill_on_add)
        for name, ctype in table.columns:
            if name not in existing:
                log.info("migrating %s: adding column %s %s", table.name, name, ctype)
                con.execute(f"ALTER TABLE {table.name} ADD COLUMN {name} {ctype}")
                if name in fills:
                    con.execute(f"UPDATE {table.name} SET {name} = {fills[name]}")
        if keys and not table.declare_key and _has_primary_key(con, table.name):
            _drop_primary_key(con, table.name)
    for cols in table.indexes if keys else ():
        index_name = f"idx_{table.name}_{'_'.join(cols)}"
        if index_name not in found.indexes:
            con.execute(f"CREATE INDEX IF NOT EXISTS {index_name} ON {table.name} ({', '.join(cols)})")


def _has_primary_key(con: duckdb.DuckDBPyConnection, table_name: str) -> bool:
    return con.execute(
        "SELECT count(*) FROM duckdb_constraints() WHERE database_name = current_database() "
        "AND schema_name = ? AND table_name = ? AND constraint_type = 'PRIMARY KEY'",
        [SCHEMA, table_name],
    ).fetchone()[0] > 0


def _drop_primary_key(con: duckdb.DuckDBPyConnection, table_name: str) -> None:
    """Rebuild a table without its primary key (DuckDB cannot drop a constraint); rows kept."""
    log.info("migrating %s: dropping its declared primary key", table_name)
    rebuilt = f"{table_name}__rebuilt"
    con.execute(f"CREATE TABLE {rebuilt} AS SELECT * FROM {table_name}")
    con.execute(f"DROP TABLE {table_name}")
    con.execute(f"ALTER TABLE {rebuilt} RENAME TO {table_name}")


def _insert_frame(con: duckdb.DuckDBPyConnection, table: Table, frame: pd.DataFrame) -> None:
    unknown = set(frame.columns) - set(table.column_names)
    if unknown:
        raise ValueError(f"columns not in table {table.name}: {sorted(unknown)}")
    con.register("incoming_rows", frame)
    try:
        con.execute(f"INSERT INTO {table.name} BY NAME SELECT * FROM incoming_rows")
    finally:
        con.unregister("incoming_rows")


def _insert_new(con: duckdb.DuckDBPyConnection, table: Table, frame: pd.DataFrame) -> int:
    key = ", ".join(table.primary_key)
    con.register("incoming_rows", frame)
    try:
        before = con.execute(f"SELECT count(*) FROM {table.name}").fetchone()[0]
        con.execute(
            f"INSERT INTO {table.name} BY NAME SELECT * FROM (SELECT DISTINCT ON ({key}) * FROM incoming_rows) "
            f"WHERE ({key}) NOT IN (SELECT ({key}) FROM {table.name})"
        )
        return con.execute(f"SELECT count(*) FROM {table.name}").fetchone()[0] - before
    finally:
        con.unregister("incoming_rows")


def _archive(
    con: duckdb.DuckDBPyConnection,
    table: Table,
    batch: str,
    frame: pd.DataFrame,
    superseded: tuple[datetime, str | None],
    unchanged_key: Sequence[str],
) -> None:
    """Copy the partition's current rows into the history twin, stamped `(superseded_at, superseded_by_run)`."""
    cols = ", ".join(table.column_names)
    keep_out = ""
    if unchanged_key and not frame.empty:
        key_frame = frame[list(unchanged_key)].drop_duplicates()
        con.register("unchanged_keys", key_frame)
        key_cols = ", ".join(unchanged_key)
        keep_out = f" AND ({key_cols}) NOT IN (SELECT ({key_cols}) FROM unchanged_keys)"
    try:
        con.execute(
            f"INSERT INTO {table.name}_history ({cols}, superseded_at, superseded_by_run) "
            f"SELECT {cols}, ?, ? FROM {table.name} WHERE batch = ?{keep_out}",
            [*superseded, batch],
        )
    finally:
        if keep_out:
            con.unregister("unchanged_keys")


# -- DuckLake: one attached lake per process, the schema stamp ---------------------------------

_LAKES: dict[tuple[int, WarehouseLocation], duckdb.DuckDBPyConnection] = {}
_LAKES_LOCK = threading.Lock()
_READY_LAKES: set[WarehouseLocation] = set()


def _attached_lake(location: WarehouseLocation) -> duckdb.DuckDBPyConnection:
    """This process's in-memory DuckDB with the lake attached (made once; a forked child makes its own)."""
    key = (os.getpid(), location)
    with _LAKES_LOCK:
        con = _LAKES.get(key)
        if con is None:
            con = _LAKES[key] = _attach(location)
        return con


def _attach(location: WarehouseLocation) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(config=offline_config())
    kind = location.catalog_kind
    assert kind in CATALOG_KINDS
    load_extension(con, "ducklake")
    load_extension(con, kind)
    _check_data_path(location)
    try:
        con.execute(attach_statement(location, _LAKE))
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {_LAKE}.{SCHEMA}")
    except duckdb.Error as exc:
        con.close()
        detail = " ".join(redact(str(exc)).split())
        raise WarehouseConfigError(
            f"{WAREHOUSE_SETTING}: cannot open the DuckLake {location.describe()}: {detail[:400]}"
        ) from None
    return con


def _check_data_path(location: WarehouseLocation) -> None:
    """A local data folder must be writable before any work starts (an object store is checked by its first write)."""
    data = location.data_path or ""
    if "://" in data:
        return
    folder = Path(data)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".miko-write-check-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise WarehouseConfigError(
            f"{DATA_PATH_SETTING}: cannot write to {data}: {exc.strerror or exc}"
        ) from None


def _miko_version() -> str:
    try:
        return importlib.metadata.version("miko")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def _check_stamp(con: duckdb.DuckDBPyConnection, location: WarehouseLocation) -> tuple[str | None, str | None]:
    """(schema version, miko version) the warehouse is stamped with; refuses a newer schema."""
    con.execute(f"CREATE TABLE IF NOT EXISTS {_INFO_TABLE} (key VARCHAR, value VARCHAR)")
    stamp = dict(con.execute(f"SELECT key, value FROM {_INFO_TABLE}").fetchall())
    version = int(stamp.get("schema_version", 0))
    if version > SCHEMA_VERSION:
        setting = WAREHOUSE_SETTING if location.is_ducklake else "the warehouse file"
        raise WarehouseConfigError(
            f"{setting}: {location.describe()} was made by miko {stamp.get('miko_version', '?')} "
            f"(warehouse schema {version}); this miko ({_miko_version()}) knows schema {SCHEMA_VERSION}: "
            "upgrade miko or point the setting at another warehouse"
        )
    return stamp.get("schema_version"), stamp.get("miko_version")


def _stamp(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(f"DELETE FROM {_INFO_TABLE}")
    con.executemany(
        f"INSERT INTO {_INFO_TABLE} VALUES (?, ?)",
        [("schema_version", str(SCHEMA_VERSION)), ("miko_version", _miko_version())],
    )
