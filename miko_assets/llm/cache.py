"""The content-addressed LLM call cache over the warehouse table `llm_calls`.

A row is keyed by `LLMRequest.cache_key()`. Only `ok` rows are served as hits; an `ok` row is
never overwritten (the first success wins), a failed row is replaced by the next attempt.
Anything that produces results for a request (the online runner, a batch-API collector) stores
them with `put_many`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import pyarrow as pa
from pydantic import BaseModel

from miko_assets.warehouse.schema import LLM_CALLS
from miko_assets.warehouse.warehouse import Warehouse

log = logging.getLogger(__name__)

_COLUMNS = LLM_CALLS.column_names
_UPSERT = (
    f"INSERT INTO {LLM_CALLS.name} BY NAME SELECT * FROM incoming_calls "
    "ON CONFLICT (call_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS if c != "call_id")
    + f" WHERE {LLM_CALLS.name}.status <> 'ok'"
)
_SELECT_OK = (
    f"SELECT {', '.join(_COLUMNS)} FROM {LLM_CALLS.name} "
    "WHERE status = 'ok' AND call_id IN (SELECT unnest(?::VARCHAR[]))"
)


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


def utc_now() -> datetime:
    """Naive UTC, as stored in TIMESTAMP columns."""
    return datetime.now(UTC).replace(tzinfo=None)


class LLMCallCache:
    """Bulk reads and upserts of `llm_calls`, each in one short connection."""

    def __init__(self, warehouse: Warehouse) -> None:
        self.warehouse = warehouse

    def get_many(self, call_ids: Sequence[str]) -> dict[str, CallRecord]:
        """The successful calls among `call_ids`, by id, in one query."""
        if not call_ids:
            return {}
        rows = self.warehouse.rows(_SELECT_OK, [list(call_ids)])
        # Rows come from our own table with its declared types: no need to re-validate them.
        return {row[0]: CallRecord.model_construct(**dict(zip(_COLUMNS, row))) for row in rows}

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
        self.warehouse.ensure_schema()
        with self.warehouse.connect() as con:
            con.register("incoming_calls", frame)
            try:
                con.execute("BEGIN TRANSACTION")
                try:
                    con.execute(_UPSERT)
                    con.execute("COMMIT")
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
            finally:
                con.unregister("incoming_calls")
        return len(unique)

    def spent_usd(self, dagster_run_id: str) -> float:
        """What the calls recorded for a Dagster run cost."""
        rows = self.warehouse.rows(
            f"SELECT coalesce(sum(cost_usd), 0) FROM {LLM_CALLS.name} WHERE dagster_run_id = ?",
            [dagster_run_id],
        )
        return float(rows[0][0])


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
