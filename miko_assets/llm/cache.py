"""The content-addressed LLM call cache over the warehouse table `llm_calls`.

A row is keyed by `LLMRequest.cache_key()`. Only `ok` rows are served as hits; an `ok` row is
never overwritten (the first success wins), a failed row is replaced by the next attempt.
Anything that produces results for a request (the online runner, a batch-API collector) stores
them with `put_many`.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime

import duckdb
import pyarrow as pa
from pydantic import BaseModel

from miko_assets.llm.models import canonical_json, sha256_text
from miko_assets.warehouse.location import WarehouseLocation
from miko_assets.warehouse.schema import LLM_BATCH_ITEMS, LLM_CALLS, TABLES
from miko_assets.warehouse.warehouse import Warehouse, history_table

log = logging.getLogger(__name__)

_COLUMNS = LLM_CALLS.column_names
# `llm_calls` declares no key (`Table.declare_key`), so an upsert is: find which incoming calls
# are stored already, drop the failed ones being replaced, insert the rest, in one transaction,
# one writer at a time. Only the call id and status columns are scanned: the lookup is a few ms
# where a `NOT IN` over the whole table took about as long as the rest of the flush.
_STORED_OF_INCOMING = (
    f"SELECT call_id, status FROM {LLM_CALLS.name} "
    "WHERE call_id IN (SELECT call_id FROM incoming_calls)"
)
_REPLACE_FAILED = (
    f"DELETE FROM {LLM_CALLS.name} WHERE status <> 'ok' AND call_id IN (SELECT unnest(?::VARCHAR[]))"
)
_INSERT_NEW = (
    f"INSERT INTO {LLM_CALLS.name} BY NAME SELECT * FROM incoming_calls "
    "WHERE call_id NOT IN (SELECT unnest(?::VARCHAR[]))"
)
# A lookup first finds the hits scanning only the call id and status columns, then reads
# whole rows for the hits alone: a batch of new requests (all misses) reads no other column.
_OK_AMONG = (
    f"SELECT call_id FROM {LLM_CALLS.name} "
    "WHERE status = 'ok' AND call_id IN (SELECT unnest(?::VARCHAR[]))"
)
_SELECT_OK = (
    f"SELECT {', '.join(_COLUMNS)} FROM {LLM_CALLS.name} "
    "WHERE status = 'ok' AND call_id IN (SELECT unnest(?::VARCHAR[]))"
)


# One writer of `llm_calls` at a time per warehouse in this process.
_WRITERS: collections.defaultdict[WarehouseLocation, threading.Lock] = collections.defaultdict(
    threading.Lock
)

# Warehouses whose pre-endpoint `openai` rows this process has keyed already.
_ENDPOINTS_KEYED: set[WarehouseLocation] = set()


class CallRecord(BaseModel):
    """One `llm_calls` row. `error` is redacted and starts with the failure kind."""

    call_id: str
    provider: str
    model: str
    request_json: str
    response_text: str | None = None
    parsed_json: str | None = None
    status: str
    error: str | None = None
    finish_reason: str | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    attempts: int = 0
    provider_request_id: str | None = None
    dagster_run_id: str | None = None
    stage: str | None = None
    created_at: datetime
    endpoint: str | None = None


class LLMCallCache:
    """Bulk reads and upserts of `llm_calls`, each in one short connection."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse

    def get_many(self, call_ids: Sequence[str]) -> dict[str, CallRecord]:
        """The successful calls among `call_ids`, by id, over one connection."""
        if not call_ids:
            return {}

        def hits(con: duckdb.DuckDBPyConnection) -> list[tuple]:
            found = [row[0] for row in con.execute(_OK_AMONG, [list(call_ids)]).fetchall()]
            return con.execute(_SELECT_OK, [found]).fetchall() if found else []

        rows = self.warehouse.read(hits)
        # Validating is about twice as fast as `model_construct` under pydantic 2.13. A NULL
        # (a column added after the row was stored) takes the field's default.
        return {
            row[0]: CallRecord.model_validate({c: v for c, v in zip(_COLUMNS, row) if v is not None})
            for row in rows
        }

    def put_many(self, records: Sequence[CallRecord]) -> int:
        """Upsert records in one transaction; an existing `ok` row is kept as it is."""
        latest: dict[str, CallRecord] = {}
        for record in records:
            kept = latest.get(record.call_id)
            if kept is None or kept.status != "ok":
                latest[record.call_id] = record
        if not latest:
            return 0
        unique = list(latest.values())
        # Arrow rather than pandas: DuckDB scans it without holding the GIL, which the event
        # loop running the calls needs.
        frame = pa.table({c: [getattr(r, c) for r in unique] for c in _COLUMNS})

        def upsert(con: duckdb.DuckDBPyConnection) -> None:
            stored = con.execute(_STORED_OF_INCOMING).fetchall()
            failed = [call_id for call_id, status in stored if status != "ok"]
            if failed:
                con.execute(_REPLACE_FAILED, [failed])
            con.execute(_INSERT_NEW, [[call_id for call_id, status in stored if status == "ok"]])

        # Without a declared key two writers of this process could both insert a call; other
        # processes are kept out by the file lock (a DuckLake, shared by processes, takes the
        # rare duplicate: `get_many` keys rows by call id).
        with _WRITERS[self.warehouse.location]:
            self.warehouse.write(upsert, incoming_calls=frame)
        return len(unique)

    def key_endpoints_once(self, endpoint: str) -> None:
        """`key_unkeyed_endpoint_rows` the first time this warehouse is used by this process."""
        if self.warehouse.location not in _ENDPOINTS_KEYED:
            self.key_unkeyed_endpoint_rows(endpoint)
            _ENDPOINTS_KEYED.add(self.warehouse.location)

    def key_unkeyed_endpoint_rows(self, endpoint: str) -> int:
        """Give `endpoint` to the `openai` rows cached before endpoints were part of the key.

        Their request JSON gains the endpoint and their call id becomes the new key; every
        column that refers to a call id (lineage, batch items) follows, in one transaction, so
        lineage still finds its call. Returns how many rows were re-keyed (0 once done).
        """
        legacy = self.warehouse.rows(
            f"SELECT call_id, request_json FROM {LLM_CALLS.name} "
            "WHERE provider = 'openai' AND endpoint IS NULL"
        )
        if not legacy:
            return 0
        renames = {"old_id": [], "new_id": [], "new_json": []}
        for old_id, request_json in legacy:
            new_json = canonical_json({**json.loads(request_json), "endpoint": endpoint})
            renames["old_id"].append(old_id)
            renames["new_id"].append(sha256_text(new_json))
            renames["new_json"].append(new_json)
        with _WRITERS[self.warehouse.location]:
            self.warehouse.write(
                lambda con: _rename_calls(con, endpoint), call_renames=pa.table(renames)
            )
        log.info("keyed %d cached openai calls by the endpoint %s", len(legacy), endpoint)
        return len(legacy)


def _rename_calls(con: duckdb.DuckDBPyConnection, endpoint: str) -> None:
    """Move `llm_calls` rows and every call-id reference from `old_id` to `new_id` (`call_renames`)."""
    rest = [c for c in _COLUMNS if c not in ("call_id", "request_json", "endpoint")]
    # A row already stored under the new key (made again after the upgrade) wins.
    con.execute(
        f"INSERT INTO {LLM_CALLS.name} (call_id, request_json, endpoint, {', '.join(rest)}) "
        f"SELECT r.new_id, r.new_json, ?, {', '.join(f'c.{c}' for c in rest)} "
        f"FROM {LLM_CALLS.name} c JOIN call_renames r ON c.call_id = r.old_id "
        # Not ON CONFLICT: `llm_calls` declares no key.
        f"WHERE r.new_id NOT IN (SELECT call_id FROM {LLM_CALLS.name})",
        [endpoint],
    )
    con.execute(f"DELETE FROM {LLM_CALLS.name} WHERE call_id IN (SELECT old_id FROM call_renames)")
    con.execute(
        f"UPDATE {LLM_BATCH_ITEMS.name} SET request_json = r.new_json FROM call_renames r "
        f"WHERE {LLM_BATCH_ITEMS.name}.call_id = r.old_id"
    )
    for table, column in _call_id_references():
        con.execute(
            f"UPDATE {table} SET {column} = r.new_id FROM call_renames r WHERE {table}.{column} = r.old_id"
        )


def _call_id_references() -> list[tuple[str, str]]:
    """(table, column) of every column outside `llm_calls` that holds an `llm_calls.call_id`."""
    tables = [t for t in TABLES.values() if t.name != LLM_CALLS.name]
    tables += [history_table(t) for t in tables if t.keeps_history]
    return [
        (t.name, c)
        for t in tables
        for c in t.column_names
        if c == "call_id" or c.endswith("llm_call_id")
    ]


class CacheWriteError(RuntimeError):
    """Results could not be stored in `llm_calls` by the end of the run."""


class CallWriter:
    """Stores records from a background thread, every `flush_every` records or `flush_interval_s`.

    `put` only appends to a deque (cheap, callable from the event loop); the thread wakes on the
    interval or when a full batch is waiting. A failed flush keeps its records for the next one;
    `close` flushes what is left and raises `CacheWriteError` if that fails.
    """

    def __init__(
        self, cache: LLMCallCache, flush_every: int = 1000, flush_interval_s: float = 1.0
    ) -> None:
        self.cache = cache
        self.flush_every = flush_every
        self.flush_interval_s = flush_interval_s
        self.written = 0
        self._pending: collections.deque[CallRecord] = collections.deque()
        self._wake = threading.Event()
        self._closing = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="llm-call-writer", daemon=True)

    def start(self) -> CallWriter:
        self._thread.start()
        return self

    def put(self, record: CallRecord) -> None:
        self._pending.append(record)
        if len(self._pending) >= self.flush_every:
            self._wake.set()

    def flush_soon(self) -> None:
        """Store what is pending now rather than at the next interval."""
        self._wake.set()

    def close(self) -> None:
        """Flush everything still pending and stop the thread."""
        self._closing = True
        self._wake.set()
        self._thread.join()
        if self._pending:
            raise CacheWriteError(
                f"{len(self._pending)} LLM call results were not stored: {self._error!r}"
            )

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            closing = self._closing
            self._flush()
            if closing:
                if self._pending:  # one more try after a failed final flush
                    time.sleep(0.5)
                    self._flush()
                return

    def _flush(self) -> None:
        batch: list[CallRecord] = []
        while self._pending:
            batch.append(self._pending.popleft())
        if not batch:
            return
        try:
            self.written += self.cache.put_many(batch)
        except Exception as exc:
            log.exception("storing %d LLM call results failed; will retry", len(batch))
            self._error = exc
            self._pending.extendleft(reversed(batch))
