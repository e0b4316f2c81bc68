"""`miko stale`, `miko lineage`, `miko export`, `miko retry-failed` and `miko fail-lost-runs`: inspect and
repair what the pipeline made."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from miko_assets.commands.common import open_warehouse
from miko_assets.commands.progress import progress

# Parquet, JSONL, ATOMIC TSV and the data card.
EXPORT_FILES = 4


def add_commands(commands: argparse._SubParsersAction) -> None:
    stale = commands.add_parser("stale", help="partitions whose rows came from another prompt, model or parameters")
    stale.set_defaults(run=_stale)

    lineage = commands.add_parser(
        "lineage", help="how one intention was produced: an intention id (its newest version) or a version id"
    )
    lineage.add_argument("intention_id", help="an intention id, or a version id (<intention id>.<hash>)")
    lineage.add_argument("--json", action="store_true", help="print the card as JSON")
    lineage.add_argument(
        "--diff", nargs="?", const="", default=None, metavar="OTHER_VERSION",
        help="compare two versions: with OTHER_VERSION, those two; alone, a version with the one that replaced it "
             "(or an intention's newest version with the one before)",
    )
    lineage.set_defaults(run=_lineage)

    export = commands.add_parser("export", help="write the knowledge base as Parquet, JSONL and ATOMIC TSV")
    export.add_argument("--out", type=Path, default=Path("exports/knowledge_base"))
    export.set_defaults(run=_export)

    retry = commands.add_parser(
        "retry-failed",
        help="materialize again the partitions with failed generations (only the failed calls are made)",
    )
    retry.add_argument("--dry-run", action="store_true", help="list them, run nothing")
    retry.set_defaults(run=_retry_failed)

    lost = commands.add_parser(
        "fail-lost-runs",
        help="after `dagster dev` or the machine died: mark its interrupted runs failed, so run retries resume them",
    )
    lost.add_argument("--force", action="store_true", help="even if a Dagster daemon seems to be running")
    lost.set_defaults(run=_fail_lost_runs)


def _stale(args: argparse.Namespace) -> int:
    import os

    from miko_assets.stages.configuration import active_configuration
    from miko_assets.stages.staleness import stale_report
    from miko_assets.stages.versions import current_stage_specs

    warehouse = open_warehouse(args)
    active = active_configuration(warehouse, current_stage_specs(), os.environ)
    print(f"judged against {active.source}")
    for asset, record in active.records.items():
        print(f"{asset}: current {record.code_version}")
        print(f"  {record.in_words()}; environment overrides: {record.overrides_in_words()}")
        if asset in active.shell_differs:
            print(f"  (this shell would use another configuration: {'; '.join(active.shell_differs[asset])})")
        report = stale_report(warehouse, record)
        if not report:
            print("  no stale partitions")
        for partition in report:
            print(f"  {partition.batch}: made by {', '.join(partition.made_by)}")
            print(f"    what changed: {'; '.join(partition.why)}")
    return 0


def _lineage(args: argparse.Namespace) -> int:
    from miko_assets.warehouse.lineage import card_markdown, diff_markdown, intention_card, intention_diff

    warehouse = open_warehouse(args)
    with warehouse.session():  # one open of the file for every lookup
        if args.diff is not None:
            answer = intention_diff(warehouse, args.intention_id, args.diff or None)
            text = diff_markdown(answer)
        else:
            answer = intention_card(warehouse, args.intention_id)
            text = card_markdown(answer)
    print(json.dumps(answer, indent=2, default=str, ensure_ascii=False) if args.json else text)
    return 0


def _export(args: argparse.Namespace) -> int:
    from miko_assets.stages.knowledge_base import export_knowledge_base

    warehouse = open_warehouse(args)
    with progress(f"export to {args.out}", EXPORT_FILES, "files") as shown:
        paths = export_knowledge_base(warehouse, args.out, on_written=lambda kind, _: shown.advance(detail=kind))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def _retry_failed(args: argparse.Namespace) -> int:
    import dagster as dg

    from miko_assets.definitions import defs
    from miko_assets.distill.stages import GENERATION_STAGES
    from miko_assets.instance import open_instance
    from miko_assets.stages.failures import failed_partitions

    warehouse = open_warehouse(args)
    failed = failed_partitions(warehouse)
    if not failed:
        print("no failed generations")
        return 0
    # A partition is re-run from its first failed stage on, so later stages see the fixed rows.
    order = list(GENERATION_STAGES)
    batches = sorted({b for per_asset in failed.values() for b in per_asset})
    ok = True
    with open_instance() as instance, progress("retry-failed", len(batches), "partitions") as shown:
        for batch in batches:
            first = min(order.index(a) for a, per_asset in failed.items() if batch in per_asset)
            assets = order[first:]
            shown.note(f"{batch}: {', '.join(f'{failed[a][batch]} failed {a}' for a in order if batch in failed.get(a, {}))}"
                       f" -> materializing {', '.join(assets)}")
            if args.dry_run:
                continue
            job = defs.resolve_job_def("distill_job")
            outcome = job.execute_in_process(
                partition_key=batch, instance=instance, raise_on_error=False,
                asset_selection=[dg.AssetKey(a) for a in assets],
            )
            ok &= outcome.success
            shown.note(f"  run {outcome.run_id}: {'ok' if outcome.success else 'FAILED'}")
            shown.advance(detail=batch)
    remaining = failed_partitions(warehouse)
    print(f"failed rows left: {sum(sum(v.values()) for v in remaining.values())}")
    return 0 if ok else 1


# A live daemon beats every few seconds; a minute of silence means `dagster dev` is down.
DAEMON_SILENCE_S = 60.0


def _fail_lost_runs(args: argparse.Namespace) -> int:
    from miko_assets.instance import daemon_heartbeat_age_s, fail_lost_runs, open_instance

    with open_instance() as instance:
        age = daemon_heartbeat_age_s(instance)
        if age is not None and age < DAEMON_SILENCE_S and not args.force:
            raise ValueError(f"a Dagster daemon beat {age:.0f}s ago: stop `dagster dev` first (or pass --force)")
        lost = fail_lost_runs(instance, "its run worker was lost (marked failed by `miko fail-lost-runs`)")
    for run_id in lost:
        print(f"marked failed: {run_id}")
    print(f"{len(lost)} lost runs marked failed; start `dagster dev` and run retries resume them")
    return 0
