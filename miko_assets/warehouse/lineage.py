"""How was this intention produced? The whole chain for one intention id, from one connection.

Every query is an equality on an indexed column (intention_id, post_id, call_id, prompt_sha),
so DuckDB answers it from its ART index; rows are then picked in Python. A conjunction, an
ORDER BY ... LIMIT or a filter on an unindexed id column would scan the table instead.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from typing import Any

import duckdb

from miko_assets.warehouse.warehouse import Warehouse

DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"

_VERSIONS_SQL = """
    SELECT *, 'current' AS version_state FROM intentions WHERE intention_id = ?
    UNION ALL BY NAME
    SELECT *, 'history' AS version_state FROM intentions_history WHERE intention_id = ?
"""


class UnknownIntention(LookupError):
    """No current or historical intention has this id."""


def intention_card(warehouse: Warehouse, intention_id: str, dagster_url: str | None = None) -> dict[str, Any]:
    """The intention (current version, or the latest historical one), its inputs, its call and its other versions."""
    warehouse.ensure_schema()
    with warehouse.connect() as con:
        versions = _newest_first(_records(con, _VERSIONS_SQL, [intention_id, intention_id]))
        if not versions:
            raise UnknownIntention(f"no intention with id {intention_id!r}")
        versions.sort(key=lambda v: v["version_state"])  # current first; stable, so newest first within
        chosen = versions[0]
        posts = _newest_first(_records(con, "SELECT * FROM posts WHERE post_id = ?", [chosen["post_id"]]))
        post = posts[0] if posts else None
        caption = _versioned(con, "captions", chosen["post_id"], "caption_id", chosen["caption_id"])
        key_info = _versioned(con, "key_info", chosen["post_id"], "key_info_id", chosen["key_info_id"])
        call = _one(con, "SELECT * FROM llm_calls WHERE call_id = ?", [chosen["llm_call_id"]])
        prompt = _one(con, "SELECT * FROM prompt_registry WHERE prompt_sha = ?", [chosen["prompt_sha"]])
    url = (dagster_url or os.environ.get("MIKO_DAGSTER_URL") or DEFAULT_DAGSTER_URL).rstrip("/")
    request = json.loads(call["request_json"]) if call and call.get("request_json") else None
    return {
        "intention_id": intention_id,
        "intention": _pick(chosen, "relation", "prefix", "completion", "full_text", "kept_prefix", "status", "error", "version_state"),
        "post": _pick(post, "post_id", "batch", "dataset", "split", "text", "text_original", "image_path", "image_sha256", "label") if post else None,
        "caption": _pick(caption, "caption_id", "description_kind", "description", "status", "error", "model", "provider", "code_version", "llm_call_id") if caption else None,
        "key_info": _pick(key_info, "key_info_id", "concept", "action", "object", "emotion", "keywords", "status", "model", "prompt_version", "code_version", "llm_call_id") if key_info else None,
        "generation": {
            **_pick(chosen, "prompt_name", "prompt_version", "prompt_sha", "model", "provider", "params_hash", "input_hash", "llm_call_id", "code_version", "dagster_run_id", "created_at"),
            "dagster_run_url": f"{url}/runs/{chosen['dagster_run_id']}" if chosen.get("dagster_run_id") else None,
            "params": request.get("params") if request else None,
            "rendered_messages": request.get("messages") if request else None,
            "raw_answer": call.get("response_text") if call else None,
            "call": _pick(call, "status", "error", "finish_reason", "tokens_in", "tokens_out", "tokens_cached", "cost_usd", "latency_ms", "attempts", "dagster_run_id", "created_at") if call else None,
            "prompt_template": json.loads(prompt["template_json"]) if prompt else None,
        },
        "other_versions": [
            _pick(v, "version_state", "model", "provider", "prompt_version", "prompt_sha", "completion", "status", "llm_call_id", "code_version", "dagster_run_id", "created_at", "superseded_at", "superseded_by_run")
            for v in versions[1:]
        ],
    }


def card_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown, for the terminal and for Dagster metadata."""
    i, g, post = card["intention"], card["generation"], card["post"] or {}
    lines = [
        f"# Intention {card['intention_id']} ({i['relation']}, {i['version_state']})",
        f"**{i['full_text'] or '(no intention)'}**  ",
        f"status: {i['status']}" + (f" ({i['error']})" if i.get("error") else "") + f"; kept prefix: {i['kept_prefix']}",
        "",
        "## Post",
        f"- {post.get('post_id')} in batch {post.get('batch')} ({post.get('dataset')}/{post.get('split')}, label {post.get('label')})",
        f"- text: {post.get('text')!r}",
        f"- image: {post.get('image_path')} (sha256 {post.get('image_sha256')})",
    ]
    if card["caption"]:
        c = card["caption"]
        lines += ["", "## Caption", f"- {c['caption_id']} [{c['description_kind']}, {c['provider']}/{c['model']}]: {c['description']}"]
    if card["key_info"]:
        k = card["key_info"]
        fields = "; ".join(f"{f}: {k[f]}" for f in ("concept", "action", "object", "emotion", "keywords"))
        lines += ["", "## Key information", f"- {k['key_info_id']} [{k['model']}, prompt {k['prompt_version']}]: {fields}"]
    lines += [
        "", "## Generation",
        f"- prompt: {g['prompt_name']} {g['prompt_version']} (sha {g['prompt_sha']})",
        f"- model: {g['provider']}/{g['model']}; parameters {g['params']} (hash {g['params_hash']})",
        f"- LLM call: {g['llm_call_id']}",
        f"- Dagster run: {g['dagster_run_id']} <{g['dagster_run_url']}>",
        f"- code version: {g['code_version']}; created {g['created_at']}",
        "", "### Rendered prompt",
    ]
    for message in g["rendered_messages"] or []:
        lines += [f"**{message['role']}**", "```", message["content"], "```"]
    lines += ["### Raw answer", "```", str(g["raw_answer"]), "```"]
    if card["other_versions"]:
        lines += ["", "## Other versions"]
        for v in card["other_versions"]:
            lines.append(
                f"- {v['version_state']}: {v['provider']}/{v['model']} prompt {v['prompt_version']} "
                f"run {v['dagster_run_id']} at {v['created_at']}: {v['completion']!r} (call {v['llm_call_id']})"
            )
    return "\n".join(lines)


def _versioned(con: duckdb.DuckDBPyConnection, table: str, post_id: str, key: str, value: Any) -> dict[str, Any] | None:
    """The row of `table` (current, else history) whose `key` is `value`, found through its post."""
    if value is None:
        return None
    rows = _records(
        con,
        f"SELECT * FROM {table} WHERE post_id = ? UNION ALL BY NAME SELECT * FROM {table}_history WHERE post_id = ?",
        [post_id, post_id],
    )
    matches = [r for r in rows if r[key] == value]
    return min(matches, key=lambda r: r.get("superseded_at") is not None, default=None)


def _newest_first(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sorted by created_at, newest first, rows without one last (as SQL's ORDER BY ... DESC)."""
    return sorted(rows, key=lambda r: r["created_at"] or datetime.min, reverse=True)


def _records(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _one(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> dict[str, Any] | None:
    rows = _records(con, sql, params)
    return rows[0] if rows else None


def _pick(row: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: row.get(k) for k in keys}
