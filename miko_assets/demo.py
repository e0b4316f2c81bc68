"""`miko demo`: the bundled sample through every asset, in a real Dagster instance, told as a
short story (each stage with its counts and time, the quality floor of the intentions, where
things are, what to try next)."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

from miko_assets.commands.progress import progress
from miko_assets.distill.quality import format_quality_floor
from miko_assets.ingest.batches import ingest_file
from miko_assets.ingest.keys import batch_prefix
from miko_assets.instance import open_instance
from miko_assets.partitions import register_batches
from miko_assets.stages.knowledge_base import intention_quality
from miko_assets.warehouse.warehouse import Warehouse

SAMPLE_DATASET = "sample"
SAMPLE_SPLIT = "sample"
# Each per-batch stage runs as its own step of `distill_job`, so the story can time it.
BATCH_STAGES = ("posts", "captions", "key_info", "intentions")
GLOBAL_JOB = "knowledge_base_job"
EXAMPLE_INTENTIONS = 5
# Dagster's console logger, quiet unless --verbose: the story replaces its DEBUG stream.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


@dataclass(frozen=True)
class Step:
    stage: str
    batch: str | None

    @property
    def name(self) -> str:
        return f"{self.stage} [{self.batch}]" if self.batch else self.stage


def run_demo(warehouse: Warehouse, sample_dir: Path, batch_size: int, verbose: bool = False) -> int:
    """Ingest the sample, materialize every stage for its batches, then tell what it made."""
    import dagster as dg

    # First: a bad configuration (environment, prompts, prices) stops the demo before it writes anything.
    from miko_assets.definitions import defs
    from miko_assets.llm.runner import LLMRunner

    LLMRunner.from_env(None)

    started = time.monotonic()
    result = ingest_file(
        warehouse, "jsonl", sample_dir / "posts.jsonl", split=SAMPLE_SPLIT,
        images_dir=sample_dir / "images", batch_size=batch_size,
    )
    batches = sample_batches(warehouse)
    # Already there: ingested before, from this copy of the sample or another (an installed package's).
    print(f"ingested {result.rows_added} new posts ({result.rows_read - result.rows_added} already there) "
          f"into {', '.join(batches)}")
    steps = [Step(stage, batch) for batch in batches for stage in BATCH_STAGES] + [Step("knowledge_base", None)]
    run_config = None if verbose else QUIET_RUN_CONFIG
    failed: list[str] = []
    with open_instance() as instance, progress("miko demo", len(steps), "stages") as shown:
        register_batches(instance, warehouse)
        for step in steps:
            began = time.monotonic()
            if step.batch is None:
                outcome = defs.resolve_job_def(GLOBAL_JOB).execute_in_process(
                    instance=instance, raise_on_error=False, run_config=run_config)
            else:
                outcome = defs.resolve_job_def("distill_job").execute_in_process(
                    partition_key=step.batch, instance=instance, raise_on_error=False, run_config=run_config,
                    asset_selection=[dg.AssetKey(step.stage)])
            status = "" if outcome.success else f"  FAILED (run {outcome.run_id})"
            failed += [] if outcome.success else [step.name]
            line = f"{step.name:<31} {stage_counts(warehouse, step):<44} {time.monotonic() - began:6.1f} s{status}"
            shown.note(line)
            shown.advance(detail=step.name)
    tell_story(warehouse, batches, time.monotonic() - started)
    if failed:
        print(f"\nfailed: {', '.join(failed)}; `miko demo --verbose` shows Dagster's events")
    return 1 if failed else 0


def sample_batches(warehouse: Warehouse) -> list[str]:
    prefix = batch_prefix(SAMPLE_DATASET, SAMPLE_SPLIT) + "-"
    rows = warehouse.rows(
        "SELECT DISTINCT batch FROM ingested_posts WHERE starts_with(batch, ?) ORDER BY batch", [prefix]
    )
    return [batch for (batch,) in rows]


def stage_counts(warehouse: Warehouse, step: Step) -> str:
    """What a step left in the warehouse for its batch, e.g. `110 ok, 10 failed intentions`."""
    if step.batch is None:
        (posts, intentions, ok), = warehouse.rows(
            "SELECT count(DISTINCT post_id), count(*), count(*) FILTER (status = 'ok') FROM intentions"
        )
        return f"{intentions} intentions of {posts} posts, {ok} ok"
    if step.stage == "posts":
        (kept,), = warehouse.rows("SELECT count(*) FROM posts WHERE batch = ?", [step.batch])
        (rejected,), = warehouse.rows(
            "SELECT count(DISTINCT row_key) FROM rejected_posts WHERE batch = ? AND rejected_part = 'post'",
            [step.batch],
        )
        return f"{kept} posts, {rejected} rejected with a reason"
    # The stage names are this module's constants, never user input.
    rows = warehouse.rows(f"SELECT status, count(*) FROM {step.stage} WHERE batch = ? GROUP BY 1 ORDER BY 1",
                          [step.batch])
    return ", ".join(f"{n} {status}" for status, n in rows) + f" {step.stage.replace('_', ' ')}"


def tell_story(warehouse: Warehouse, batches: list[str], seconds: float) -> None:
    """The quality floor, where the results are, what to open and try, and a few intentions the
    model wrote."""
    print("\nquality floor of the intentions (well-formed: a clause of 3 to 25 words, letters and "
          "ordinary punctuation, not restating its prefix, not a copy of the post):")
    for line in format_quality_floor(intention_quality(warehouse, batches)):
        print(f"  {line}")
    example = example_intentions(warehouse, batches, EXAMPLE_INTENTIONS)
    workspace = "" if Path("workspace.yaml").exists() else " -m miko_assets.definitions"
    print(f"\ndone in {seconds:.0f} s")
    print(f"warehouse:        {warehouse.describe()}")
    print(f"open the UI:      dagster dev{workspace}   (then http://127.0.0.1:3000: these runs, lineage, metadata)")
    if example:
        print(f"how one was made: miko lineage {example[0][0]}")
        print("a few intentions it made:")
        for _, text, relation, intention in example:
            print(f"  post: {shorten(text, 70)}")
            print(f"    {relation}: {intention}")
    print("more: miko stale, miko export --out exports/kb, miko --help")


def example_intentions(warehouse: Warehouse, batches: list[str], count: int) -> list[tuple[str, str, str, str]]:
    """`count` ok intentions (id, post text, relation, text) drawn at random, each of another
    post and relation."""
    rows = warehouse.rows(
        "SELECT i.intention_id, p.text, i.relation, i.full_text FROM intentions i "
        "JOIN posts p USING (batch, post_id) WHERE i.batch IN (SELECT unnest(?)) AND i.status = 'ok' "
        "ORDER BY i.batch, i.post_id, i.relation_index",
        [batches],
    )
    random.shuffle(rows)
    chosen: list[tuple[str, str, str, str]] = []
    for row in rows:
        if all(row[1] != c[1] and row[2] != c[2] for c in chosen):
            chosen.append(row)
        if len(chosen) == count:
            break
    return chosen


def shorten(text: str, width: int) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
