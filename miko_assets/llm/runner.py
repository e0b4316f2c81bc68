"""`LLMRunner`: one response per request, in order, never raising for a request that fails.

A batch goes: the requests are rendered and looked up in the cache a chunk at a time (first
about one round of calls, then the rest), and each chunk's misses go at once to a bounded pool
of workers per provider (`lanes`), so the first calls are in flight while the rest of the batch
is still being looked up. The workers send each call under the retry policy (`retries`), stop before the budget would be exceeded (a
budget shared with other runs is leased from the warehouse, `budget`), validate structured
answers and make one repair call for an invalid one (`validation`).
Every result is queued for a background writer that stores it in `llm_calls` while the batch
runs (`records` builds the rows, the responses and the summary).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from miko_assets.llm.budget import BudgetLease, budget_name
from miko_assets.llm.cache import CallRecord, CallWriter, LLMCallCache
from miko_assets.llm.config import RunnerConfig
from miko_assets.llm.continuation import ContinuationError, check_continuation
from miko_assets.llm.costs import BudgetGuard, PriceBook, PriceTable, call_estimate
from miko_assets.llm.event_loop import run_sync
from miko_assets.llm.heap import collector_settings_for_a_batch
from miko_assets.llm.lanes import Lanes
from miko_assets.llm.models import LLMRequest, LLMResponse, sha256_text
from miko_assets.llm.progress import BatchProgress
from miko_assets.llm.provider_interface import Provider, redact
from miko_assets.llm.provider_registry import ProviderRegistry
from miko_assets.llm.ratelimit import RateLimiter
from miko_assets.llm.records import (
    BatchResult,
    Outcome,
    RunSummary,
    Tally,
    failure_record,
    reply_record,
    response_for,
)
from miko_assets.llm.retries import send_with_retries
from miko_assets.llm.validation import (
    INVALID_OUTPUT,
    Validator,
    parsed_json,
    repair_request,
    validate_answer,
)
from miko_assets.warehouse.warehouse import Warehouse

# The result types are part of the runner's surface: callers import them from here.
__all__ = ["BUDGET_EXCEEDED", "BatchResult", "LLMRunner", "RunSummary", "Validator"]

log = logging.getLogger(__name__)

BUDGET_EXCEEDED = "budget_exceeded"


class LLMRunner:
    """Runs batches of `LLMRequest` against the providers of a registry, through the call cache.

    Without a warehouse there is no cache and nothing is stored (benchmarks, quick checks).
    A batch closes the connections of the providers it used; they reopen on the next batch.
    Under `config.max_spend_usd` with a warehouse, a batch spends from a budget shared across
    processes (`llm.budget`): `config.budget_name`, else `budget_group` (the backfill the run
    belongs to), else the Dagster run's own. Without a warehouse the cap holds per batch.
    """

    def __init__(
        self,
        providers: ProviderRegistry,
        warehouse: Warehouse | None = None,
        *,
        config: RunnerConfig | None = None,
        prices: PriceTable | None = None,
        budget_group: str | None = None,
    ) -> None:
        self.providers = providers
        self.warehouse = warehouse
        self.cache = LLMCallCache(warehouse) if warehouse is not None else None
        self.config = config or RunnerConfig()
        self.prices = prices or PriceTable.load()
        self.budget_group = budget_group

    @classmethod
    def from_env(
        cls,
        warehouse: Warehouse | None,
        env: Mapping[str, str] = os.environ,
        budget_group: str | None = None,
    ) -> LLMRunner:
        """Providers, limits, budget and prices all configured from the environment."""
        return cls(
            ProviderRegistry(env),
            warehouse,
            config=RunnerConfig.from_env(env),
            prices=PriceTable.load(env=env),
            budget_group=budget_group,
        )

    def run(
        self,
        requests: Sequence[LLMRequest],
        validator: Validator | None = None,
        *,
        dagster_run_id: str | None = None,
        stage: str | None = None,
        progress: BatchProgress | None = None,
    ) -> BatchResult:
        """Synchronous `arun` on a fresh event loop (also from a thread that has a running loop)."""
        return run_sync(
            lambda: self.arun(
                requests, validator, dagster_run_id=dagster_run_id, stage=stage, progress=progress
            )
        )

    async def arun(
        self,
        requests: Sequence[LLMRequest],
        validator: Validator | None = None,
        *,
        dagster_run_id: str | None = None,
        stage: str | None = None,
        progress: BatchProgress | None = None,
    ) -> BatchResult:
        """One response per request, in order. Identical requests are called once.

        With a `validator` (or a request `output_schema`) answers are parsed into
        `LLMResponse.parsed` and an invalid one gets one repair call. A `progress` hears how
        far the batch has got, and of its retries, rate-limit pauses and repairs.
        """
        batch = _Batch(self, validator, dagster_run_id, stage, progress)
        with collector_settings_for_a_batch():
            return await batch.run(requests)


@dataclass(slots=True)
class _Item:
    request: LLMRequest
    key: str
    request_json: str
    hit: CallRecord | None = None
    # (estimated prompt tokens, the most the call may cost), once it is known to be called.
    estimate: tuple[int, float] | None = None


# Requests rendered and looked up at a time after the first round of calls.
_CHUNK = 4096


def _chunks(requests: Sequence[LLMRequest], first: int) -> list[Sequence[LLMRequest]]:
    """`requests` cut into a first chunk of `first`, then chunks of `_CHUNK`."""
    bounds = [0, *range(first, len(requests), _CHUNK), len(requests)]
    return [requests[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


class _Batch:
    """The state of one `arun`: limiters, budget, writer, counts."""

    def __init__(
        self,
        runner: LLMRunner,
        validator: Validator | None,
        dagster_run_id: str | None,
        stage: str | None,
        progress: BatchProgress | None = None,
    ) -> None:
        self.runner = runner
        self.progress = progress
        self.config = runner.config
        self.cache = runner.cache
        self.validator = validator
        self.dagster_run_id = dagster_run_id
        self.stage = stage
        self.tally = Tally()
        self.prices = PriceBook(runner.prices)
        self.budget = BudgetGuard(self.config.max_spend_usd)
        self.lease: BudgetLease | None = None
        self.providers: dict[str, Provider] = {}
        self.limiters: dict[str, RateLimiter] = {}
        self.writer: CallWriter | None = None
        self.budget_shared = False
        self.lanes: Lanes[_Item]
        # Calls answered before the progress was started (failed or not), else None.
        self.early_done: list[bool] | None = []

    async def run(self, requests: Sequence[LLMRequest]) -> BatchResult:
        started = time.perf_counter()
        keys: list[str] = []
        items: dict[str, _Item] = {}
        results: dict[str, LLMResponse] = {}
        self.lanes = Lanes(
            self.config.concurrency_for, lambda item: self._work(item, results), self._last_round
        )
        try:
            if self.cache is not None and requests:
                endpoints = {r.endpoint for r in requests if r.endpoint}
                if endpoints:
                    await asyncio.to_thread(self.cache.key_endpoints_once, sorted(endpoints)[0])
            # The misses of each chunk are sent while the next chunk is rendered and looked up.
            for chunk in _chunks(requests, self._first_chunk(requests)):
                rendered, hits = await asyncio.to_thread(self._render_and_look_up, chunk)
                new: list[_Item] = []
                for request, key, request_json in rendered:
                    keys.append(key)
                    if key not in items:
                        item = items[key] = _Item(request, key, request_json, hits.get(key))
                        new.append(item)
                self._dispatch(new, results, len(requests))
            self.tally.requests = len(keys)
            self.tally.unique_requests = len(items)
            self._start_progress(len(items))
            await self.lanes.join()
        except Exception:
            # A later chunk failed (lookup, provider settings): the calls already queued still
            # finish and are stored before the error is raised.
            await self.lanes.join()
            raise
        except BaseException:
            await self.lanes.cancel()
            raise
        finally:
            for provider in self.providers.values():
                await provider.aclose()
            if self.writer is not None:
                await asyncio.to_thread(self.writer.close)
            if self.lease is not None:
                await asyncio.to_thread(self.lease.close, self.budget.spent_usd)
        responses = [results[k] for k in keys]
        summary = self.tally.summary(responses, self.prices.unpriced, started)
        if self.lease is not None and self.lease.opened:
            summary.budget_name = self.lease.name
            summary.budget_cap_usd = self.lease.cap_usd
            summary.budget_remaining_usd = await asyncio.to_thread(self.lease.remaining_usd)
        return BatchResult(responses=responses, summary=summary)

    def _first_chunk(self, requests: Sequence[LLMRequest]) -> int:
        """About one round of calls: enough to keep every worker busy while the rest is looked up."""
        if self.cache is None:
            return _CHUNK
        return max((self.config.concurrency_for(p) for p in {r.provider for r in requests}), default=1)

    def _render_and_look_up(
        self, chunk: Sequence[LLMRequest]
    ) -> tuple[list[tuple[LLMRequest, str, str]], dict[str, CallRecord]]:
        """(request, cache key, request JSON) of each request, and the cache's hits among them."""
        rendered = []
        for request in chunk:
            request_json = request.request_json()
            rendered.append((request, sha256_text(request_json), request_json))
        if self.cache is None:
            return rendered, {}
        return rendered, self.cache.get_many(list({key for _, key, _ in rendered}))

    def _dispatch(self, new: list[_Item], results: dict[str, LLMResponse], batch_size: int) -> None:
        """Answer the valid hits among `new` at once; queue the rest (misses, and hits that need a repair)."""
        pending: list[_Item] = []
        for item in new:
            # A hit whose answer passes validation needs no event-loop work at all.
            response = self._from_hit(item) if item.hit is not None else None
            if response is not None:
                self.tally.cache_hits += 1
                self.tally.cost_saved_usd += response.cost_usd
                results[item.key] = response
            else:
                pending.append(item)
        calls = []
        for item in pending:
            if item.hit is None:
                request = item.request
                item.estimate = call_estimate(request, self.prices.price(request.provider, request.model))
                self.tally.estimated_max_cost_usd += item.estimate[1]
                calls.append(item)
        if calls and self.budget_shared is False:
            self.budget_shared = True
            self._share_budget(calls, batch_size)
        for item in pending:
            name = item.request.provider
            if name not in self.providers:
                self.providers[name] = self.runner.providers.get(name)
                self.limiters[name] = RateLimiter(self.config.limits_for(name))
            if self.writer is None and self.cache is not None:
                self.writer = CallWriter(
                    self.cache, self.config.flush_every, self.config.flush_interval_s
                ).start()
            self.lanes.put(name, item)

    def _share_budget(self, calls: list[_Item], batch_size: int) -> None:
        """Spend from the budget shared in the warehouse, leased about one round of calls in
        flight at a time (their worst case, as the first `calls` estimate it), if there is a
        cap and a budget to share."""
        cap = self.config.max_spend_usd
        name = budget_name(self.config.budget_name, self.runner.budget_group, self.dagster_run_id)
        if cap is None or self.runner.warehouse is None or name is None:
            return
        lease = self.lease = BudgetLease(self.runner.warehouse, name, cap, self.dagster_run_id, self.stage)
        providers = {item.request.provider for item in calls}
        in_flight = min(batch_size, max(self.config.concurrency_for(p) for p in providers))
        per_call = sum(item.estimate[1] for item in calls if item.estimate) / len(calls)

        async def resize(wanted_usd: float, floor_usd: float) -> float:
            return await asyncio.to_thread(lease.resize, wanted_usd, floor_usd)

        self.budget = BudgetGuard.shared(resize, headroom_usd=per_call * in_flight)

    def _last_round(self) -> None:
        """Store the results so far while the last round of calls is in flight, so that what
        is left to store after the last answer is about one round."""
        if self.writer is not None:
            self.writer.flush_soon()

    def _start_progress(self, total: int) -> None:
        """Tell the progress the batch's size once every chunk is looked up, then the calls
        that finished while the lookup was still going."""
        if self.progress is None:
            return
        self.progress.start(total, self.tally.cache_hits)
        early, self.early_done = self.early_done, None
        for failed in early or ():
            self.progress.call_done(failed=failed)

    async def _work(self, item: _Item, results: dict[str, LLMResponse]) -> None:
        response = results[item.key] = await self._resolve_safely(item)
        if self.progress is None:
            return
        failed = response.status != "ok"
        if self.early_done is not None:
            self.early_done.append(failed)
        else:
            self.progress.call_done(failed=failed)

    # -- one request ----------------------------------------------------------------------

    def _warn(self, message: str) -> None:
        """A retry, a pause or a repair: a warning in the run's log, else a Python log line."""
        if self.progress is not None:
            self.progress.warning(message)
        else:
            log.info(message)

    async def _resolve_safely(self, item: _Item) -> LLMResponse:
        try:
            return await self._resolve(item)
        except Exception as exc:
            log.exception("internal error while running call %s", item.key)
            return LLMResponse(
                call_id=item.key,
                status="failed",
                error_kind="internal_error",
                error=redact(f"internal_error: {type(exc).__name__}: {exc}"),
                attempts=0,
            )

    async def _resolve(self, item: _Item) -> LLMResponse:
        if item.hit is not None:
            first = Outcome(item.hit, None, from_cache=True)
        else:
            first = await self._call(item.request, item.key, item.request_json, item.estimate)
        if first.kind is not None:
            self._store(first)
            return response_for(first)

        parsed, problem = self._validate(item.request, first.record.response_text)
        if problem is None:
            first.record.parsed_json = parsed_json(parsed)
            self._store(first)
            return response_for(first, parsed)
        if not self.config.repair:
            first.fail_invalid(problem)
            self._store(first)
            return response_for(first)

        self.tally.repairs += 1
        self._warn(f"call {item.key[:12]}: the answer failed validation ({problem}); one repair call")
        text = first.record.response_text or ""
        second = await self._cached_or_call(repair_request(item.request, text, problem))
        parsed, second_problem = (
            (None, second.record.error)
            if second.kind
            else self._validate(item.request, second.record.response_text)
        )
        if second_problem is None:
            first.record.error = (
                f"{INVALID_OUTPUT} (repaired by call {second.record.call_id}): {problem}"
            )
            second.record.parsed_json = parsed_json(parsed)
            self._store(first)
            self._store(second)
            return response_for(second, parsed, repair_of=first)

        first.fail_invalid(problem)
        if second.kind is None:
            second.fail_invalid(second_problem)
        self._store(first)
        self._store(second)
        failed = response_for(second, repair_of=first)
        failed.error_kind = INVALID_OUTPUT
        failed.error = redact(
            f"{INVALID_OUTPUT}: {problem}; after the repair call: {second_problem}"
        )
        return failed

    def _from_hit(self, item: _Item) -> LLMResponse | None:
        """The response for a cache hit whose answer validates, else `None` (it needs a repair)."""
        assert item.hit is not None
        parsed, problem = self._validate(item.request, item.hit.response_text)
        return (
            None
            if problem is not None
            else response_for(Outcome(item.hit, None, from_cache=True), parsed)
        )

    async def _cached_or_call(self, request: LLMRequest) -> Outcome:
        request_json = request.request_json()
        key = sha256_text(request_json)
        if self.cache is not None:
            hit = (await asyncio.to_thread(self.cache.get_many, [key])).get(key)
            if hit is not None:
                return Outcome(hit, None, from_cache=True)
        return await self._call(request, key, request_json)

    async def _call(
        self,
        request: LLMRequest,
        key: str,
        request_json: str,
        estimate: tuple[int, float] | None = None,
    ) -> Outcome:
        """One call with pacing, retries and budget; a failure comes back as a failed outcome.
        `estimate`: the request's `call_estimate`, when already made."""
        price = self.prices.price(request.provider, request.model)
        prompt_tokens, reserved = estimate or call_estimate(request, price)
        if not await self.budget.reserve(reserved):
            where = f"budget {self.lease.name!r}" if self.lease else "the batch's budget"
            message = (
                f"the call may cost up to ${reserved:.6f}, more than {where} of "
                f"${self.config.max_spend_usd:.4f} has left (this batch spent ${self.budget.spent_usd:.6f})"
            )
            return self._failure(request, (key, request_json), BUDGET_EXCEEDED, message, 0, 0.0)
        self.tally.calls_made += 1
        cost = 0.0
        try:
            sent = await send_with_retries(
                self.providers[request.provider],
                self.limiters[request.provider],
                request,
                prompt_tokens + request.params.max_tokens,
                self.config,
                key,
                self._warn,
            )
            self.tally.attempts += sent.attempts
            if sent.reply is None:
                return self._failure(
                    request,
                    (key, request_json),
                    sent.error_kind,
                    sent.error,
                    sent.attempts,
                    sent.latency_ms,
                )
            reply = sent.reply
            cost = price.cost(
                reply.tokens_in, reply.tokens_out, reply.tokens_cached, reply.tokens_cache_write
            )
            self.tally.tokens_in += reply.tokens_in
            self.tally.tokens_out += reply.tokens_out
            self.tally.tokens_cached += reply.tokens_cached
            self.tally.cost_usd += cost
            record, kind = reply_record(
                request,
                reply,
                cost_usd=cost,
                attempts=sent.attempts,
                latency_ms=sent.latency_ms,
                dagster_run_id=self.dagster_run_id,
                stage=self.stage,
                keyed=(key, request_json),
            )
            return Outcome(record, kind)
        finally:
            await self.budget.settle(reserved, cost)

    def _failure(
        self,
        request: LLMRequest,
        keyed: tuple[str, str],
        kind: str,
        message: str,
        attempts: int,
        latency_ms: float,
    ) -> Outcome:
        record = failure_record(
            request,
            keyed,
            kind,
            message,
            attempts=attempts,
            latency_ms=latency_ms,
            dagster_run_id=self.dagster_run_id,
            stage=self.stage,
        )
        return Outcome(record, kind)

    def _store(self, outcome: Outcome) -> None:
        if outcome.from_cache:
            self.tally.cache_hits += 1
            self.tally.cost_saved_usd += outcome.record.cost_usd
        elif self.writer is not None:
            self.writer.put(outcome.record)

    def _validate(self, request: LLMRequest, text: str | None) -> tuple[object, str | None]:
        """(parsed answer, None), or (None, what is wrong with it).

        A continuation's answer is judged by `check_continuation` (parsed: the continuation)."""
        if request.continuation is not None:
            try:
                return check_continuation(request.continuation, text or ""), None
            except ContinuationError as exc:
                return None, str(exc)
        return validate_answer(self.validator, request.output_schema is not None, text or "")
