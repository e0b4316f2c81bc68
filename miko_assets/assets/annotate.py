"""Annotation and evaluation assets: sampled tasks, human and LLM annotations, agreement, benchmark.

`annotation_tasks`, `llm_annotations` and `intention_benchmark` are built by factories from
their configuration (read from the environment when the definitions load), so that the
configuration is part of their code version; tests build them with their own.
"""

import dagster as dg
import pandas as pd

from miko_assets.annotate.benchmark_metrics import default_bertscore, plot_leaderboard
from miko_assets.annotate.report import build_agreement_report, plot_agreement
from miko_assets.annotate.stages import STAGES, Stage
from miko_assets.assets.metadata import counts, png_image, preview, whole_table
from miko_assets.llm.runner import RunSummary
from miko_assets.partitions import post_batches
from miko_assets.resources import LLMResource, WarehouseResource
from miko_assets.stages.annotation import (
    SamplingConfig,
    agreement_frames,
    read_human_annotations,
    read_judge_annotations,
    task_rows,
)
from miko_assets.stages.benchmark import BenchmarkConfig, benchmark_posts, generate, score_generations
from miko_assets.stages.common import StageRun, runner_completer
from miko_assets.stages.human_annotations import annotation_counts, reimport_known_sources
from miko_assets.stages.judging import JUDGE_STAGES, JudgeSpec, judge_tasks
from miko_assets.warehouse.prompts import register_prompts

GROUP = "annotate"


def _llm_metadata(summaries: list[RunSummary], prefix: str = "") -> dict:
    """The LLM layer's counts for the one batch a completer ran (nothing when it had no requests)."""
    return {f"{prefix}{k}": v for k, v in summaries[0].as_metadata().items()} if summaries else {}


def annotation_tasks_asset(sampling: SamplingConfig) -> dg.AssetsDefinition:
    @dg.asset(
        name="annotation_tasks",
        partitions_def=post_batches,
        deps=["intentions"],
        code_version=sampling.code_version,
        group_name=GROUP,
        kinds={"duckdb"},
        description=(
            f"A {sampling.share:.0%} sample (seed {sampling.seed}) of each batch's ok intentions, stratified by "
            "relation, with the post text and caption they are judged against "
            "(MIKO_ANNOTATION_SHARE, MIKO_ANNOTATION_SEED)."
        ),
    )
    def annotation_tasks(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        wh = warehouse.get()
        batch = context.partition_key
        intentions, posts, captions = (
            wh.query(f"SELECT * FROM {table} WHERE batch = ?", [batch]) for table in ("intentions", "posts", "captions")
        )
        if intentions.empty:
            raise dg.Failure(f"partition {batch} has no intentions: materialize `intentions` for it first")
        rows = task_rows(intentions, posts, captions, sampling, context.run.run_id)
        wh.replace_partition("annotation_tasks", batch, rows)
        return dg.MaterializeResult(
            metadata={
                "share": sampling.share,
                "seed": sampling.seed,
                "ok_intentions": int((intentions["status"] == "ok").sum()),
                "tasks_by_relation": counts(rows, "relation"),
                "dagster/row_count": len(rows),
                "preview": preview(rows, ["post_id", "relation", "intention"]),
            }
        )

    return annotation_tasks


def llm_annotations_asset(judges: JudgeSpec) -> dg.AssetsDefinition:
    described = ", ".join(f"{s}: {c.provider}/{c.model} prompt {c.prompt_version}" for s, c in judges.configs.items())

    @dg.asset(
        name="llm_annotations",
        partitions_def=post_batches,
        deps=["annotation_tasks"],
        code_version=judges.code_version,
        pool="llm",
        group_name=GROUP,
        kinds={"duckdb"},
        description=f"LLM judges over the sampled intentions ({described}); typicality only for the plausible.",
    )
    def llm_annotations(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, llm: LLMResource
    ) -> dg.MaterializeResult:
        wh = warehouse.get()
        batch = context.partition_key
        run_id = context.run.run_id
        tasks = wh.query("SELECT * FROM annotation_tasks WHERE batch = ? ORDER BY intention_id", [batch])
        if tasks.empty:
            raise dg.Failure(f"partition {batch} has no annotation tasks: materialize `annotation_tasks` for it first")
        register_prompts(wh, [c.prompt() for c in judges.configs.values()])
        runner = llm.runner(wh)
        summaries: dict[Stage, list[RunSummary]] = {s: [] for s in STAGES}
        rows = judge_tasks(
            tasks,
            {s: StageRun.start(judges.configs[s], run_id, judges.code_version) for s in STAGES},
            {s: runner_completer(runner, run_id, JUDGE_STAGES[s], summaries[s], context.log) for s in STAGES},
        )
        wh.replace_partition(
            "llm_annotations", batch, rows, replaced_by_run=run_id, unchanged_key=("intention_id", "stage", "llm_call_id")
        )
        return dg.MaterializeResult(
            metadata={
                "judges": described,
                "code_version": judges.code_version,
                "tasks": len(tasks),
                "rows_by_stage_and_status": counts(rows.assign(key=rows["stage"] + " " + rows["status"]), "key"),
                "labels_by_stage": counts(rows.assign(key=rows["stage"] + " " + rows["label"].fillna("-")), "key"),
                "dagster/row_count": len(rows),
                **{k: v for s in STAGES for k, v in _llm_metadata(summaries[s], f"{s}_").items()},
                "preview": preview(rows, ["relation", "stage", "status", "label", "reason", "error"]),
            }
        )

    return llm_annotations


@dg.asset(
    group_name=GROUP,
    kinds={"duckdb"},
    description=(
        "Human judgements (Label Studio exports, MIKO's released accept bits). `miko annotate import` and "
        "`miko annotate import-miko-release` record each import as a materialization; materializing "
        "reads every known file again and adds only new annotations."
    ),
)
def human_annotations(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    wh = warehouse.get()
    outcomes, missing = reimport_known_sources(wh, context.run.run_id)
    stored = annotation_counts(wh)
    return dg.MaterializeResult(
        metadata={
            "sources_read": len(outcomes),
            "rows_added": sum(o.rows_added for o in outcomes),
            "missing_sources": missing,
            "imports": whole_table(pd.DataFrame([o.as_metadata() for o in outcomes])),
            "stored": whole_table(stored),
            "dagster/row_count": int(stored["annotations"].sum()),
        }
    )


@dg.asset(
    deps=[human_annotations, "llm_annotations"],
    group_name=GROUP,
    kinds={"duckdb"},
    description=(
        "Agreement among humans (Fleiss' kappa, Krippendorff's alpha) and of each LLM judge with the human "
        "majority (Cohen's kappa, accuracy, P/R/F1), accept rates beside MIKO's published 76.2%."
    ),
)
def annotation_agreement(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    wh = warehouse.get()
    human = read_human_annotations(wh)
    if human.empty:
        raise dg.Failure("no human annotations: run `miko annotate import` or `miko annotate import-miko-release` first")
    judges = read_judge_annotations(wh)
    report = build_agreement_report(human, judges)
    for table, frame in agreement_frames(report, context.run.run_id).items():
        wh.append(table, frame)
    return dg.MaterializeResult(
        metadata={
            "human_annotations": len(human),
            "judge_annotations": len(judges),
            "human_agreement": whole_table(report.human_agreement),
            "judge_agreement": whole_table(report.judge_agreement),
            "accept_rates": whole_table(report.accept_rates),
            "plot": png_image(plot_agreement(report), "accept rates and judge agreement"),
        }
    )


def intention_benchmark_asset(config: BenchmarkConfig) -> dg.AssetsDefinition:
    @dg.asset(
        name="intention_benchmark",
        code_version=config.code_version,
        pool="llm",
        group_name=GROUP,
        kinds={"duckdb"},
        description=(
            f"Zero-shot intentions from the text of {config.described_posts} MIKO release post(s) by "
            f"{', '.join(g.name for g in config.generators)}, scored against the accepted intentions "
            "(prefixes stripped; BLEU-1/2 from sacrebleu, ROUGE-L from rouge-score, BERTScore from "
            "bert-score with its default English model when cached, else all-MiniLM-L6-v2 offline). "
            "MIKO_BENCHMARK_POSTS, MIKO_BENCHMARK_SEED, MIKO_BENCHMARK_GENERATORS, MIKO_BENCHMARK_RELEASE."
        ),
    )
    def intention_benchmark(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource, llm: LLMResource
    ) -> dg.MaterializeResult:
        wh = warehouse.get()
        run_id = context.run.run_id
        posts = benchmark_posts(config.release_path, config.posts, config.seed)
        register_prompts(wh, [g.config.prompt() for g in config.generators])
        summaries: list[RunSummary] = []
        complete = runner_completer(llm.runner(wh), run_id, "benchmark", summaries, context.log)
        items = generate(config.generators, posts, complete)
        scores = score_generations(items, default_bertscore(), run_id)
        wh.append("benchmark_items", scores.items)
        wh.append("benchmark_results", scores.results)
        per_relation = scores.results[scores.results["relation"] != "ALL"]
        return dg.MaterializeResult(
            metadata={
                "posts": len(posts),
                "generators": [g.name for g in config.generators],
                "release": dg.MetadataValue.path(str(config.release_path)),
                "leaderboard": whole_table(scores.leaderboard),
                "per_relation": whole_table(per_relation.drop(columns=["rank", "n_failed", "dagster_run_id", "created_at"])),
                "plot": png_image(plot_leaderboard(scores.leaderboard, ["generator"]), "benchmark leaderboard"),
                "dagster/row_count": len(scores.items),
                **_llm_metadata(summaries),
            }
        )

    return intention_benchmark


annotation_tasks = annotation_tasks_asset(SamplingConfig.from_env())
llm_annotations = llm_annotations_asset(JudgeSpec.from_env())
intention_benchmark = intention_benchmark_asset(BenchmarkConfig.from_env())
annotation_assets = [annotation_tasks, llm_annotations, human_annotations, annotation_agreement, intention_benchmark]

annotation_job = dg.define_asset_job(
    "annotation_job",
    selection=dg.AssetSelection.assets(annotation_tasks, llm_annotations),
    description="Sample intentions for annotation and judge them with the LLM judges, for one post_batches partition.",
)
evaluation_job = dg.define_asset_job(
    "evaluation_job",
    selection=dg.AssetSelection.assets(human_annotations, annotation_agreement, intention_benchmark),
    description="Re-read the human annotation files, compute the agreement report and run the intention benchmark.",
)
