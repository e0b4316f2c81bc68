"""A backfill routed through the provider batch APIs, at half the online price.

Stage by stage in pipeline order (each stage's requests quote the answers of the one before):
submit each partition's requests that are not cached yet as one provider batch, poll until
those batches have ended and their answers are collected into `llm_calls`, then materialize the
stage's partitions, which the cache serves (items that failed in the batch are made online
there, with the runner's retries and budget). A stage whose provider has no batch API is
materialized directly. Interrupted, the same call resumes: cached and in-flight requests are
not submitted again, and the pending batches are waited for.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel

from miko_assets.distill.stages import GENERATION_STAGES
from miko_assets.llm.batch import collect_batches, list_batches, submit_batch
from miko_assets.llm.batch_api import BATCH_PROVIDERS
from miko_assets.llm.costs import BATCH_PRICE_FACTOR, PriceTable
from miko_assets.llm.models import LLMRequest, LLMResponse
from miko_assets.stages.captions import OFFLINE_PROVIDERS
from miko_assets.stages.common import StageRun
from miko_assets.stages.estimate import (
    SamplePost,
    TeacherEstimate,
    estimate_stages,
    recorded_answer_lengths,
)
from miko_assets.stages.versions import current_stage_specs, stage_inputs, stage_rows
from miko_assets.warehouse.warehouse import Warehouse

Materialize = Callable[[str, Sequence[str]], None]
"""Materializes an asset (`captions`, ...) for the given partitions; raises
`MaterializationFailed` if that fails."""


class MaterializationFailed(RuntimeError):
    """A stage's partition could not be materialized; the backfill stops before the next stage."""


class StageOutcome(BaseModel):
    asset: str
    partitions: list[str]
    through_batch: bool
    submitted: int = 0
    batch_ids: list[str] = []
    batch_cost_usd: float = 0.0
    failed_items: int = 0


def partition_requests(
    warehouse: Warehouse, asset: str, partition: str, env: Mapping[str, str] = os.environ
) -> list[LLMRequest]:
    """The requests the asset makes when it materializes `partition`, built by its own row
    builder over the partition's rows, with a completer that records them and sends nothing."""
    spec = current_stage_specs(env)[asset]
    inputs = stage_inputs(warehouse, asset, partition)
    if inputs[0].empty:
        raise LookupError(f"partition {partition!r} has no posts: materialize `posts` for it first")
    recorded: list[LLMRequest] = []

    def record(requests: Sequence[LLMRequest], validate: object = None) -> list[LLMResponse]:
        recorded.extend(requests)
        return [
            LLMResponse(call_id=r.cache_key(), status="failed", error_kind="not_sent")
            for r in requests
        ]

    stage_rows(asset)(*inputs, StageRun.start(spec.config, None, spec.code_version), record)
    return recorded


def backfill_estimate(
    warehouse: Warehouse, partitions: Sequence[str], env: Mapping[str, str] = os.environ
) -> TeacherEstimate:
    """What the three stages cost for the partitions' posts, as configured: upper bound and
    expected, online and batch (cached answers, which cost nothing, are not subtracted)."""
    rows = warehouse.rows(
        "SELECT text, image_path FROM posts WHERE batch IN (SELECT unnest(?)) ORDER BY batch, post_id",
        [list(partitions)],
    )
    if not rows:
        raise LookupError(f"no posts in partitions {', '.join(partitions)}: materialize `posts` first")
    sample = [SamplePost(text, Path(image) if image else None) for text, image in rows]
    configs = {spec.asset: spec.config for spec in current_stage_specs(env).values()}
    return estimate_stages(configs, sample, len(sample), PriceTable.load(env=env), recorded_answer_lengths(warehouse))


def describe_costs(estimate: TeacherEstimate, assets: Sequence[str]) -> str:
    """One line: the upper bound (and expected cost, when measured) online and in batch."""
    stages = set(assets)
    rows = [r for r in (estimate.caption_at(estimate.configured_image), *estimate.later) if r.stage in stages]
    upper = sum(r.upper_usd for r in rows)
    text = (
        f"{estimate.posts:,} posts, {', '.join(sorted(stages))} with {estimate.teacher}: at most "
        f"{_usd(upper)} online, {_usd(upper * BATCH_PRICE_FACTOR)} in batch"
    )
    if rows and all(r.expected_usd is not None for r in rows):
        expected = sum(r.expected_usd or 0.0 for r in rows)
        text += f"; expected {_usd(expected)} online, {_usd(expected * BATCH_PRICE_FACTOR)} in batch"
    return text


def _usd(value: float) -> str:
    """Dollars and cents, or four decimals below a dollar (small backfills cost fractions of a cent)."""
    return f"${value:,.2f}" if value >= 1 else f"${value:.4f}"


def run_batch_backfill(
    warehouse: Warehouse,
    partitions_by_asset: Mapping[str, Sequence[str]],
    materialize: Materialize,
    *,
    env: Mapping[str, str] = os.environ,
    poll_interval_s: float = 60.0,
    timeout_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    progress: Callable[[str], None] = print,
) -> list[StageOutcome]:
    """Route the backfill of each asset's partitions through the batch APIs, stage by stage."""
    specs = current_stage_specs(env)
    outcomes: list[StageOutcome] = []
    for asset in GENERATION_STAGES:
        partitions = list(partitions_by_asset.get(asset, ()))
        if not partitions:
            continue
        provider = specs[asset].config.provider
        if provider not in BATCH_PROVIDERS or (asset == "captions" and provider in OFFLINE_PROVIDERS):
            progress(f"{asset}: provider {provider!r} has no batch API; materializing {len(partitions)} partitions directly")
            materialize(asset, partitions)
            outcomes.append(StageOutcome(asset=asset, partitions=partitions, through_batch=False))
            continue
        outcome = StageOutcome(asset=asset, partitions=partitions, through_batch=True)
        for partition in partitions:
            submission = submit_batch(
                warehouse,
                partition_requests(warehouse, asset, partition, env),
                env,
                stage=asset,
                asset=asset,
                partition_key=partition,
            )
            outcome.submitted += submission.submitted
            if submission.batch_id:
                outcome.batch_ids.append(submission.batch_id)
            progress(
                f"{asset} {partition}: {submission.unique_requests} requests, {submission.cached} cached, "
                f"{submission.in_flight} in a pending batch, {submission.submitted} submitted"
                + (f" as {submission.provider} batch {submission.batch_id}" if submission.batch_id else "")
            )
        _wait_for_batches(warehouse, asset, partitions, env, poll_interval_s, timeout_s, sleep, progress)
        collected = [b for b in list_batches(warehouse) if b.asset == asset and b.batch_id in outcome.batch_ids]
        outcome.batch_cost_usd = sum(b.cost_usd or 0.0 for b in collected)
        outcome.failed_items = sum(b.n_failed or 0 for b in collected)
        progress(
            f"{asset}: batches collected (${outcome.batch_cost_usd:.4f}, {outcome.failed_items} failed items, "
            "made online next); materializing from the cache"
        )
        materialize(asset, partitions)
        outcomes.append(outcome)
    return outcomes


def _wait_for_batches(
    warehouse: Warehouse,
    asset: str,
    partitions: Sequence[str],
    env: Mapping[str, str],
    poll_interval_s: float,
    timeout_s: float | None,
    sleep: Callable[[float], None],
    progress: Callable[[str], None],
) -> None:
    """Poll until no batch of the asset's partitions is pending (those submitted by an earlier,
    interrupted call included)."""
    started = time.monotonic()
    while True:
        summary = collect_batches(warehouse, env)
        still = [
            b for b in list_batches(warehouse, pending_only=True)
            if b.asset == asset and b.partition_key in partitions
        ]
        if not still:
            return
        if timeout_s is not None and time.monotonic() - started > timeout_s:
            raise TimeoutError(
                f"{len(still)} {asset} batches still pending after {timeout_s:.0f} s; run the same "
                "command again later to resume (nothing is submitted twice)"
            )
        progress(f"{asset}: {len(still)} batches pending ({summary.describe()}); next poll in {poll_interval_s:.0f} s")
        sleep(poll_interval_s)
