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

from miko_assets.stages.config_changes import describe_changes
from miko_assets.warehouse.warehouse import Warehouse

DEFAULT_DAGSTER_URL = "http://127.0.0.1:3000"

_VERSIONS_SQL = """
    SELECT *, 'current' AS version_state FROM intentions WHERE intention_id = ?
    UNION ALL BY NAME
    SELECT *, 'history' AS version_state FROM intentions_history WHERE intention_id = ?
"""


class UnknownIntention(LookupError):
    """No current or historical intention has this id (or version id)."""


def split_version_id(asked: str) -> tuple[str, str | None]:
    """(intention id, version id or None): a version id is `<intention_id>.<hash>`."""
    intention_id, dot, _ = asked.partition(".")
    return intention_id, asked if dot else None


def intention_card(warehouse: Warehouse, asked: str, dagster_url: str | None = None) -> dict[str, Any]:
    """How one version of an intention was made: its inputs, call, prompt, and every version.

    `asked` is a stable intention id (its current version, or the newest in history) or a
    version id (that version, with the version that replaced it and why).
    """
    intention_id, wanted = split_version_id(asked)
    warehouse.ensure_schema()
    with warehouse.connect() as con:
        versions = _all_versions(con, intention_id)
        if not versions:
            raise UnknownIntention(f"no intention with id {intention_id!r} (current or history)")
        position = 0
        if wanted is not None:
            found = [n for n, v in enumerate(versions) if v["version_id"] == wanted]
            if not found:
                known = ", ".join(str(v["version_id"]) for v in versions)
                raise UnknownIntention(f"intention {intention_id} has no version {wanted!r}; its versions: {known}")
            position = found[0]
        chosen = versions[position]
        newer = versions[position - 1] if position > 0 else None
        posts = _newest_first(_records(con, "SELECT * FROM posts WHERE post_id = ?", [chosen["post_id"]]))
        post = posts[0] if posts else None
        caption = _versioned(con, "captions", chosen["post_id"], "caption_id", chosen["caption_id"])
        key_info = _versioned(con, "key_info", chosen["post_id"], "key_info_id", chosen["key_info_id"])
        call = _one(con, "SELECT * FROM llm_calls WHERE call_id = ?", [chosen["llm_call_id"]])
        prompt = _one(con, "SELECT * FROM prompt_registry WHERE prompt_sha = ?", [chosen["prompt_sha"]])
        replaced_by = _replacement(con, chosen, newer) if newer else None
    url = (dagster_url or os.environ.get("MIKO_DAGSTER_URL") or DEFAULT_DAGSTER_URL).rstrip("/")
    request = json.loads(call["request_json"]) if call and call.get("request_json") else None
    return {
        "intention_id": intention_id,
        "version_id": chosen["version_id"],
        "intention": _pick(chosen, "relation", "prefix", "completion", "full_text", "kept_prefix", "status", "error", "version_state"),
        "post": {
            **_pick(post, "post_id", "batch", "dataset", "split", "text", "text_original", "image_sha256", "label"),
            "image_path": _relative(post["image_path"], post.get("image_root")),
            "images_dir": post.get("image_root"),
        } if post else None,
        "caption": _pick(caption, "caption_id", "description_kind", "description", "status", "error", "model", "provider", "code_version", "llm_call_id") if caption else None,
        "key_info": _pick(key_info, "key_info_id", "concept", "action", "object", "emotion", "keywords", "status", "model", "prompt_version", "code_version", "llm_call_id", "field_call_ids") if key_info else None,
        "generation": {
            **_pick(chosen, "prompt_name", "prompt_version", "prompt_sha", "model", "provider", "params_hash", "input_hash", "llm_call_id", "code_version", "dagster_run_id", "created_at"),
            "dagster_run_url": f"{url}/runs/{chosen['dagster_run_id']}" if chosen.get("dagster_run_id") else None,
            "params": request.get("params") if request else None,
            "rendered_messages": request.get("messages") if request else None,
            "continuation": request.get("continuation") if request else None,
            "raw_answer": call.get("response_text") if call else None,
            "call": _pick(call, "status", "error", "finish_reason", "tokens_in", "tokens_out", "tokens_cached", "cost_usd", "latency_ms", "attempts", "dagster_run_id", "created_at") if call else None,
            "prompt_template": json.loads(prompt["template_json"]) if prompt else None,
        },
        "superseded": _pick(chosen, "superseded_at", "superseded_by_run") if chosen["version_state"] == "history" else None,
        "replaced_by": replaced_by,
        "other_versions": [_pick(v, *_VERSION_FIELDS) for v in versions if v is not chosen],
    }


_VERSION_FIELDS = ("version_id", "version_state", "model", "provider", "prompt_version", "prompt_sha", "completion", "status",
                   "llm_call_id", "code_version", "dagster_run_id", "created_at", "superseded_at", "superseded_by_run")


def _all_versions(con: duckdb.DuckDBPyConnection, intention_id: str) -> list[dict[str, Any]]:
    """Every version of the intention: the current one first, then history, newest first."""
    versions = _newest_first(_records(con, _VERSIONS_SQL, [intention_id, intention_id]))
    versions.sort(key=lambda v: v["version_state"])  # current first; stable, so newest first within
    return versions


def _replacement(con: duckdb.DuckDBPyConnection, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The version that replaced `old`, and why, in words."""
    return {**_pick(new, "version_id", "version_state", "completion", "created_at", "dagster_run_id"), "why": version_changes(con, old, new)}


def version_changes(con: duckdb.DuckDBPyConnection, old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Why `new` differs from `old`: configuration changes, else changed inputs, else a new call."""
    if old["code_version"] != new["code_version"]:
        configs = {
            version: json.loads(text)
            for version in (old["code_version"], new["code_version"])
            for (text,) in con.execute("SELECT config_json FROM stage_configs WHERE code_version = ?", [version]).fetchall()
        }
        return describe_changes(old["code_version"], configs.get(old["code_version"]), new["code_version"], configs.get(new["code_version"]))
    if old["input_hash"] != new["input_hash"]:
        return ["its inputs changed (the post's caption or key information was made again)"]
    if old["llm_call_id"] != new["llm_call_id"]:
        return ["the same configuration made another call"]
    return [f"status {old['status']} → {new['status']}"] if old["status"] != new["status"] else ["made again with the same result"]


def versions_diff(first: dict[str, Any], second: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(field, in first, in second) for every field of two cards that differs."""
    flat = [_flatten(first), _flatten(second)]
    skip = {"other_versions", "replaced_by", "superseded"}
    fields = [k for k in flat[0] if k.split(".")[0] not in skip] + [k for k in flat[1] if k not in flat[0] and k.split(".")[0] not in skip]
    return [(k, flat[0].get(k), flat[1].get(k)) for k in fields if flat[0].get(k) != flat[1].get(k)]


def _flatten(card: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in card.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def card_markdown(card: dict[str, Any]) -> str:
    """The card as Markdown, for the terminal and for Dagster metadata."""
    i, g, post = card["intention"], card["generation"], card["post"] or {}
    lines = [
        f"# Intention {card['intention_id']} ({i['relation']}, {i['version_state']}), version {card['version_id']}",
        f"**{i['full_text'] or '(no intention)'}**  ",
        f"status: {i['status']}" + (f" ({i['error']})" if i.get("error") else "") + f"; kept prefix: {i['kept_prefix']}",
        "",
        "## Post",
        f"- {post.get('post_id')} in batch {post.get('batch')} ({post.get('dataset')}/{post.get('split')}, label {post.get('label')})",
        f"- text: {post.get('text')!r}",
        f"- image: {post.get('image_path')}" + (f" in {post['images_dir']}" if post.get("images_dir") else "")
        + f" (sha256 {post.get('image_sha256')})",
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
    if g.get("continuation"):
        lines += [f"### Raw answer (continuing {g['continuation']['prefix']!r}, written at the start of the answer)"]
    else:
        lines += ["### Raw answer"]
    lines += ["```", str(g["raw_answer"]), "```"]
    if card["superseded"]:
        s = card["superseded"]
        lines += ["", "## Replaced", f"- superseded at {s['superseded_at']} by run {s['superseded_by_run']}"]
    if card["replaced_by"]:
        r = card["replaced_by"]
        lines += [f"- by version {r['version_id']} ({r['version_state']}, run {r['dagster_run_id']}): {r['completion']!r}",
                  f"- why: {'; '.join(r['why'])}"]
    if card["other_versions"]:
        lines += ["", "## Other versions (`miko lineage <version id>` shows one)"]
        for v in card["other_versions"]:
            lines.append(
                f"- {v['version_id']} ({v['version_state']}): {v['provider']}/{v['model']} prompt {v['prompt_version']} "
                f"run {v['dagster_run_id']} at {v['created_at']}: {v['completion']!r}"
            )
    return "\n".join(lines)


def intention_diff(warehouse: Warehouse, first: str, second: str | None = None) -> dict[str, Any]:
    """Two versions of one intention and what differs between them, older first.

    With one id: a version id is compared with the version that replaced it; an intention id
    compares its newest version with the one before.
    """
    card = intention_card(warehouse, first)
    if second is None:
        if card["replaced_by"]:
            older, newer = card, intention_card(warehouse, card["replaced_by"]["version_id"])
        elif card["other_versions"]:
            older, newer = intention_card(warehouse, card["other_versions"][0]["version_id"]), card
        else:
            raise UnknownIntention(f"intention {card['intention_id']} has only one version ({card['version_id']})")
    else:
        older, newer = card, intention_card(warehouse, second)
        if older["intention_id"] != newer["intention_id"]:
            raise ValueError(f"{first} and {second} are versions of different intentions")
    with warehouse.connect() as con:
        why = version_changes(con, _version_row(older), _version_row(newer))
    return {"from": older, "to": newer, "why": why, "changes": versions_diff(older, newer)}


def _version_row(card: dict[str, Any]) -> dict[str, Any]:
    return {**card["generation"], "status": card["intention"]["status"]}


def diff_markdown(diff: dict[str, Any]) -> str:
    """What differs between two versions of one intention, one line per field."""
    older, newer = diff["from"], diff["to"]
    lines = [
        f"# Intention {older['intention_id']}: {older['version_id']} → {newer['version_id']}",
        f"why: {'; '.join(diff['why'])}",
        "",
    ]
    for field, a, b in diff["changes"]:
        if isinstance(a, list | dict) or isinstance(b, list | dict):
            a, b = json.dumps(a, ensure_ascii=False, default=str), json.dumps(b, ensure_ascii=False, default=str)
        lines.append(f"- {field}: {a!r} → {b!r}")
    return "\n".join(lines)


def _relative(path: str | None, folder: str | None) -> str | None:
    """`path` relative to `folder` when it lies inside it, else as stored."""
    if not path or not folder:
        return path
    relative = os.path.relpath(path, folder)
    return path if relative.startswith("..") else relative


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
