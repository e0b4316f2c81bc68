"""`LLMRunner`: one response per request, in order, never raising for a request that fails.

A batch goes: one bulk cache lookup; then, per provider, a bounded pool of workers that pace
calls (RPM / TPM buckets), retry retryable errors with exponential backoff and jitter (or the
server's Retry-After), stop before the budget would be exceeded, validate structured answers
and make one repair call for an invalid one. Every result is queued for a background writer
that stores it in `llm_calls` while the batch runs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

from pydantic import BaseModel, Field, ValidationError

from miko_assets.llm.cache import CallRecord, CallWriter, LLMCallCache, utc_now
from miko_assets.llm.config import RunnerConfig
from miko_assets.llm.costs import (
    BudgetGuard,
    PriceBook,
    PriceTable,
    estimate_cost,
    prompt_tokens_estimate,
    reservation_usd,
)
from miko_assets.llm.event_loop import run_sync
from miko_assets.llm.models import LLMRequest, LLMResponse, Message, sha256_text
from miko_assets.llm.provider import (
    FAILED_FINISHES,
    FINISH_CONTENT_FILTER,
    FINISH_LENGTH,
    Provider,
    ProviderError,
    ProviderReply,
    redact,
)
from miko_assets.llm.providers import ProviderRegistry
from miko_assets.llm.ratelimit import RateLimiter
from miko_assets.warehouse.warehouse import Warehouse

log = logging.getLogger(__name__)

Validator = type[BaseModel] | Callable[[str], Any]
"""A pydantic model the answer's JSON must match, or a callable that parses text or raises."""

INVALID_OUTPUT = "invalid_output"
BUDGET_EXCEEDED = "budget_exceeded"
# Headroom over the per-attempt timeout before the runner itself gives up on a provider that
# does not honour it (providers enforce `timeout_s` themselves).
_TIMEOUT_GRACE_S = 5.0


class RunSummary(BaseModel):
    """Counts for one batch, ready for materialization metadata (`as_metadata`).

    `succeeded`, `failed` and `failures_by_reason` count requests; `calls_made` counts calls
    sent in this batch (repairs included, retries not), `attempts` every HTTP attempt. Tokens
    and `cost_usd` are for calls made now; `cost_saved_usd` is what the cache hits cost once.
    """

    requests: int = 0
    unique_requests: int = 0
    cache_hits: int = 0
    calls_made: int = 0
    attempts: int = 0
    repairs: int = 0
    succeeded: int = 0
    failed: int = 0
    failures_by_reason: dict[str, int] = Field(default_factory=dict)
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    cost_usd: float = 0.0
    cost_saved_usd: float = 0.0
    estimated_max_cost_usd: float = 0.0
    unpriced_models: list[str] = Field(default_factory=list)
    wall_s: float = 0.0

    def as_metadata(self) -> dict[str, Any]:
        """Flat `llm_*` entries (plain numbers, strings and one dict) for Dagster metadata."""
        return {f"llm_{name}": value for name, value in self.model_dump().items()}


class BatchResult(BaseModel):
    responses: list[LLMResponse]
    summary: RunSummary


class LLMRunner:
    """Runs batches of `LLMRequest` against the providers of a registry, through the call cache.

    Without a warehouse there is no cache and nothing is stored (benchmarks, quick checks).
    A batch closes the connections of the providers it used; they reopen on the next batch.
    """

    def __init__(
        self,
        providers: ProviderRegistry,
        warehouse: Warehouse | None = None,
        *,
        config: RunnerConfig | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        self.providers = providers
        self.cache = LLMCallCache(warehouse) if warehouse is not None else None
        self.config = config or RunnerConfig()
        self.prices = prices or PriceTable.load()

    @classmethod
    def from_env(
        cls, warehouse: Warehouse | None, env: Mapping[str, str] = os.environ
    ) -> LLMRunner:
        """Providers, limits, budget and prices all configured from the environment."""
        return cls(
            ProviderRegistry(env),
            warehouse,
            config=RunnerConfig.from_env(env),
            prices=PriceTable.load(env=env),
        )

    def run(
        self,
        requests: Sequence[LLMRequest],
        validator: Validator | None = None,
        *,
        dagster_run_id: str | None = None,
        stage: str | None = None,
    ) -> BatchResult:
        """Synchronous `arun` on a fresh event loop (also from a thread that has a running loop)."""
        return run_sync(
            lambda: self.arun(requests, validator, dagster_run_id=dagster_run_id, stage=stage)
        )

    async def arun(
        self,
        requests: Sequence[LLMRequest],
        validator: Validator | None = None,
        *,
        dagster_run_id: str | None = None,
        stage: str | None = None,
    ) -> BatchResult:
        """One response per request, in order. Identical requests are called once.

        With a `validator` (or a request `output_schema`) answers are parsed into
        `LLMResponse.parsed` and an invalid one gets one repair call.
        """
        batch = _Batch(self, validator, dagster_run_id, stage)
        return await batch.run(requests)


@dataclass(slots=True)
class _Tally:
    """The running counts of a batch (plain attributes: they change on every call)."""

    requests: int = 0
    unique_requests: int = 0
    cache_hits: int = 0
    calls_made: int = 0
    attempts: int = 0
    repairs: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    tokens_cached: int = 0
    cost_usd: float = 0.0
    cost_saved_usd: float = 0.0
    estimated_max_cost_usd: float = 0.0


@dataclass(slots=True)
class _Item:
    request: LLMRequest
    key: str
    request_json: str
    hit: CallRecord | None = None


@dataclass(slots=True)
class _Outcome:
    """One call's record, and the failure kind if it failed."""

    record: CallRecord
    kind: str | None
    from_cache: bool = False


class _Batch:
    """The state of one `arun`: limiters, budget, writer, counts."""

    def __init__(
        self,
        runner: LLMRunner,
        validator: Validator | None,
        dagster_run_id: str | None,
        stage: str | None,
    ) -> None:
        self.runner = runner
        self.config = runner.config
        self.cache = runner.cache
        self.validator = validator
        self.dagster_run_id = dagster_run_id
        self.stage = stage
        self.tally = _Tally()
        self.prices = PriceBook(runner.prices)
        self.budget = BudgetGuard(self.config.max_spend_usd)
        self.providers: dict[str, Provider] = {}
        self.limiters: dict[str, RateLimiter] = {}
        self.writer: CallWriter | None = None

    async def run(self, requests: Sequence[LLMRequest]) -> BatchResult:
        started = time.perf_counter()
        items: dict[str, _Item] = {}
        keys: list[str] = []
        for request in requests:
            request_json = request.request_json()
            key = sha256_text(request_json)
            keys.append(key)
            if key not in items:
                items[key] = _Item(request, key, request_json)
        self.tally.requests = len(keys)
        self.tally.unique_requests = len(items)

        if self.cache is not None and items:
            endpoints = {i.request.endpoint for i in items.values() if i.request.endpoint}
            if endpoints:
                await asyncio.to_thread(self.cache.key_endpoints_once, sorted(endpoints)[0])
            hits = await asyncio.to_thread(self.cache.get_many, list(items))
            for key, record in hits.items():
                items[key].hit = record

        results: dict[str, LLMResponse] = {}
        pending: list[_Item] = []
        for item in items.values():
            # A hit whose answer passes validation needs no event-loop work at all.
            response = self._from_hit(item) if item.hit is not None else None
            if response is not None:
                self.tally.cache_hits += 1
                self.tally.cost_saved_usd += response.cost_usd
                results[item.key] = response
            else:
                pending.append(item)

        if pending:
            await self._call_pending(pending, results)
        responses = [results[k] for k in keys]
        return BatchResult(responses=responses, summary=self._summary(responses, started))

    async def _call_pending(self, pending: list[_Item], results: dict[str, LLMResponse]) -> None:
        uncached = [i.request for i in pending if i.hit is None]
        estimate = estimate_cost(uncached, self.runner.prices)
        self.tally.estimated_max_cost_usd = estimate.max_cost_usd
        if self.config.max_spend_usd is not None and self.cache is not None and self.dagster_run_id:
            spent = await asyncio.to_thread(self.cache.spent_usd, self.dagster_run_id)
            self.budget = BudgetGuard(self.config.max_spend_usd, spent)

        groups: dict[str, list[_Item]] = {}
        for item in pending:
            groups.setdefault(item.request.provider, []).append(item)
        for name in groups:
            self.providers[name] = self.runner.providers.get(name)
            self.limiters[name] = RateLimiter(self.config.limits_for(name))

        if self.cache is not None:
            self.writer = CallWriter(
                self.cache, self.config.flush_every, self.config.flush_interval_s
            ).start()
        try:
            await asyncio.gather(
                *(self._drain(name, group, results) for name, group in groups.items())
            )
        finally:
            for provider in self.providers.values():
                await provider.aclose()
            if self.writer is not None:
                await asyncio.to_thread(self.writer.close)

    async def _drain(
        self, provider: str, group: list[_Item], results: dict[str, LLMResponse]
    ) -> None:
        queue = iter(group)

        async def worker() -> None:
            for item in queue:
                results[item.key] = await self._resolve_safely(item)

        workers = min(self.config.concurrency_for(provider), len(group))
        await asyncio.gather(*(worker() for _ in range(workers)))

    # -- one request ----------------------------------------------------------------------

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
            first = _Outcome(item.hit, None, from_cache=True)
        else:
            first = await self._call(item.request, item.key, item.request_json)
        if first.kind is not None:
            self._store(first)
            return _response(first)

        parsed, problem = self._validate(item.request, first.record.response_text)
        if problem is None:
            first.record.parsed_json = _to_json(parsed)
            self._store(first)
            return _response(first, parsed)
        if not self.config.repair:
            self._fail_invalid(first, problem)
            self._store(first)
            return _response(first)

        self.tally.repairs += 1
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
            second.record.parsed_json = _to_json(parsed)
            self._store(first)
            self._store(second)
            return _response(second, parsed, repair_of=first)

        self._fail_invalid(first, problem)
        if second.kind is None:
            self._fail_invalid(second, second_problem)
        self._store(first)
        self._store(second)
        failed = _response(second, repair_of=first)
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
            else _response(_Outcome(item.hit, None, from_cache=True), parsed)
        )

    async def _cached_or_call(self, request: LLMRequest) -> _Outcome:
        request_json = request.request_json()
        key = sha256_text(request_json)
        if self.cache is not None:
            hit = (await asyncio.to_thread(self.cache.get_many, [key])).get(key)
            if hit is not None:
                return _Outcome(hit, None, from_cache=True)
        return await self._call(request, key, request_json)

    async def _call(self, request: LLMRequest, key: str, request_json: str) -> _Outcome:
        """One call with pacing, retries and budget; a failure comes back as a failed outcome."""
        price = self.prices.price(request.provider, request.model)
        prompt_tokens = prompt_tokens_estimate(request, price)
        reserved = reservation_usd(request, price)
        if not await self.budget.reserve(reserved):
            return self._failure(
                request,
                key,
                request_json,
                BUDGET_EXCEEDED,
                f"the call may cost up to ${reserved:.4f}; the run has spent "
                f"${self.budget.spent_usd:.4f} "
                f"of its ${self.config.max_spend_usd:.4f} budget",
                attempts=0,
            )
        provider = self.providers[request.provider]
        limiter = self.limiters[request.provider]
        self.tally.calls_made += 1
        attempts, cost = 0, 0.0
        started = time.perf_counter()
        try:
            while True:
                attempts += 1
                self.tally.attempts += 1
                await limiter.acquire(prompt_tokens + request.params.max_tokens)
                sent = time.perf_counter()
                timeout_s = self.config.timeout_for(request.provider)
                try:
                    async with asyncio.timeout(timeout_s + _TIMEOUT_GRACE_S):
                        reply = await provider.send(request, timeout_s)
                    break
                except ProviderError as exc:
                    error = exc
                except TimeoutError:
                    error = ProviderError("timeout", f"no answer within {timeout_s:g}s", retryable=True)
                except Exception as exc:  # noqa: BLE001  (a provider bug is this request's failure)
                    error = ProviderError("provider_error", f"{type(exc).__name__}: {exc}")
                delay, reason = self._retry_delay(error, attempts)
                if delay is None:
                    return self._failure(
                        request,
                        key,
                        request_json,
                        error.kind,
                        f"{error.message}{reason}",
                        attempts=attempts,
                        latency_ms=(time.perf_counter() - started) * 1000,
                    )
                if error.retry_after_s is not None:
                    limiter.pause(delay)
                log.info("call %s: %s; retry %d in %.2fs", key[:12], error, attempts, delay)
                await asyncio.sleep(delay)
            cost = price.cost(
                reply.tokens_in, reply.tokens_out, reply.tokens_cached, reply.tokens_cache_write
            )
            return self._replied(
                request,
                key,
                request_json,
                reply,
                cost,
                attempts,
                (time.perf_counter() - sent) * 1000,
            )
        finally:
            await self.budget.settle(reserved, cost)

    def _retry_delay(self, error: ProviderError, attempts: int) -> tuple[float | None, str]:
        """Seconds to wait before the next attempt, or `None` and why there is none."""
        if not error.retryable:
            return None, ""
        if attempts >= self.config.max_attempts:
            return None, f" (gave up after {attempts} attempts)"
        if error.retry_after_s is not None:
            if error.retry_after_s > self.config.max_retry_after_s:
                too_long = (
                    f" (Retry-After {error.retry_after_s:g}s is longer than "
                    f"{self.config.max_retry_after_s:g}s)"
                )
                return None, too_long
            # A little jitter so workers told to wait the same time do not return together.
            return error.retry_after_s * random.uniform(1.0, 1.2), ""
        backoff = min(self.config.backoff_max_s, self.config.backoff_base_s * 2 ** (attempts - 1))
        return backoff * random.uniform(0.5, 1.0), ""

    # -- records --------------------------------------------------------------------------

    def _replied(
        self,
        request: LLMRequest,
        key: str,
        request_json: str,
        reply: ProviderReply,
        cost: float,
        attempts: int,
        latency_ms: float,
    ) -> _Outcome:
        self.tally.tokens_in += reply.tokens_in
        self.tally.tokens_out += reply.tokens_out
        self.tally.tokens_cached += reply.tokens_cached
        self.tally.cost_usd += cost
        record, kind = reply_record(
            request,
            reply,
            cost_usd=cost,
            attempts=attempts,
            latency_ms=latency_ms,
            dagster_run_id=self.dagster_run_id,
            stage=self.stage,
            keyed=(key, request_json),
        )
        return _Outcome(record, kind)

    def _failure(
        self,
        request: LLMRequest,
        key: str,
        request_json: str,
        kind: str,
        message: str,
        *,
        attempts: int,
        latency_ms: float = 0.0,
    ) -> _Outcome:
        record = CallRecord(
            call_id=key,
            provider=request.provider,
            model=request.model,
            request_json=request_json,
            status="failed",
            error=redact(f"{kind}: {message}"),
            attempts=attempts,
            latency_ms=latency_ms,
            dagster_run_id=self.dagster_run_id,
            stage=self.stage,
            created_at=utc_now(),
            endpoint=request.endpoint,
        )
        return _Outcome(record, kind)

    def _fail_invalid(self, outcome: _Outcome, problem: str) -> None:
        outcome.record.status = "failed"
        outcome.record.error = redact(f"{INVALID_OUTPUT}: {problem}")
        outcome.kind = INVALID_OUTPUT

    def _store(self, outcome: _Outcome) -> None:
        if outcome.from_cache:
            self.tally.cache_hits += 1
            self.tally.cost_saved_usd += outcome.record.cost_usd
        elif self.writer is not None:
            self.writer.put(outcome.record)

    def _validate(self, request: LLMRequest, text: str | None) -> tuple[Any, str | None]:
        """(parsed answer, None), or (None, what is wrong with it)."""
        return validate_answer(self.validator, request.output_schema is not None, text or "")

    def _summary(self, responses: list[LLMResponse], started: float) -> RunSummary:
        reasons = Counter(r.error_kind or "unknown" for r in responses if r.status != "ok")
        return RunSummary(
            **dataclasses.asdict(self.tally),
            succeeded=len(responses) - sum(reasons.values()),
            failed=sum(reasons.values()),
            failures_by_reason=dict(sorted(reasons.items())),
            unpriced_models=sorted(self.prices.unpriced),
            wall_s=time.perf_counter() - started,
        )


def reply_record(
    request: LLMRequest,
    reply: ProviderReply,
    *,
    cost_usd: float,
    attempts: int = 1,
    latency_ms: float = 0.0,
    dagster_run_id: str | None = None,
    stage: str | None = None,
    keyed: tuple[str, str] | None = None,
) -> tuple[CallRecord, str | None]:
    """The `llm_calls` row for a provider's reply, and its failure kind (`None` if usable).

    A `length`, `content_filter` or `refusal` finish, or no text, is a failure; the text is
    kept. Whatever else produces replies (a batch-API collector) stores them with this and
    `LLMCallCache.put_many`. `keyed` passes an already computed (cache key, request JSON).
    """
    if keyed is None:
        request_json = request.request_json()
        keyed = (sha256_text(request_json), request_json)
    kind, error = None, None
    if reply.finish_reason in FAILED_FINISHES:
        kind, error = reply.finish_reason, _finish_message(reply, request)
    elif reply.text is None:
        kind, error = "empty_response", "empty_response: the provider returned no text"
    record = CallRecord(
        call_id=keyed[0],
        provider=request.provider,
        model=request.model,
        request_json=keyed[1],
        response_text=reply.text,
        status="failed" if kind else "ok",
        error=error,
        finish_reason=reply.finish_reason,
        tokens_in=reply.tokens_in,
        tokens_out=reply.tokens_out,
        tokens_cached=reply.tokens_cached,
        cost_usd=cost_usd,
        latency_ms=latency_ms,
        attempts=attempts,
        provider_request_id=reply.provider_request_id,
        dagster_run_id=dagster_run_id,
        stage=stage,
        created_at=utc_now(),
        endpoint=request.endpoint,
    )
    return record, kind


def validate_answer(
    validator: Validator | None, expects_json: bool, text: str
) -> tuple[Any, str | None]:
    """Parse an answer: with a pydantic model its JSON, with a callable its result, with only a
    schema plain JSON; without any of them the text is the answer and `parsed` is `None`."""
    try:
        if isinstance(validator, type) and issubclass(validator, BaseModel):
            return validator.model_validate_json(json_candidate(text)), None
        if validator is not None:
            return cast("Callable[[str], Any]", validator)(text), None
        if expects_json:
            return json.loads(json_candidate(text)), None
        return None, None
    except ValidationError as exc:
        return None, "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}"
            for e in exc.errors()[:5]
        )
    except Exception as exc:  # noqa: BLE001  (any validator error means an unusable answer)
        return None, f"{type(exc).__name__}: {exc}"


def json_candidate(text: str) -> str:
    """The JSON inside an answer: a fenced block's body, or the outermost `{...}` amid prose."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[-1].rsplit("```", 1)[0].strip()
    if stripped[:1] not in ("{", "[") and "{" in stripped:
        stripped = stripped[stripped.index("{") : stripped.rindex("}") + 1]
    return stripped


def repair_request(request: LLMRequest, answer: str, problem: str) -> LLMRequest:
    """The follow-up call for an invalid answer: the conversation, the answer, what is wrong."""
    wanted = (
        "Reply with only a JSON object that matches the required schema."
        if request.output_schema is not None
        else "Follow the required answer format exactly."
    )
    instruction = f"Your previous answer could not be used: {problem[:1000]}\n{wanted}"
    return request.model_copy(
        update={
            "messages": (
                *request.messages,
                Message(role="assistant", content=answer),
                Message(role="user", content=instruction),
            )
        }
    )


def _finish_message(reply: ProviderReply, request: LLMRequest) -> str:
    if reply.finish_reason == FINISH_LENGTH:
        return f"length: the answer reached max_tokens={request.params.max_tokens} and was cut off"
    if reply.finish_reason == FINISH_CONTENT_FILTER:
        return "content_filter: the provider's content filter withheld the answer"
    return redact(f"refusal: the model refused: {(reply.text or '')[:200]}")


def _response(
    outcome: _Outcome, parsed: Any = None, repair_of: _Outcome | None = None
) -> LLMResponse:
    record = outcome.record
    earlier = repair_of.record if repair_of is not None else None
    return LLMResponse(
        call_id=record.call_id,
        status="ok" if outcome.kind is None else "failed",
        error_kind=outcome.kind,
        error=record.error if outcome.kind else None,
        text=record.response_text,
        parsed=parsed,
        finish_reason=record.finish_reason,
        tokens_in=record.tokens_in + (earlier.tokens_in if earlier else 0),
        tokens_out=record.tokens_out + (earlier.tokens_out if earlier else 0),
        tokens_cached=record.tokens_cached + (earlier.tokens_cached if earlier else 0),
        cost_usd=record.cost_usd + (earlier.cost_usd if earlier else 0.0),
        latency_ms=record.latency_ms + (earlier.latency_ms if earlier else 0.0),
        provider_request_id=record.provider_request_id,
        attempts=record.attempts + (earlier.attempts if earlier else 0),
        from_cache=outcome.from_cache,
        repair_of=earlier.call_id if earlier else None,
    )


def _to_json(parsed: Any) -> str | None:
    if parsed is None:
        return None
    if isinstance(parsed, BaseModel):
        return parsed.model_dump_json()
    return json.dumps(parsed, ensure_ascii=False, default=str)
