"""Submit-then-collect through the provider batch APIs, at the batch price (half the online one).

`submit_batch` sends the requests that are neither in the call cache nor in a pending batch as
one provider batch and records it in `llm_batches`, with one `llm_batch_items` row per request
(its rendered request, images by sha); nothing waits for it. `collect_batches` polls every
pending batch once; an ended batch's answers are stored in `llm_calls` through the cache
(`reply_record` + `put_many`), with their tokens and the batch-discounted cost, so the next run
of the same requests, e.g. the stage's materialization, is served from the cache.

Failed items (errored, expired or canceled in the batch, or a `length`, `content_filter` or
`refusal` finish) are stored as failed calls with their reason and left to the online path:
the next run of the same requests makes just those calls online, with the runner's retries,
repair and budget guard. The collector itself makes no online calls, so a sensor tick stays
short; the `llm_batch_collector` sensor launches the partition's materialization instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

import pyarrow as pa
from pydantic import BaseModel, Field

from miko_assets.clock import utc_now
from miko_assets.llm.batch_api import BatchClient, BatchState, ItemResult, batch_client
from miko_assets.llm.cache import CallRecord, LLMCallCache
from miko_assets.llm.config import RunnerConfig
from miko_assets.llm.costs import (
    BATCH_PRICE_FACTOR,
    PriceBook,
    PriceTable,
    estimate_cost,
)
from miko_assets.llm.event_loop import run_sync
from miko_assets.llm.models import (
    GenerationParams,
    ImageInput,
    LLMRequest,
    Message,
    sha256_text,
)
from miko_assets.llm.provider_interface import ProviderError, ProviderReply
from miko_assets.llm.provider_registry import ProviderConfigError
from miko_assets.llm.records import failure_record, reply_record
from miko_assets.warehouse.schema import LLM_BATCH_ITEMS, LLM_BATCHES
from miko_assets.warehouse.warehouse import Warehouse

log = logging.getLogger(__name__)

# Below both providers' per-batch limits (OpenAI 50,000 requests, Anthropic 100,000).
MAX_BATCH_REQUESTS = 50_000
PENDING = "pending"
COLLECTED = "collected"

_BATCH_COLUMNS = LLM_BATCHES.column_names
_IN_FLIGHT = (
    f"SELECT DISTINCT i.call_id FROM {LLM_BATCH_ITEMS.name} i "
    f"JOIN {LLM_BATCHES.name} b USING (batch_id) "
    "WHERE b.status = ? AND i.call_id IN (SELECT unnest(?::VARCHAR[]))"
)


class BatchSubmission(BaseModel):
    """What `submit_batch` did; `batch_id` is `None` when there was nothing left to submit."""

    batch_id: str | None
    provider: str
    requests: int
    unique_requests: int
    cached: int
    in_flight: int
    submitted: int
    # The worst case (answers of max_tokens) at the batch price.
    estimated_max_cost_usd: float = 0.0


class BatchRecord(BaseModel):
    """One `llm_batches` row."""

    batch_id: str
    provider: str
    status: str
    provider_status: str | None = None
    stage: str | None = None
    asset: str | None = None
    partition_key: str | None = None
    n_items: int = 0
    n_succeeded: int | None = None
    n_failed: int | None = None
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = None
    error: str | None = None
    dagster_run_id: str | None = None
    created_at: datetime
    checked_at: datetime | None = None
    collected_at: datetime | None = None


class CollectSummary(BaseModel):
    """One `collect_batches` pass: batches polled, still pending, collected (as recorded), and
    the batches that could not be polled, with the (redacted) reason."""

    checked: int = 0
    still_pending: int = 0
    collected: list[BatchRecord] = Field(default_factory=list)
    failures_by_reason: dict[str, int] = Field(default_factory=dict)
    errors: dict[str, str] = Field(default_factory=dict)

    def describe(self) -> str:
        """One line for logs, command output and sensor skip reasons."""
        succeeded = sum(b.n_succeeded or 0 for b in self.collected)
        failed = sum(b.n_failed or 0 for b in self.collected)
        cost = sum(b.cost_usd or 0.0 for b in self.collected)
        text = (
            f"{self.checked} pending batches polled: {len(self.collected)} collected "
            f"({succeeded} answers, {failed} failed items, ${cost:.4f}), "
            f"{self.still_pending} still pending"
        )
        if self.failures_by_reason:
            text += f"; failed items by reason: {self.failures_by_reason}"
        if self.errors:
            text += f"; {len(self.errors)} could not be polled"
        return text


def submit_batch(
    warehouse: Warehouse,
    requests: Sequence[LLMRequest],
    env: Mapping[str, str] = os.environ,
    *,
    stage: str | None = None,
    asset: str | None = None,
    partition_key: str | None = None,
    dagster_run_id: str | None = None,
    prices: PriceTable | None = None,
) -> BatchSubmission:
    """Submit the requests not already answered (cached `ok`) or in a pending batch, as one
    provider batch, and record it. All requests must name the same provider.

    `MIKO_MAX_SPEND_USD` bounds the batch's worst-case cost, as it bounds an online run's spend.
    """
    providers = {r.provider for r in requests}
    if len(providers) > 1:
        raise ValueError(f"one batch goes to one provider; these requests name {sorted(providers)}")
    provider = providers.pop() if providers else ""
    unique: dict[str, tuple[LLMRequest, str]] = {}
    for request in requests:
        request_json = request.request_json()
        unique.setdefault(sha256_text(request_json), (request, request_json))
    keys = list(unique)
    cached = LLMCallCache(warehouse).get_many(keys) if keys else {}
    in_flight = {row[0] for row in warehouse.rows(_IN_FLIGHT, [PENDING, keys])} if keys else set()
    todo = [k for k in keys if k not in cached and k not in in_flight]
    estimate = estimate_cost((unique[k][0] for k in todo), prices or PriceTable.load(env=env))
    submission = BatchSubmission(
        batch_id=None,
        provider=provider,
        requests=len(requests),
        unique_requests=len(keys),
        cached=len(cached),
        in_flight=len(in_flight),
        submitted=len(todo),
        estimated_max_cost_usd=BATCH_PRICE_FACTOR * estimate.max_cost_usd,
    )
    if not todo:
        return submission
    if len(todo) > MAX_BATCH_REQUESTS:
        raise ValueError(
            f"{len(todo)} requests exceed the {MAX_BATCH_REQUESTS} a batch may hold: "
            "submit smaller partitions"
        )
    limit = RunnerConfig.from_env(env).max_spend_usd
    if limit is not None and submission.estimated_max_cost_usd > limit:
        raise ValueError(
            f"the batch may cost up to ${submission.estimated_max_cost_usd:.4f}, more than "
            f"MIKO_MAX_SPEND_USD (${limit:.4f}): submit a smaller partition or raise the limit"
        )
    client = batch_client(provider, env)

    async def send() -> str:
        try:
            return await client.submit([(k, unique[k][0]) for k in todo])
        finally:
            await client.aclose()

    batch_id = run_sync(send)
    try:
        _record_submission(
            warehouse,
            BatchRecord(
                batch_id=batch_id,
                provider=provider,
                status=PENDING,
                stage=stage,
                asset=asset,
                partition_key=partition_key,
                n_items=len(todo),
                dagster_run_id=dagster_run_id,
                created_at=utc_now(),
            ),
            [(k, unique[k][1]) for k in todo],
        )
    except Exception:
        log.error(
            "%s batch %s was submitted but could not be recorded; cancel it at the provider",
            provider,
            batch_id,
        )
        raise
    log.info("submitted %s batch %s: %d requests", provider, batch_id, len(todo))
    return submission.model_copy(update={"batch_id": batch_id})


def collect_batches(
    warehouse: Warehouse,
    env: Mapping[str, str] = os.environ,
    *,
    prices: PriceTable | None = None,
    on_batch: Callable[[str, int], None] | None = None,
) -> CollectSummary:
    """Poll every pending batch once; store the answers of those that ended in `llm_calls`.

    `on_batch(batch_id, batches)` precedes the storing of each polled batch (for a progress display).
    """
    pending = list_batches(warehouse, pending_only=True)
    summary = CollectSummary(checked=len(pending))
    if not pending:
        return summary
    fetched = run_sync(lambda: _fetch(pending, env))
    book = PriceBook(prices or PriceTable.load(env=env))
    reasons: Counter[str] = Counter()
    for batch in pending:
        if on_batch:
            on_batch(batch.batch_id, len(pending))
        outcome = fetched[batch.batch_id]
        now = utc_now()
        if isinstance(outcome, ProviderError | ProviderConfigError):
            summary.errors[batch.batch_id] = str(outcome)
            summary.still_pending += 1
            log.warning("could not poll %s batch %s: %s", batch.provider, batch.batch_id, outcome)
            _update_batch(warehouse, batch.batch_id, {"error": str(outcome), "checked_at": now})
            continue
        state, results = outcome
        if results is None:
            summary.still_pending += 1
            _update_batch(
                warehouse,
                batch.batch_id,
                {"provider_status": state.provider_status, "error": None, "checked_at": now},
            )
            continue
        collected = _store_results(warehouse, batch, state, results, book, reasons)
        summary.collected.append(collected)
        log.info(
            "collected %s batch %s (%s): %d answers, %d failed items, $%.4f",
            batch.provider,
            batch.batch_id,
            state.provider_status,
            collected.n_succeeded,
            collected.n_failed,
            collected.cost_usd,
        )
    summary.failures_by_reason = dict(sorted(reasons.items()))
    return summary


def list_batches(warehouse: Warehouse, *, pending_only: bool = False) -> list[BatchRecord]:
    """The recorded batches, oldest first (only the pending ones with `pending_only`)."""
    where, params = ("WHERE status = ?", [PENDING]) if pending_only else ("", [])
    rows = warehouse.rows(
        f"SELECT {', '.join(_BATCH_COLUMNS)} FROM {LLM_BATCHES.name} {where} "
        "ORDER BY created_at, batch_id",
        params,
    )
    return [BatchRecord(**dict(zip(_BATCH_COLUMNS, row, strict=True))) for row in rows]


def request_from_json(request_json: str) -> LLMRequest:
    """The request a stored rendered request (`LLMRequest.request_json`) came from, images by
    their sha only: enough to key, cost and record its answer, not to send it again."""
    raw = json.loads(request_json)
    messages = tuple(
        Message(
            role=m["role"],
            content=m["content"],
            images=tuple(_image_from_key(key) for key in m["images"]),
        )
        for m in raw["messages"]
    )
    return LLMRequest(
        provider=raw["provider"],
        model=raw["model"],
        messages=messages,
        params=GenerationParams.model_validate(raw["params"]),
        output_schema=raw["output_schema"],
        endpoint=raw.get("endpoint"),
        continuation=raw.get("continuation"),
    )


def _image_from_key(key: str | dict[str, str]) -> ImageInput:
    if isinstance(key, str):
        return ImageInput(sha256=key, data_b64="")
    return ImageInput(sha256=key["sha256"], detail=key["detail"], data_b64="")


# -- provider side --------------------------------------------------------------------------

_Fetched = tuple[BatchState, dict[str, ItemResult] | None] | ProviderError | ProviderConfigError


async def _fetch(pending: Sequence[BatchRecord], env: Mapping[str, str]) -> dict[str, _Fetched]:
    """Each batch's state and, when it has ended, its results; or why it could not be polled."""
    out: dict[str, _Fetched] = {}
    by_provider: dict[str, list[BatchRecord]] = {}
    for batch in pending:
        by_provider.setdefault(batch.provider, []).append(batch)
    for provider, batches in by_provider.items():
        try:
            client = batch_client(provider, env)
        except ProviderConfigError as exc:
            out.update((b.batch_id, exc) for b in batches)
            continue

        try:
            fetched = await asyncio.gather(*(_poll(client, b.batch_id) for b in batches))
        finally:
            await client.aclose()
        out.update(zip((b.batch_id for b in batches), fetched, strict=True))
    return out


async def _poll(client: BatchClient, batch_id: str) -> _Fetched:
    try:
        state = await client.poll(batch_id)
        return state, (await client.results(batch_id) if state.ended else None)
    except ProviderError as exc:
        return exc


# -- warehouse side -------------------------------------------------------------------------


def _store_results(
    warehouse: Warehouse,
    batch: BatchRecord,
    state: BatchState,
    results: Mapping[str, ItemResult],
    book: PriceBook,
    reasons: Counter[str],
) -> BatchRecord:
    """Store an ended batch's answers through the cache, then mark it and its items collected."""
    items = warehouse.rows(
        f"SELECT call_id, request_json FROM {LLM_BATCH_ITEMS.name} WHERE batch_id = ?",
        [batch.batch_id],
    )
    missing = ProviderError(
        f"batch_{state.provider_status.replace('cancelled', 'canceled')}",
        f"the batch ended ({state.provider_status}) without an answer for this request"
        + (f": {state.detail}" if state.detail else ""),
    )
    records: list[CallRecord] = []
    kinds: list[str | None] = []
    for call_id, request_json in items:
        record, kind = _item_record(
            batch, call_id, request_json, results.get(call_id, missing), book
        )
        records.append(record)
        kinds.append(kind)
    LLMCallCache(warehouse).put_many(records)

    reasons.update(k for k in kinds if k)
    now = utc_now()
    collected = batch.model_copy(
        update={
            "status": COLLECTED,
            "provider_status": state.provider_status,
            "n_succeeded": sum(k is None for k in kinds),
            "n_failed": sum(k is not None for k in kinds),
            "tokens_in": sum(r.tokens_in for r in records),
            "tokens_out": sum(r.tokens_out for r in records),
            "cost_usd": sum(r.cost_usd for r in records),
            "error": None,
            "checked_at": now,
            "collected_at": now,
        }
    )
    item_updates = pa.table(
        {
            "call_id": [r.call_id for r in records],
            "status": ["ok" if k is None else "failed" for k in kinds],
            "error": [r.error for r in records],
        }
    )
    changes = {c: getattr(collected, c) for c in _BATCH_COLUMNS if c != "batch_id"}
    with warehouse.transaction(item_updates=item_updates) as con:
        con.execute(
            f"UPDATE {LLM_BATCH_ITEMS.name} AS i SET status = u.status, error = u.error "
            "FROM item_updates AS u WHERE i.batch_id = ? AND i.call_id = u.call_id",
            [batch.batch_id],
        )
        con.execute(_update_sql(changes), [*changes.values(), batch.batch_id])
    return collected


def _item_record(
    batch: BatchRecord,
    call_id: str,
    request_json: str,
    result: ItemResult,
    book: PriceBook,
) -> tuple[CallRecord, str | None]:
    """The `llm_calls` row of one batch item, and its failure kind (`None` if usable)."""
    request = request_from_json(request_json)
    if isinstance(result, ProviderReply):
        price = book.price(request.provider, request.model)
        cost = BATCH_PRICE_FACTOR * price.cost(
            result.tokens_in, result.tokens_out, result.tokens_cached, result.tokens_cache_write
        )
        return reply_record(
            request,
            result,
            cost_usd=cost,
            dagster_run_id=batch.dagster_run_id,
            stage=batch.stage,
            keyed=(call_id, request_json),
        )
    record = failure_record(
        request,
        (call_id, request_json),
        result.kind,
        result.message,
        attempts=1,
        dagster_run_id=batch.dagster_run_id,
        stage=batch.stage,
    )
    return record, result.kind


def _record_submission(
    warehouse: Warehouse, batch: BatchRecord, items: Sequence[tuple[str, str]]
) -> None:
    """The batch row and its item rows, in one transaction."""
    row = batch.model_dump()
    frame = pa.table(
        {
            "batch_id": [batch.batch_id] * len(items),
            "call_id": [k for k, _ in items],
            "request_json": [j for _, j in items],
            "status": [PENDING] * len(items),
            "error": pa.nulls(len(items), pa.string()),
        }
    )
    with warehouse.transaction(incoming_items=frame) as con:
        con.execute(
            f"INSERT INTO {LLM_BATCHES.name} ({', '.join(_BATCH_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in _BATCH_COLUMNS)})",
            [row[c] for c in _BATCH_COLUMNS],
        )
        con.execute(f"INSERT INTO {LLM_BATCH_ITEMS.name} BY NAME SELECT * FROM incoming_items")


def _update_batch(warehouse: Warehouse, batch_id: str, changes: Mapping[str, object]) -> None:
    warehouse.execute(_update_sql(changes), [*changes.values(), batch_id])


def _update_sql(changes: Mapping[str, object]) -> str:
    """`UPDATE llm_batches` of the given columns (names from the schema, values bound)."""
    unknown = set(changes) - set(_BATCH_COLUMNS)
    if unknown:
        raise ValueError(f"not columns of {LLM_BATCHES.name}: {sorted(unknown)}")
    assignments = ", ".join(f"{c} = ?" for c in changes)
    return f"UPDATE {LLM_BATCHES.name} SET {assignments} WHERE batch_id = ?"
