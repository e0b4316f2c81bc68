"""The sarcasm experiment: the per-batch `sarcasm_dataset` and the `sarcasm_student` trained on it."""

import dagster as dg
from pydantic import Field

from miko_assets.assets.metadata import counts, png_image, preview
from miko_assets.clock import utc_now
from miko_assets.partitions import post_batches
from miko_assets.resources import WarehouseResource
from miko_assets.sarcasm.readiness import PartitionsNotReady, require_ready
from miko_assets.sarcasm.report import METRIC_COLUMNS, plot_results
from miko_assets.sarcasm.students import STUDENTS, run_experiment, variants_named
from miko_assets.sarcasm.tables import (
    build_batch,
    dataset_rows,
    labelled_batches,
    result_rows,
    select_batches,
    training_frame,
)

# Every partition a student uses must be materialized in each of these assets.
REQUIRED_STAGES = ("posts", "captions", "key_info", "intentions", "sarcasm_dataset")
_LISTED = 50  # post ids listed in the dataset's metadata
_RESULT_PREVIEW = ["dataset", "student", "variant", *METRIC_COLUMNS, "macro_f1_diff", "ci_low", "ci_high"]


@dg.asset(
    partitions_def=post_batches,
    deps=["posts", "captions", "key_info", "intentions"],
    group_name="sarcasm",
    kinds={"duckdb"},
    description=(
        "Labelled posts of one batch with their current caption, key info and ten intentions and "
        "the lineage ids of each; posts lacking intentions are kept with has_intentions = false."
    ),
)
def sarcasm_dataset(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    wh = warehouse.get()
    batch = context.partition_key
    built = build_batch(wh, batch)
    if built.frame.empty and not built.n_unlabelled:
        raise dg.Failure(f"partition {batch} has no posts: materialize `posts` for it first")
    rows = dataset_rows(built, context.run.run_id, utc_now())
    wh.replace_partition("sarcasm_dataset", batch, rows)
    lacking = rows.loc[~rows["has_intentions"], "post_id"].tolist()
    return dg.MaterializeResult(
        metadata={
            "labelled_posts": len(rows),
            "unlabelled_posts_skipped": built.n_unlabelled,
            "posts_without_intentions": len(lacking),
            "post_ids_without_intentions": ", ".join(lacking[:_LISTED]) + (" …" if len(lacking) > _LISTED else ""),
            "labels": counts(rows, "label"),
            "splits": counts(rows, "split"),
            "teacher_models": counts(rows, "teacher_model"),
            "teacher_prompt_versions": counts(rows, "teacher_prompt_version"),
            "dagster/row_count": len(rows),
            "preview": preview(rows, ["post_id", "label", "split", "n_intentions", "text", "intent_xIntent"]),
        }
    )


class SarcasmStudentConfig(dg.Config):
    """Which partitions and students one experiment uses; the defaults use everything."""

    datasets: list[str] = Field(
        default=[], description="Datasets to use (default: every ingested dataset with labelled posts)."
    )
    batches: list[str] = Field(
        default=[], description="Explicit post_batches partitions; overrides `datasets` when given."
    )
    students: list[str] = Field(default=list(STUDENTS), description=f"Students to train, of {list(STUDENTS)}.")
    variants: list[str] = Field(
        default=[], description="Variant names (default: all; the text-only baseline always runs)."
    )
    seed: int = 0
    test_size: float = Field(default=0.2, description="Test share of the seeded split, for datasets without one.")
    min_per_class: int = Field(default=2, description="Posts of each class a train or test side needs at least.")
    n_resamples: int = Field(default=1000, description="Bootstrap resamples for the difference intervals.")


@dg.asset(
    deps=[sarcasm_dataset],
    group_name="sarcasm",
    kinds={"duckdb", "sklearn"},
    description=(
        "Student models with and without intention knowledge on the sarcasm datasets; refuses "
        "unless every partition it needs is materialized. Results accumulate in sarcasm_results."
    ),
)
def sarcasm_student(
    context: dg.AssetExecutionContext, config: SarcasmStudentConfig, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    wh = warehouse.get()
    instance = context.instance
    try:
        batches = select_batches(
            instance.get_dynamic_partitions(post_batches.name), labelled_batches(wh), config.datasets, config.batches
        )
        materialized = {s: instance.get_materialized_partitions(dg.AssetKey(s)) for s in REQUIRED_STAGES}
        readiness = require_ready(batches, materialized)
        results = run_experiment(
            training_frame(wh, batches),
            students=config.students,
            variants=variants_named(config.variants),
            seed=config.seed,
            n_resamples=config.n_resamples,
            min_per_class=config.min_per_class,
            test_size=config.test_size,
        )
    except (PartitionsNotReady, ValueError) as exc:  # ValueError: InsufficientData, unknown names
        raise dg.Failure(description=str(exc)) from exc

    rows = result_rows(results, context.run.run_id, utc_now(), batches)
    wh.append("sarcasm_results", rows)
    return dg.MaterializeResult(
        metadata={
            "run_id": context.run.run_id,
            "partitions": len(batches),
            "readiness": readiness.message,
            "teacher_models": ", ".join(sorted(rows["teacher_model"].dropna().unique())) or "none",
            "teacher_prompt_versions": ", ".join(sorted(rows["teacher_prompt_versions"].dropna().unique())) or "none",
            "split_methods": ", ".join(sorted(rows["split_method"].unique())),
            "results": preview(rows.round(3), _RESULT_PREVIEW, rows=len(rows)),
            "plot": png_image(plot_results(rows), "sarcasm students"),
            "dagster/row_count": len(rows),
        }
    )
