"""Building the sarcasm dataset rows from posts, captions, key info and intentions."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest

from miko_assets.sarcasm.dataset import (
    INTENT_COLUMNS,
    RELATIONS,
    build_sarcasm_dataset,
    intent_column,
    intent_id_column,
)
from miko_assets.sarcasm.tables import dataset_rows
from miko_assets.warehouse.schema import SARCASM_DATASET


def _posts() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "post_id": ["d:1", "d:2", "d:3", "d:4"],
            "text": ["great, another monday", "lovely sunset", None, "no label here"],
            "label": [1, 0, 1, None],
            "split": ["train", "test", "train", "train"],
            "dataset": "d",
            "batch": "d-train-0000",
        }
    )


def _intentions() -> pd.DataFrame:
    rows = [
        {
            "post_id": "d:1",
            "relation": relation,
            "intention": f"{relation} text",
            "intention_id": f"i-{relation}",
            "status": "ok",
            "model": "smollm2",
            "prompt_version": "v1",
            "prompt_sha": "sha-v1",
            "llm_call_id": "call-1",
        }
        for relation in RELATIONS
    ]
    # d:2 has one usable intention (relation case differs), one failed row, one from another prompt.
    rows.append({**rows[0], "post_id": "d:2", "relation": "XWANT", "intention_id": "j-1"})
    rows.append({**rows[1], "post_id": "d:2", "status": "failed: length", "intention_id": "j-2"})
    rows.append({**rows[2], "post_id": "d:2", "prompt_version": "v2", "intention_id": "j-3"})
    return pd.DataFrame(rows)


def test_rows_columns_lineage_and_marks() -> None:
    captions = pd.DataFrame(
        {
            "post_id": ["d:1", "d:2"],
            "caption": ["a calendar", "unused"],
            "caption_id": ["c-1", "c-2"],
            "status": ["ok", "failed: no image"],
        }
    )
    key_info = pd.DataFrame(
        {
            "post_id": ["d:1"],
            "concept": ["monday"],
            "action": [None],
            "object": ["calendar"],
            "emotion": ["annoyance"],
            "keywords": ["  "],
            "key_info_id": ["k-1"],
        }
    )
    built = build_sarcasm_dataset(_posts(), captions, key_info, _intentions())
    frame = built.frame.set_index("post_id")

    assert built.n_unlabelled == 1
    assert list(frame.index) == ["d:1", "d:2", "d:3"]
    assert frame["label"].tolist() == [1, 0, 1]
    assert frame.loc["d:3", "text"] == ""
    assert frame["batch"].unique().tolist() == ["d-train-0000"]

    intent_positions = [built.frame.columns.get_loc(c) for c in INTENT_COLUMNS]
    assert intent_positions == sorted(intent_positions)
    assert INTENT_COLUMNS[0] == "intent_xWant" and INTENT_COLUMNS[-1] == "intent_Open"

    assert frame.loc["d:1", intent_column("xNeed")] == "xNeed text"
    assert frame.loc["d:1", intent_id_column("xNeed")] == "i-xNeed"
    assert frame.loc["d:1", "n_intentions"] == 10
    assert frame.loc["d:2", "n_intentions"] == 2
    assert frame.loc["d:2", intent_column("oEffect")] == ""  # the failed row is not used
    assert frame.loc["d:2", intent_id_column("oEffect")] is None
    assert frame.loc["d:2", intent_id_column("xWant")] == "j-1"
    assert frame["has_intentions"].tolist() == [True, True, False]
    assert built.n_without_intentions == 1

    assert frame.loc["d:1", "caption"] == "a calendar" and frame.loc["d:1", "caption_id"] == "c-1"
    assert frame.loc["d:2", "caption"] == "" and frame.loc["d:2", "caption_id"] is None
    assert frame.loc["d:1", "key_info"] == "Concept: monday; Object: calendar; Emotion: annoyance"
    assert frame.loc["d:1", "key_info_id"] == "k-1"

    assert frame.loc["d:1", "teacher_model"] == "smollm2"
    assert frame.loc["d:1", "teacher_prompt_sha"] == "sha-v1" and frame.loc["d:1", "teacher_llm_call_id"] == "call-1"
    assert frame.loc["d:2", "teacher_prompt_version"] == "v1,v2"
    assert frame.loc["d:3", "teacher_model"] is None


def test_posts_alone_are_all_marked_without_intentions() -> None:
    built = build_sarcasm_dataset(_posts())
    assert len(built.frame) == 3
    assert built.n_without_intentions == 3
    assert (built.frame[list(INTENT_COLUMNS)] == "").all().all()


def test_rejects_ambiguous_or_malformed_input() -> None:
    twice = pd.concat([_intentions(), _intentions().head(1)])
    with pytest.raises(ValueError, match="more than one usable row"):
        build_sarcasm_dataset(_posts(), intentions=twice)
    unknown = _intentions().assign(relation="xWish")
    with pytest.raises(ValueError, match="unknown relations \\['xWish'\\]"):
        build_sarcasm_dataset(_posts(), intentions=unknown)
    with pytest.raises(ValueError, match="labels must be 0, 1"):
        build_sarcasm_dataset(_posts().assign(label=[1, 0, 2, None]))
    with pytest.raises(ValueError, match="missing columns \\['split'\\]"):
        build_sarcasm_dataset(_posts().drop(columns="split"))


def test_the_built_columns_are_the_declared_table() -> None:
    """`sarcasm_dataset` is declared in the warehouse schema; the builder makes exactly its columns."""
    built = build_sarcasm_dataset(_posts(), intentions=_intentions())
    assert set(built.frame.columns) | {"dagster_run_id", "created_at"} == set(SARCASM_DATASET.column_names)
    rows = dataset_rows(built, "run-1", datetime(2025, 1, 1))
    assert list(rows.columns) == SARCASM_DATASET.column_names and len(rows) == len(built.frame)
