"""`miko stale`, `miko lineage` and `miko export`: look at what the pipeline made."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from miko_assets.commands.common import open_warehouse


def add_commands(commands: argparse._SubParsersAction) -> None:
    stale = commands.add_parser("stale", help="partitions whose rows came from another prompt, model or parameters")
    stale.set_defaults(run=_stale)

    lineage = commands.add_parser("lineage", help="how one intention was produced")
    lineage.add_argument("intention_id")
    lineage.add_argument("--json", action="store_true", help="print the card as JSON")
    lineage.set_defaults(run=_lineage)

    export = commands.add_parser("export", help="write the knowledge base as Parquet, JSONL and ATOMIC TSV")
    export.add_argument("--out", type=Path, default=Path("exports/knowledge_base"))
    export.set_defaults(run=_export)


def _stale(args: argparse.Namespace) -> int:
    from miko_assets.stages.staleness import stale_partitions
    from miko_assets.stages.versions import current_stage_specs

    warehouse = open_warehouse(args)
    for spec in current_stage_specs().values():
        stale = stale_partitions(warehouse, spec.asset, spec.code_version)
        print(f"{spec.asset}: current {spec.code_version}")
        if not stale:
            print("  no stale partitions")
        for batch, versions in stale.items():
            print(f"  {batch}: made by {', '.join(str(v) for v in versions)}")
    return 0


def _lineage(args: argparse.Namespace) -> int:
    from miko_assets.warehouse.lineage import card_markdown, intention_card

    card = intention_card(open_warehouse(args), args.intention_id)
    print(json.dumps(card, indent=2, default=str, ensure_ascii=False) if args.json else card_markdown(card))
    return 0


def _export(args: argparse.Namespace) -> int:
    from miko_assets.stages.knowledge_base import export_knowledge_base

    for kind, path in export_knowledge_base(open_warehouse(args), args.out).items():
        print(f"{kind}: {path}")
    return 0
