"""Join labelled posts with their current caption, key info and ten intentions.

Inputs are plain DataFrames read from the warehouse; the expected columns are the
`*_COLUMNS` constants below (extra columns are ignored). Only rows whose `status` is `ok`
(or that carry no status column) are used; a post whose caption, key info or intentions
failed or do not exist yet is kept with empty fields and `has_intentions` tells which.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from miko_assets.distill.key_info import KEY_INFO_FIELDS
from miko_assets.distill.relations import RELATION_NAMES

RELATIONS: tuple[str, ...] = RELATION_NAMES

POST_COLUMNS = ("post_id", "text", "label", "split", "dataset")
CAPTION_COLUMNS = ("post_id", "caption", "caption_id")
KEY_INFO_COLUMNS = ("post_id", *KEY_INFO_FIELDS, "key_info_id")
INTENTION_COLUMNS = (
    "post_id", "relation", "intention", "intention_id", "model", "prompt_version", "prompt_sha", "llm_call_id",
)


def intent_column(relation: str) -> str:
    """Name of the dataset column holding the intention text of `relation`."""
    return f"intent_{relation}"


def intent_id_column(relation: str) -> str:
    """Name of the dataset column holding the lineage id of the intention of `relation`."""
    return f"intent_{relation}_id"


INTENT_COLUMNS: tuple[str, ...] = tuple(intent_column(r) for r in RELATIONS)
INTENT_ID_COLUMNS: tuple[str, ...] = tuple(intent_id_column(r) for r in RELATIONS)
# Where each post's intentions came from (values comma-joined when a post mixes several).
TEACHER_COLUMNS = ("teacher_model", "teacher_prompt_version", "teacher_prompt_sha", "teacher_llm_call_id")


@dataclass(frozen=True)
class SarcasmDataset:
    """One row per labelled post; see `build_sarcasm_dataset`."""

    frame: pd.DataFrame
    n_unlabelled: int

    @property
    def n_without_intentions(self) -> int:
        return int((~self.frame["has_intentions"]).sum())


def build_sarcasm_dataset(
    posts: pd.DataFrame,
    captions: pd.DataFrame | None = None,
    key_info: pd.DataFrame | None = None,
    intentions: pd.DataFrame | None = None,
) -> SarcasmDataset:
    """Build the sarcasm dataset rows.

    Columns of the result: `post_id, dataset, split, label, text, caption, caption_id,
    key_info, key_info_id`, then `intent_<relation>` and `intent_<relation>_id` for the ten
    relations in `RELATIONS` order, `n_intentions`, `has_intentions` (at least one usable
    intention), `teacher_model`, `teacher_prompt_version`, `teacher_prompt_sha` and
    `teacher_llm_call_id` (the intentions' model, prompt version and sha and the LLM call that
    made them, comma-joined when a post mixes several; the prompt versions also name the key
    information's when `key_info` has a `prompt_version` column), and `batch` when posts carry it.
    Posts without a label are excluded and counted in `n_unlabelled`.
    """
    _require_columns("posts", posts, POST_COLUMNS)
    labels = pd.to_numeric(posts["label"], errors="coerce")
    bad = labels.notna() & ~labels.isin([0, 1])
    if bad.any():
        raise ValueError(f"posts: labels must be 0, 1 or missing; found {sorted(labels[bad].unique())}")
    if posts["post_id"].duplicated().any():
        raise ValueError("posts: post_id values must be unique")
    labelled = posts.loc[labels.notna()].copy()
    labelled["label"] = labels[labels.notna()].astype(int)
    keep = [c for c in (*POST_COLUMNS, "batch") if c in labelled.columns]
    frame = labelled[keep].reset_index(drop=True)
    frame["text"] = frame["text"].fillna("").astype(str)
    frame["split"] = frame["split"].fillna("").astype(str)

    frame = frame.merge(_captions(captions), on="post_id", how="left")
    frame = frame.merge(_key_info(key_info), on="post_id", how="left")
    frame = frame.merge(_intentions(intentions), on="post_id", how="left")
    # The key information's prompt is an input of the intentions too: name it beside theirs.
    versions = frame.pop("key_info_prompt_version")
    frame["teacher_prompt_version"] = [
        ",".join(sorted({str(v) for v in pair if isinstance(v, str) and v})) or None
        for pair in zip(frame["teacher_prompt_version"], versions, strict=True)
    ]
    for column in ("caption", "key_info", *INTENT_COLUMNS):
        frame[column] = frame[column].fillna("").astype(str)
    for column in ("caption_id", "key_info_id", *INTENT_ID_COLUMNS, *TEACHER_COLUMNS):
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    frame["n_intentions"] = (frame[list(INTENT_COLUMNS)] != "").sum(axis=1).astype(int)
    frame["has_intentions"] = frame["n_intentions"] > 0
    return SarcasmDataset(frame=frame, n_unlabelled=int(labels.isna().sum()))


def _require_columns(name: str, frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name}: missing columns {missing}; expected at least {list(columns)}")


def _usable(name: str, frame: pd.DataFrame | None, columns: tuple[str, ...]) -> pd.DataFrame:
    """The `ok` rows of an upstream table (an absent table is an empty one)."""
    if frame is None:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    _require_columns(name, frame, columns)
    if "status" in frame.columns:
        frame = frame[frame["status"] == "ok"]
    return frame[list(columns)]


def _unique_per(name: str, frame: pd.DataFrame, keys: list[str]) -> None:
    # The current tables hold one version per key; two would make the join ambiguous.
    duplicated = frame.duplicated(keys, keep=False)
    if duplicated.any():
        sample = frame.loc[duplicated, keys].drop_duplicates().head(5).to_dict("records")
        raise ValueError(f"{name}: more than one usable row for {sample}")


def _captions(captions: pd.DataFrame | None) -> pd.DataFrame:
    rows = _usable("captions", captions, CAPTION_COLUMNS)
    _unique_per("captions", rows, ["post_id"])
    return rows


def _key_info(key_info: pd.DataFrame | None) -> pd.DataFrame:
    rows = _usable("key_info", key_info, KEY_INFO_COLUMNS)
    _unique_per("key_info", rows, ["post_id"])
    versions = key_info.loc[rows.index, "prompt_version"] if key_info is not None and "prompt_version" in key_info else None
    return pd.DataFrame(
        {
            "post_id": rows["post_id"],
            "key_info": [format_key_info(r) for r in rows[list(KEY_INFO_FIELDS)].to_dict("records")],
            "key_info_id": rows["key_info_id"],
            "key_info_prompt_version": versions if versions is not None else None,
        }
    )


def format_key_info(fields: dict[str, object]) -> str:
    """`Concept: ...; Action: ...` over the fields present (missing or blank ones are skipped)."""
    parts = []
    for field in KEY_INFO_FIELDS:
        value = fields.get(field)
        if value is None or pd.isna(value) or not str(value).strip():
            continue
        parts.append(f"{field.capitalize()}: {str(value).strip()}")
    return "; ".join(parts)


def _intentions(intentions: pd.DataFrame | None) -> pd.DataFrame:
    rows = _usable("intentions", intentions, INTENTION_COLUMNS).copy()
    canonical = {r.lower(): r for r in RELATIONS}
    given = rows["relation"].astype(str).str.strip()
    rows["relation"] = given.str.lower().map(canonical)
    if rows["relation"].isna().any():
        unknown = sorted(given[rows["relation"].isna()].unique())
        raise ValueError(f"intentions: unknown relations {unknown}; expected {list(RELATIONS)}")
    _unique_per("intentions", rows, ["post_id", "relation"])

    texts = rows.pivot(index="post_id", columns="relation", values="intention")
    ids = rows.pivot(index="post_id", columns="relation", values="intention_id")
    wide = pd.DataFrame(index=texts.index)
    for relation in RELATIONS:
        wide[intent_column(relation)] = texts.get(relation)
        wide[intent_id_column(relation)] = ids.get(relation)
    teacher = rows.groupby("post_id").agg(
        teacher_model=("model", _joined),
        teacher_prompt_version=("prompt_version", _joined),
        teacher_prompt_sha=("prompt_sha", _joined),
        teacher_llm_call_id=("llm_call_id", _joined),
    )
    return wide.join(teacher).reset_index()


def _joined(values: pd.Series) -> str:
    return ",".join(sorted({str(v) for v in values.dropna()}))
