"""`miko annotate export | import | import-miko-release`: the human annotation round trip."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

from miko_assets.annotate.stages import STAGES
from miko_assets.commands.common import open_warehouse

if TYPE_CHECKING:
    import dagster as dg

    from miko_assets.stages.human_annotations import ImportOutcome
    from miko_assets.warehouse.warehouse import Warehouse

LOCAL_FILES_ROOT_ENV = "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"


def add_commands(commands: argparse._SubParsersAction) -> None:
    annotate = commands.add_parser("annotate", help="export tasks to Label Studio and import human annotations")
    actions = annotate.add_subparsers(dest="action", required=True)

    export = actions.add_parser("export", help="write Label Studio tasks and the labelling config for one stage")
    export.add_argument("--batch", action="append", default=[], help="a post_batches partition (repeatable; default all)")
    export.add_argument("--stage", choices=STAGES, default="plausibility",
                        help="typicality exports the intentions the human majority judged plausible")
    export.add_argument("--out", type=Path, required=True, help="folder for <stage>-tasks.json and <stage>-config.xml")
    export.add_argument("--image-root", type=Path, default=os.environ.get(LOCAL_FILES_ROOT_ENV) or None,
                        help=f"Label Studio's local-files document root (default ${LOCAL_FILES_ROOT_ENV}); "
                             "without it images are left out")
    export.set_defaults(run=_export)

    labelstudio = actions.add_parser("import", help="import a Label Studio JSON export (several annotators)")
    labelstudio.add_argument("path", type=Path)
    labelstudio.set_defaults(run=_import, kind="labelstudio")

    release = actions.add_parser("import-miko-release", help="import MIKO's released accept labels (annotator miko-release)")
    release.add_argument("path", type=Path, help="MIKO's released train.json")
    release.set_defaults(run=_import, kind="miko_release")


def _export(args: argparse.Namespace) -> int:
    from miko_assets.stages.annotation import export_items, write_export

    items = export_items(open_warehouse(args), args.stage, args.batch, args.image_root)
    if not items:
        raise LookupError(
            f"no {args.stage} tasks to export: materialize `annotation_tasks` first"
            + (" and import stage-1 annotations" if args.stage == "typicality" else "")
        )
    tasks, config = write_export(items, args.stage, args.out)
    print(f"{len(items)} {args.stage} tasks: {tasks}")
    print(f"labelling config: {config}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from miko_assets.instance import open_instance
    from miko_assets.stages.human_annotations import import_file

    warehouse = open_warehouse(args, create=True)
    outcome = import_file(warehouse, args.kind, args.path)
    with open_instance() as instance:
        _record_import(instance, outcome, warehouse)
    print(
        f"{outcome.source} (sha256 {outcome.source_sha256[:12]}): {outcome.rows_read} annotations read, "
        f"{outcome.rows_added} added, {outcome.rows_read - outcome.rows_added} already stored"
    )
    for reason in outcome.skipped:
        print(f"  skipped: {reason}")
    return 0


def _record_import(instance: dg.DagsterInstance, outcome: ImportOutcome, warehouse: Warehouse) -> None:
    """Record the import as a materialization of `human_annotations`, so the UI shows it. Not
    through the asset definitions: building them reads settings this command does not use."""
    import dagster as dg

    total = warehouse.rows("SELECT count(*) FROM human_annotations")[0][0]
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=dg.AssetKey("human_annotations"),
            description=f"imported {outcome.kind} file {outcome.source}",
            metadata={**outcome.as_metadata(), "source_path": dg.MetadataValue.path(outcome.path), "dagster/row_count": total},
        )
    )
