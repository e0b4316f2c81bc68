"""Annotation around the warehouse: sampled tasks, Label Studio export, agreement inputs and outputs."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from miko_assets.annotate.labelstudio import AnnotationItem, build_tasks, labeling_config, local_files_url, plausible_intentions
from miko_assets.annotate.models import Stage, intention_text_sha
from miko_assets.annotate.report import AgreementReport
from miko_assets.annotate.sampling import sample_for_annotation
from miko_assets.clock import utc_now
from miko_assets.imaging.confine import UnsafeImagePath
from miko_assets.env_values import EnvValueError, env_number
from miko_assets.stages.key_info import usable_captions
from miko_assets.warehouse.schema import ANNOTATION_TASKS
from miko_assets.warehouse.warehouse import Warehouse

log = logging.getLogger(__name__)

SHARE_ENV = "MIKO_ANNOTATION_SHARE"
SEED_ENV = "MIKO_ANNOTATION_SEED"
DEFAULT_SHARE = 0.2
DEFAULT_SEED = 2024

AGREEMENT_TABLES = {
    "human_agreement": "annotation_agreement_humans",
    "judge_agreement": "annotation_agreement_judges",
    "accept_rates": "annotation_agreement_accept_rates",
}


@dataclass(frozen=True)
class SamplingConfig:
    """Which share of a batch's `ok` intentions is sampled (per relation), with which seed."""

    share: float = DEFAULT_SHARE
    seed: int = DEFAULT_SEED

    def __post_init__(self) -> None:
        if not 0 <= self.share <= 1:
            raise EnvValueError(f"{SHARE_ENV} must be within [0, 1], got {self.share}: change or unset it")

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> SamplingConfig:
        """`MIKO_ANNOTATION_SHARE` and `MIKO_ANNOTATION_SEED`, else the defaults (empty counts as unset)."""
        share, seed = env_number(env, SHARE_ENV), env_number(env, SEED_ENV, int)
        return cls(share=DEFAULT_SHARE if share is None else share, seed=DEFAULT_SEED if seed is None else seed)

    @property
    def code_version(self) -> str:
        return f"stratified-by-relation|share={self.share:g}|seed={self.seed}"


def task_rows(
    intentions: pd.DataFrame, posts: pd.DataFrame, captions: pd.DataFrame, sampling: SamplingConfig, run_id: str | None
) -> pd.DataFrame:
    """The sampled `ok` intentions of one batch, each with the post and caption it is judged against."""
    if intentions.empty:
        return pd.DataFrame(columns=ANNOTATION_TASKS.column_names)
    ok = intentions[(intentions["status"] == "ok") & intentions["full_text"].notna()]
    chosen = sample_for_annotation(ok.to_dict("records"), sampling.share, sampling.seed)
    post_of = posts.set_index("post_id").to_dict("index") if not posts.empty else {}
    caption_of = usable_captions(captions)
    now = utc_now()
    rows = []
    for intention in chosen:
        post = post_of.get(intention["post_id"], {})
        caption_id, caption = caption_of.get(intention["post_id"], (None, None))
        rows.append({
            "batch": intention["batch"],
            "intention_id": intention["intention_id"],
            "post_id": intention["post_id"],
            "relation": intention["relation"],
            "intention": intention["full_text"],
            "post_text": post.get("text"),
            "image_path": post.get("image_path") if post.get("image_sha256") else None,
            "caption_id": caption_id,
            "caption": caption,
            "intention_llm_call_id": intention["llm_call_id"],
            "intention_code_version": intention["code_version"],
            "share": sampling.share,
            "seed": sampling.seed,
            "code_version": sampling.code_version,
            "dagster_run_id": run_id,
            "created_at": now,
        })
    return pd.DataFrame(rows, columns=ANNOTATION_TASKS.column_names)


def read_tasks(warehouse: Warehouse, batches: Sequence[str] = ()) -> pd.DataFrame:
    """The current annotation tasks of `batches` (every batch when empty)."""
    if batches:
        return warehouse.query(
            "SELECT * FROM annotation_tasks WHERE list_contains(?::VARCHAR[], batch) ORDER BY batch, intention_id",
            [list(batches)],
        )
    return warehouse.query("SELECT * FROM annotation_tasks ORDER BY batch, intention_id")


def read_human_annotations(warehouse: Warehouse) -> pd.DataFrame:
    return warehouse.query("SELECT * FROM human_annotations ORDER BY intention_id, stage, annotator, updated_at")


def read_judge_annotations(warehouse: Warehouse) -> pd.DataFrame:
    """Current LLM judgements in the report's shape; a failed judgement has no label."""
    return warehouse.query(
        "SELECT intention_id, intention_text_sha, relation, stage, CASE WHEN status = 'ok' THEN label END AS label, "
        "provider || '/' || model AS judge_model, prompt_version AS judge_prompt_version "
        "FROM llm_annotations ORDER BY batch, intention_id, stage"
    )


def export_items(
    warehouse: Warehouse, stage: Stage, batches: Sequence[str] = (), image_root: Path | None = None
) -> list[AnnotationItem]:
    """The tasks to annotate at `stage`: all sampled ones for plausibility; for typicality only
    those whose current text the human majority judged plausible. A local image becomes a Label
    Studio local-files URL when `image_root` (Label Studio's LOCAL_FILES_DOCUMENT_ROOT) is given,
    else is left out."""
    tasks = read_tasks(warehouse, batches)
    if stage == "typicality":
        plausible = plausible_intentions(read_human_annotations(warehouse))
        keys = zip(tasks["intention_id"], tasks["intention"].map(intention_text_sha))
        tasks = tasks[pd.Series([k in plausible for k in keys], index=tasks.index, dtype=bool)]
    return [
        AnnotationItem(
            intention_id=task["intention_id"],
            post_id=task["post_id"],
            relation=task["relation"],
            intention=task["intention"],
            post_text=task["post_text"] or "",
            image=_image_url(task["image_path"], image_root),
        )
        for task in tasks.to_dict("records")
    ]


def _image_url(path: str | None, image_root: Path | None) -> str | None:
    if not path:
        return None
    if path.startswith(("http://", "https://")):
        return path
    if image_root is None:
        return None
    try:
        return local_files_url(path, image_root)
    except (UnsafeImagePath, OSError) as exc:
        log.warning("task image left out: %s", exc)
        return None


def write_export(items: Sequence[AnnotationItem], stage: Stage, out: Path) -> tuple[Path, Path]:
    """Write `<stage>-tasks.json` (Label Studio import) and `<stage>-config.xml` (labelling config)."""
    out.mkdir(parents=True, exist_ok=True)
    tasks_path, config_path = out / f"{stage}-tasks.json", out / f"{stage}-config.xml"
    tasks_path.write_text(json.dumps(build_tasks(items), indent=1, ensure_ascii=False), encoding="utf-8")
    config_path.write_text(labeling_config(stage, with_image=any(i.image for i in items)), encoding="utf-8")
    return tasks_path, config_path


def agreement_frames(report: AgreementReport, run_id: str | None) -> dict[str, pd.DataFrame]:
    """Warehouse table name -> the report's table, stamped with the run that computed it."""
    now = utc_now()
    return {
        table: getattr(report, name).assign(dagster_run_id=run_id, created_at=now)
        for name, table in AGREEMENT_TABLES.items()
    }
