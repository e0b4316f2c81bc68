"""Key-information stage: the five MIKO fields extracted from each post's text (and caption)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from miko_assets.distill.key_info import KEY_INFO_FIELDS, KeyInfo, build_key_info_request, parse_key_info
from miko_assets.stages.common import Completer, StageRun, content_hash, present, response_failure


def usable_captions(captions: pd.DataFrame) -> dict[str, tuple[str, str]]:
    """post_id -> (caption_id, description) for the captions later stages may use."""
    if captions.empty:
        return {}
    ok = captions[(captions["status"] == "ok") & captions["description"].notna()]
    return {r.post_id: (r.caption_id, r.description) for r in ok.itertuples()}


def key_info_rows(posts: pd.DataFrame, captions: pd.DataFrame, run: StageRun, complete: Completer) -> pd.DataFrame:
    """One row per post: the five fields (any may be missing) or the reason the call failed."""
    caption_of = usable_captions(captions)
    records = posts.to_dict("records")
    requests, hashes = [], []
    for post in records:
        caption = caption_of.get(post["post_id"], (None, None))[1]
        requests.append(build_key_info_request(run.config, run.prompt, post["text"], caption))
        hashes.append(content_hash(post["text"], caption))
    responses = complete(requests, parse_key_info)

    rows: list[dict[str, Any]] = []
    for post, input_hash, response in zip(records, hashes, responses, strict=True):
        if response.status == "ok":
            fields = parse_key_info(response.text).model_dump()
            lineage = run.lineage(input_hash=input_hash, response=response, status="ok")
        else:
            fields = KeyInfo().model_dump()
            lineage = run.lineage(input_hash=input_hash, response=response, status="failed",
                                  error=response_failure(response))
        row = {"batch": post["batch"], "post_id": post["post_id"], **fields, **lineage}
        row["key_info_id"] = content_hash(post["post_id"], run.code_version, input_hash, lineage["llm_call_id"])
        rows.append(row)
    return pd.DataFrame(rows)


def key_info_of(frame: pd.DataFrame) -> dict[str, tuple[str, KeyInfo]]:
    """post_id -> (key_info_id, KeyInfo) for the successful key-info rows."""
    if frame.empty:
        return {}
    ok = frame[frame["status"] == "ok"]
    return {
        r["post_id"]: (r["key_info_id"], KeyInfo(**{f: present(r[f]) for f in KEY_INFO_FIELDS}))
        for r in ok.to_dict("records")
    }
