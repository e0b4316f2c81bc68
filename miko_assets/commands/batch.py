"""`miko batch submit | collect | status`: a stage's calls for one partition through a provider
batch API at half the online price; collected answers serve the partition's materialization."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from miko_assets.commands.common import open_warehouse
from miko_assets.llm.models import LLMRequest, LLMResponse
from miko_assets.llm.provider import ProviderError
from miko_assets.stages.versions import GENERATION_STAGES
from miko_assets.warehouse.warehouse import Warehouse

# Either name of a stage: its asset (`captions`) or its configuration (`caption`).
_ASSET_OF = {name: asset for asset, stage in GENERATION_STAGES for name in (asset, stage)}


def add_commands(commands: argparse._SubParsersAction) -> None:
    batch = commands.add_parser(
        "batch", help="run a stage's calls through a provider batch API (half price, collected later)"
    )
    actions = batch.add_subparsers(dest="batch_command", required=True)

    submit = actions.add_parser(
        "submit", help="submit the calls a stage would make for a partition and are not cached yet"
    )
    submit.add_argument("--stage", required=True, choices=sorted(_ASSET_OF))
    submit.add_argument("--batch", required=True, help="the post_batches partition")
    submit.set_defaults(run=_submit)

    collect = actions.add_parser(
        "collect", help="poll the pending batches once; store the answers of those that ended"
    )
    collect.set_defaults(run=_collect)

    status = actions.add_parser("status", help="the recorded batches (no provider call)")
    status.add_argument("--pending", action="store_true", help="only the pending batches")
    status.set_defaults(run=_status)


def partition_requests(warehouse: Warehouse, asset: str, partition: str) -> list[LLMRequest]:
    """The requests the asset makes when it materializes `partition`, built by its own row
    builder over the partition's rows, with a completer that records them and sends nothing."""
    from miko_assets.stages.common import StageRun
    from miko_assets.stages.versions import current_stage_specs, stage_inputs, stage_rows

    spec = current_stage_specs()[asset]
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


def _submit(args: argparse.Namespace) -> int:
    from miko_assets.llm.batch import submit_batch
    from miko_assets.llm.batch_api import BATCH_PROVIDERS
    from miko_assets.stages.versions import current_stage_specs

    asset = _ASSET_OF[args.stage]
    spec = current_stage_specs()[asset]
    if spec.config.provider not in BATCH_PROVIDERS:
        raise ValueError(
            f"stage {spec.stage!r} uses provider {spec.config.provider!r}, which has no batch API "
            f"(set MIKO_{spec.stage.upper()}_PROVIDER to one of {', '.join(BATCH_PROVIDERS)})"
        )
    warehouse = open_warehouse(args)
    requests = partition_requests(warehouse, asset, args.batch)
    try:
        submission = submit_batch(
            warehouse, requests, stage=spec.stage, asset=asset, partition_key=args.batch
        )
    except ProviderError as exc:
        print(f"miko batch submit: the provider refused the batch: {exc}", file=sys.stderr)
        return 1
    print(
        f"{asset} {args.batch}: {submission.requests} requests, {submission.cached} cached, "
        f"{submission.in_flight} already in a pending batch, {submission.submitted} submitted "
        f"(at most ${submission.estimated_max_cost_usd:.4f} at the batch price)"
    )
    if submission.batch_id:
        print(f"{submission.provider} batch {submission.batch_id}: collect it with `miko batch collect`")
    return 0


def _collect(args: argparse.Namespace) -> int:
    from miko_assets.llm.batch import collect_batches

    summary = collect_batches(open_warehouse(args))
    print(summary.describe())
    for batch in summary.collected:
        target = f" for {batch.asset} {batch.partition_key}" if batch.partition_key else ""
        print(
            f"  {batch.provider} {batch.batch_id}{target}: {batch.provider_status}, "
            f"{batch.n_succeeded} answers, {batch.n_failed} failed items, ${batch.cost_usd:.4f}"
        )
    for batch_id, error in summary.errors.items():
        print(f"  {batch_id}: could not be polled: {error}", file=sys.stderr)
    if any(b.n_failed for b in summary.collected):
        print("failed items are made online when their partition is materialized")
    return 1 if summary.errors else 0


def _status(args: argparse.Namespace) -> int:
    from miko_assets.llm.batch import list_batches

    batches = list_batches(open_warehouse(args), pending_only=args.pending)
    if not batches:
        print("no batches")
    for b in batches:
        target = f" {b.asset} {b.partition_key}" if b.partition_key else ""
        state = b.provider_status or "submitted"
        line = f"{b.batch_id} {b.provider}{target}: {b.status} ({state}), {b.n_items} items"
        if b.collected_at is not None:
            line += f", {b.n_succeeded} answers, {b.n_failed} failed, ${b.cost_usd or 0:.4f}"
        if b.error:
            line += f"; last poll failed: {b.error}"
        print(f"{line}; submitted {b.created_at:%Y-%m-%d %H:%M} UTC")
    return 0
