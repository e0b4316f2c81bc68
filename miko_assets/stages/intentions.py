"""Intentions stage: ten rows per post (nine ATOMIC relations and Open), from one call per post
or one call per relation."""

from __future__ import annotations

from typing import Any

import pandas as pd

from miko_assets.distill.intentions import (
    ParsedIntention,
    intentions_requests,
    parse_intentions,
    relation_intention,
)
from miko_assets.distill.parsing import ParseError
from miko_assets.distill.relations import RELATIONS
from miko_assets.stages.common import Completer, StageRun, content_hash, response_failure
from miko_assets.stages.key_info import key_info_of, usable_captions


def intention_id(post_id: str, relation: str) -> str:
    """Stable across regenerations: one id per post and relation; versions differ by LLM call."""
    return content_hash(post_id, relation)


def version_id(row: dict[str, Any]) -> str:
    """`<intention_id>.<hash>` of what the row says and how it was made (not when, nor by which run),
    so the same generation made again keeps its id and any other version gets its own."""
    made = [row[c] for c in _VERSION_CONTENT]
    return f"{row['intention_id']}.{content_hash(*made)[:10]}"


_VERSION_CONTENT = ("completion", "full_text", "kept_prefix", "status", "error", "caption_id", "key_info_id",
                    "code_version", "input_hash", "llm_call_id")


def require_some_intention(answer: str) -> tuple[ParsedIntention, ...]:
    """Validator for the LLM layer: an answer with no usable relation at all earns a repair attempt."""
    parsed = parse_intentions(answer)
    if not any(p.status == "ok" for p in parsed):
        raise ParseError("no_intentions", f"no intention found in {answer[:200]!r}")
    return parsed


def intention_rows(
    posts: pd.DataFrame, captions: pd.DataFrame, key_info: pd.DataFrame, run: StageRun, complete: Completer
) -> pd.DataFrame:
    """Ten rows per post, one per relation, each `ok` or with the reason it has no intention.

    A `completion` prompt makes one call per relation, and each row carries its own call's id;
    otherwise one call per post is parsed into the ten rows, which share its id.
    """
    caption_of = usable_captions(captions)
    key_info_by_post = key_info_of(key_info)
    records = posts.to_dict("records")
    per_relation = run.prompt.per_prefix
    requests, inputs = [], []
    for post in records:
        caption_id, caption = caption_of.get(post["post_id"], (None, None))
        key_info_id, info = key_info_by_post.get(post["post_id"], (None, None))
        requests += intentions_requests(run.config, run.prompt, post["text"], caption, info)
        inputs.append((caption_id, key_info_id, content_hash(post["text"], caption, info and info.model_dump())))
    if per_relation:
        answers = complete(requests)
        responses = [tuple(answers[i : i + len(RELATIONS)]) for i in range(0, len(answers), len(RELATIONS))]
    else:
        responses = [(r,) * len(RELATIONS) for r in complete(requests, require_some_intention)]

    rows: list[dict[str, Any]] = []
    for post, (caption_id, key_info_id, input_hash), post_responses in zip(records, inputs, responses, strict=True):
        parsed = (
            [relation_intention(r, a.text) if a.status == "ok" else None for r, a in zip(RELATIONS, post_responses, strict=True)]
            if per_relation
            else parse_intentions(post_responses[0].text) if post_responses[0].status == "ok" else [None] * len(RELATIONS)
        )
        for relation, item, response in zip(RELATIONS, parsed, post_responses, strict=True):
            if item is None:
                status, error = "failed", response_failure(response)
            else:
                status, error = item.status, None if item.status == "ok" else f"the answer has no {relation.name} intention ({item.status})"
            rows.append({
                "batch": post["batch"],
                "post_id": post["post_id"],
                "intention_id": intention_id(post["post_id"], relation.name),
                "relation": relation.name,
                "relation_index": relation.number,
                "prefix": relation.prefix,
                "completion": item.completion if item else None,
                "full_text": (item.full_text or None) if item else None,
                "kept_prefix": item.kept_prefix if item else None,
                "caption_id": caption_id,
                "key_info_id": key_info_id,
                **run.lineage(input_hash=input_hash, response=response, status=status, error=error),
            })
            rows[-1]["version_id"] = version_id(rows[-1])
    return pd.DataFrame(rows)
