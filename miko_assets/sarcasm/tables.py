"""Warehouse reads and writes of the sarcasm experiment: which batches it uses, the
`sarcasm_dataset` rows of a batch, the training frame and the `sarcasm_results` rows."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd

from miko_assets.sarcasm.dataset import SarcasmDataset, build_sarcasm_dataset
from miko_assets.sarcasm.report import results_frame
from miko_assets.sarcasm.students import StudentResult
from miko_assets.warehouse.schema import SARCASM_DATASET
from miko_assets.warehouse.warehouse import Warehouse

# The generation tables renamed to the columns `build_sarcasm_dataset` reads. The teacher is
# named `provider/model` and the prompt `name@version`, as in the stages' code versions.
_UPSTREAM_SQL = {
    "posts": "SELECT batch, post_id, dataset, split, text, label FROM posts WHERE batch = ?",
    "captions": "SELECT post_id, description AS caption, caption_id, status FROM captions WHERE batch = ?",
    "key_info": (
        "SELECT post_id, concept, action, object, emotion, keywords, key_info_id, status, "
        "prompt_name || '@' || prompt_version AS prompt_version FROM key_info WHERE batch = ?"
    ),
    "intentions": (
        "SELECT post_id, relation, full_text AS intention, intention_id, provider || '/' || model AS model, "
        "prompt_name || '@' || prompt_version AS prompt_version, prompt_sha, llm_call_id, status "
        "FROM intentions WHERE batch = ?"
    ),
}


def build_batch(warehouse: Warehouse, batch: str) -> SarcasmDataset:
    """The sarcasm dataset of one batch from its current posts, captions, key info and intentions."""
    tables = {name: warehouse.query(sql, [batch]) for name, sql in _UPSTREAM_SQL.items()}
    return build_sarcasm_dataset(**tables)


def dataset_rows(built: SarcasmDataset, run_id: str, created_at: datetime) -> pd.DataFrame:
    """`built.frame` as `sarcasm_dataset` rows, stamped with the run that wrote them."""
    frame = built.frame.assign(dagster_run_id=run_id, created_at=created_at)
    return frame[SARCASM_DATASET.column_names]


def labelled_batches(warehouse: Warehouse) -> dict[str, str]:
    """batch -> dataset for every ingested batch of a dataset that has labelled posts."""
    rows = warehouse.rows(
        "SELECT DISTINCT batch, dataset FROM ingested_posts WHERE dataset IN "
        "(SELECT dataset FROM ingested_posts WHERE label IS NOT NULL) ORDER BY batch"
    )
    return dict(rows)


def select_batches(
    registered: Sequence[str],
    labelled: dict[str, str],
    datasets: Sequence[str] = (),
    batches: Sequence[str] = (),
) -> list[str]:
    """The partitions an experiment uses: `batches` when given, else every registered
    partition of the labelled datasets (only those in `datasets` when given)."""
    if batches:
        return sorted(set(batches))
    known = set(labelled.values())
    if unknown := sorted(set(datasets) - known):
        raise ValueError(f"no labelled posts were ingested for datasets {unknown}; labelled datasets: {sorted(known)}")
    wanted = set(datasets) or known
    return sorted(b for b in registered if labelled.get(b) in wanted)


def training_frame(warehouse: Warehouse, batches: Sequence[str]) -> pd.DataFrame:
    """The `sarcasm_dataset` rows of `batches`, in a stable order."""
    return warehouse.query(
        "SELECT * FROM sarcasm_dataset WHERE list_contains(?::VARCHAR[], batch) ORDER BY batch, post_id",
        [list(batches)],
    )


def result_rows(
    results: Sequence[StudentResult], run_id: str, created_at: datetime, batches: Sequence[str]
) -> pd.DataFrame:
    """`sarcasm_results` rows: the results table stamped with the run, its time and its batches."""
    return results_frame(results).assign(run_id=run_id, created_at=created_at, batches=",".join(batches))
