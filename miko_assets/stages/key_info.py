"""Key-information stage: the five MIKO fields extracted from each post's text (and caption)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from miko_assets.distill.key_info import (
    KEY_INFO_FIELDS,
    KeyInfo,
    field_value,
    key_info_requests,
    parse_key_info,
)
from miko_assets.llm.models import LLMResponse
from miko_assets.missing import present
from miko_assets.stages.common import Completer, StageRun, content_hash, response_failure


def usable_captions(captions: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """post_id -> (caption_id, description) for the captions later stages may use."""
    if captions.empty:
        return {}
    ok = captions[(captions["status"] == "ok") & captions["description"].notna()]
    return {r.post_id: (r.caption_id, r.description) for r in ok.itertuples()}


def key_info_rows(posts: pd.DataFrame, captions: pd.DataFrame, run: StageRun, complete: Completer) -> pd.DataFrame:
    """One row per post: the five fields (any may be missing) or the reason the call failed.

    A `completion` prompt makes one call per field: the row is `ok` when at least one field
    was answered, `error` names the fields that failed, `llm_call_id` is the first answered
    field's call and `field_call_ids` maps every field to its call.
    """
    caption_of = usable_captions(captions)
    records = posts.to_dict("records")
    per_field = run.prompt.per_prefix
    requests, hashes = [], []
    for post in records:
        caption = caption_of.get(post["post_id"], (None, None))[1]
        requests += key_info_requests(run.config, run.prompt, post["text"], caption)
        hashes.append(content_hash(post["text"], caption))
    answers = complete(requests) if per_field else complete(requests, parse_key_info)
    width = len(KEY_INFO_FIELDS) if per_field else 1

    rows: list[dict[str, Any]] = []
    for index, (post, input_hash) in enumerate(zip(records, hashes, strict=True)):
        responses = answers[index * width : (index + 1) * width]
        fields, lineage, call_ids = (
            _per_field(run, input_hash, responses) if per_field else _one_call(run, input_hash, responses[0])
        )
        row = {"batch": post["batch"], "post_id": post["post_id"], **fields, **lineage, "field_call_ids": call_ids}
        row["key_info_id"] = content_hash(post["post_id"], run.code_version, input_hash, call_ids or lineage["llm_call_id"])
        rows.append(row)
    return pd.DataFrame(rows)


def _one_call(run: StageRun, input_hash: str, response: LLMResponse) -> tuple[dict[str, Any], dict[str, Any], None]:
    if response.status == "ok":
        return parse_key_info(response.text).model_dump(), run.lineage(input_hash=input_hash, response=response, status="ok"), None
    failed = run.lineage(input_hash=input_hash, response=response, status="failed", error=response_failure(response))
    return KeyInfo().model_dump(), failed, None


def _per_field(run: StageRun, input_hash: str, responses: list[LLMResponse]) -> tuple[dict[str, Any], dict[str, Any], str]:
    prefixes = run.prompt.prefixes or {}
    fields: dict[str, Any] = {}
    errors = []
    for field, response in zip(KEY_INFO_FIELDS, responses, strict=True):
        fields[field] = field_value(prefixes[field], response.text) if response.status == "ok" else None
        if response.status != "ok":
            errors.append(f"{field}: {response_failure(response)}")
    answered = [r for r in responses if r.status == "ok"]
    lineage = run.lineage(
        input_hash=input_hash, response=(answered or responses)[0],
        status="ok" if answered else "failed", error="; ".join(errors) or None,
    )
    call_ids = json.dumps(dict(zip(KEY_INFO_FIELDS, (r.call_id for r in responses), strict=True)))
    return fields, lineage, call_ids


def key_info_of(frame: pd.DataFrame) -> dict[str, tuple[str, KeyInfo]]:
    """post_id -> (key_info_id, KeyInfo) for the successful key-info rows."""
    if frame.empty:
        return {}
    ok = frame[frame["status"] == "ok"]
    return {
        r["post_id"]: (r["key_info_id"], KeyInfo(**{f: present(r[f]) for f in KEY_INFO_FIELDS}))
        for r in ok.to_dict("records")
    }
