"""What a batch produces: the `llm_calls` row of each call, the response handed back for each
request, and the batch's counts (`RunSummary`)."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from miko_assets.clock import utc_now
from miko_assets.llm.cache import CallRecord
from miko_assets.llm.models import LLMRequest, LLMResponse, sha256_text
from miko_assets.llm.provider_interface import (
    FAILED_FINISHES,
    FINISH_CONTENT_FILTER,
    FINISH_LENGTH,
    ProviderReply,
    redact,
)
from miko_assets.llm.validation import INVALID_OUTPUT


class RunSummary(BaseModel):
    """Counts for one batch, ready for materialization metadata (`as_metadata`).

    `succeeded`, `failed` and `failures_by_reason` count requests; `calls_made` counts calls
    sent in this batch (repairs included, retries not), `attempts` every HTTP attempt. Tokens
    and `cost_usd` are for calls made now; `cost_saved_usd` is what the cache hits cost once.
    Under a spending cap, a batch that made calls names its budget, the cap and what the budget
    had left when the batch ended.
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
    budget_name: str | None = None
    budget_cap_usd: float | None = None
    budget_remaining_usd: float | None = None
    wall_s: float = 0.0

    def as_metadata(self) -> dict[str, Any]:
        """Flat `llm_*` entries (plain numbers, strings and one dict) for Dagster metadata."""
        return {f"llm_{name}": value for name, value in self.model_dump().items()}


class BatchResult(BaseModel):
    responses: list[LLMResponse]
    summary: RunSummary


@dataclass(slots=True)
class Tally:
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

    def summary(
        self, responses: list[LLMResponse], unpriced: set[str], started: float
    ) -> RunSummary:
        """The counts with the outcome of each response, and the wall time since `started`."""
        reasons = Counter(r.error_kind or "unknown" for r in responses if r.status != "ok")
        return RunSummary(
            **dataclasses.asdict(self),
            succeeded=len(responses) - sum(reasons.values()),
            failed=sum(reasons.values()),
            failures_by_reason=dict(sorted(reasons.items())),
            unpriced_models=sorted(unpriced),
            wall_s=time.perf_counter() - started,
        )


@dataclass(slots=True)
class Outcome:
    """One call's record, and the failure kind if it failed."""

    record: CallRecord
    kind: str | None
    from_cache: bool = False

    def fail_invalid(self, problem: str) -> None:
        """Mark a completed answer as unusable."""
        self.record.status = "failed"
        self.record.error = redact(f"{INVALID_OUTPUT}: {problem}")
        self.kind = INVALID_OUTPUT


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


def failure_record(
    request: LLMRequest,
    keyed: tuple[str, str],
    kind: str,
    message: str,
    *,
    attempts: int,
    latency_ms: float = 0.0,
    dagster_run_id: str | None = None,
    stage: str | None = None,
) -> CallRecord:
    """The `llm_calls` row of a call that got no usable reply (`keyed`: cache key, request JSON)."""
    return CallRecord(
        call_id=keyed[0],
        provider=request.provider,
        model=request.model,
        request_json=keyed[1],
        status="failed",
        error=redact(f"{kind}: {message}"),
        attempts=attempts,
        latency_ms=latency_ms,
        dagster_run_id=dagster_run_id,
        stage=stage,
        created_at=utc_now(),
        endpoint=request.endpoint,
    )


def response_for(
    outcome: Outcome, parsed: Any = None, repair_of: Outcome | None = None
) -> LLMResponse:
    """What the caller gets for one request; after a repair, both calls' usage adds up."""
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


def _finish_message(reply: ProviderReply, request: LLMRequest) -> str:
    if reply.finish_reason == FINISH_LENGTH:
        return f"length: the answer reached max_tokens={request.params.max_tokens} and was cut off"
    if reply.finish_reason == FINISH_CONTENT_FILTER:
        return "content_filter: the provider's content filter withheld the answer"
    return redact(f"refusal: the model refused: {(reply.text or '')[:200]}")
