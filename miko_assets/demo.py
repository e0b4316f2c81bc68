"""`miko demo`: the bundled sample through every asset, in a real Dagster instance."""

from __future__ import annotations

from pathlib import Path

from miko_assets.assets.ingest import register_batches
from miko_assets.ingest.batches import batch_prefix, ingest_file
from miko_assets.instance import open_instance
from miko_assets.distill.quality import format_quality_floor
from miko_assets.stages.knowledge_base import intention_quality
from miko_assets.warehouse.lineage import card_markdown, intention_card
from miko_assets.warehouse.warehouse import Warehouse

SAMPLE_DATASET = "sample"
SAMPLE_SPLIT = "sample"
# Per-batch jobs first, then the ones that read every partition.
PARTITIONED_JOBS = ("distill_job",)
GLOBAL_JOBS = ("knowledge_base_job",)
SUMMARY_TABLES = ("posts", "rejected_posts", "captions", "key_info", "intentions")


def run_demo(warehouse: Warehouse, sample_dir: Path, batch_size: int) -> int:
    """Ingest the sample, materialize every job for its batches, print a summary and one lineage card."""
    # First: a bad configuration (environment, prompts, prices) stops the demo before it writes anything.
    from miko_assets.definitions import defs
    from miko_assets.llm.runner import LLMRunner

    LLMRunner.from_env(None)

    result = ingest_file(
        warehouse, "jsonl", sample_dir / "posts.jsonl", split=SAMPLE_SPLIT,
        images_dir=sample_dir / "images", batch_size=batch_size,
    )
    print(f"ingested {result.rows_added} new posts ({result.rows_already_ingested} already there)")
    batches = sample_batches(warehouse)
    failed: list[str] = []
    with open_instance() as instance:
        register_batches(instance, warehouse)
        for name in PARTITIONED_JOBS:
            job = defs.resolve_job_def(name)
            for batch in batches:
                outcome = job.execute_in_process(partition_key=batch, instance=instance, raise_on_error=False)
                print(f"{name} [{batch}] run {outcome.run_id}: {'ok' if outcome.success else 'FAILED'}")
                failed += [] if outcome.success else [f"{name}[{batch}]"]
        for name in GLOBAL_JOBS:
            outcome = defs.resolve_job_def(name).execute_in_process(instance=instance, raise_on_error=False)
            print(f"{name} run {outcome.run_id}: {'ok' if outcome.success else 'FAILED'}")
            failed += [] if outcome.success else [name]
    print_summary(warehouse, batches)
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


def sample_batches(warehouse: Warehouse) -> list[str]:
    prefix = batch_prefix(SAMPLE_DATASET, SAMPLE_SPLIT) + "-"
    rows = warehouse.rows(
        "SELECT DISTINCT batch FROM ingested_posts WHERE starts_with(batch, ?) ORDER BY batch", [prefix]
    )
    return [batch for (batch,) in rows]


def print_summary(warehouse: Warehouse, batches: list[str]) -> None:
    print(f"\nwarehouse {warehouse.describe()} (sample batches {', '.join(batches)})")
    for table in SUMMARY_TABLES:
        column = "rejected_part" if table == "rejected_posts" else "status" if table != "posts" else "'ok'"
        rows = warehouse.rows(
            f"SELECT {column}, count(*) FROM {table} WHERE batch IN (SELECT unnest(?)) GROUP BY 1 ORDER BY 1",
            [batches],
        )
        print(f"  {table}: " + (", ".join(f"{n} {status}" for status, n in rows) or "none"))
    for part, reason in warehouse.rows(
        "SELECT rejected_part, reason FROM rejected_posts WHERE batch IN (SELECT unnest(?)) ORDER BY row_key", [batches]
    ):
        print(f"  rejected {part}: {reason}")
    print("\nquality floor of the intentions (well-formed: a clause of 3 to 25 words, letters and "
          "ordinary punctuation, not restating its prefix, not a copy of the post):")
    for line in format_quality_floor(intention_quality(warehouse, batches)):
        print(f"  {line}")
    example = warehouse.rows(
        "SELECT intention_id FROM intentions WHERE batch IN (SELECT unnest(?)) AND status = 'ok' "
        "ORDER BY batch, post_id, relation_index LIMIT 1",
        [batches],
    )
    if example:
        print("\n" + card_markdown(intention_card(warehouse, example[0][0])))
