"""The `posts` stage: normalise text, verify images, and reject bad input with a reason."""

from __future__ import annotations

import unicodedata
from typing import Any

import pandas as pd

from miko_assets.clock import utc_now
from miko_assets.imaging.inspect import inspect_image
from miko_assets.missing import present
from miko_assets.warehouse.warehouse import Warehouse

MAX_TEXT_CHARS = 5_000

# Carried from ingested_posts to posts unchanged.
_CARRIED = ("batch", "post_id", "dataset", "split", "source_id", "label", "labels_json", "metadata_json", "image_root")


def normalize_text(text: str) -> str:
    """Unicode NFC, control characters removed (line breaks and tabs become spaces), spaces collapsed."""
    text = unicodedata.normalize("NFC", text)
    chars = [" " if ch in "\t\n\r\x0b\x0c" else ch for ch in text]
    text = "".join(ch for ch in chars if unicodedata.category(ch) != "Cc")
    return " ".join(text.split())


def text_rejection(text: str, text_error: str | None) -> str | None:
    """Why a post's text cannot be used, or None."""
    if text_error:
        return f"undecodable text: {text_error}"
    if not text:
        return "empty text after normalisation"
    if len(text) > MAX_TEXT_CHARS:
        return f"text too long: {len(text)} characters (limit {MAX_TEXT_CHARS})"
    return None


def build_posts(
    ingested: pd.DataFrame, earlier_owner: dict[str, str], run_id: str | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Turn one batch of `ingested_posts` rows into `posts` rows and `rejected_posts` rows.

    `earlier_owner` maps a row key to the batch of an earlier ingested row with the same
    post id: such rows are duplicates and are rejected. A post whose image is missing or
    broken is kept text-only, and the image problem is recorded as a rejection of the image.
    """
    now = utc_now()
    posts: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for row in ingested.sort_values("position").to_dict("records"):
        original = row["text"] or ""
        text = normalize_text(original)

        def reject(part: str, reason: str) -> None:
            rejected.append(
                {
                    "batch": row["batch"],
                    "row_key": row["row_key"],
                    "post_id": row["post_id"],
                    "rejected_part": part,
                    "reason": reason,
                    "text_original": original,
                    "image_path": row["image_path"],
                    "dagster_run_id": run_id,
                    "created_at": now,
                }
            )

        if row["row_key"] in earlier_owner:
            reject("post", f"duplicate post id {row['post_id']} (first ingested in batch {earlier_owner[row['row_key']]})")
            continue
        reason = text_rejection(text, present(row["text_error"]))
        if reason:
            reject("post", reason)
            continue
        post = {k: present(row[k]) for k in _CARRIED}
        post.update(text=text, text_original=original, dagster_run_id=run_id, created_at=now)
        image_path = present(row["image_path"])
        post["image_path"] = image_path
        if image_path:
            info = inspect_image(image_path, post["image_root"])
            if info.ok:
                post.update(
                    image_sha256=info.sha256,
                    image_width=info.width,
                    image_height=info.height,
                    image_format=info.format,
                )
            else:
                post["image_error"] = info.error
                reject("image", f"{info.error}; the post continues text-only")
        posts.append(post)
    return _frame(posts), _frame(rejected)


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows) if rows else pd.DataFrame()


def earlier_owners(warehouse: Warehouse, batch: str) -> dict[str, str]:
    """Row keys of `batch` whose post id was ingested earlier by another row, with that row's batch."""
    rows = warehouse.rows(
        """
        SELECT b.row_key, arg_min(a.batch, (a.ingested_at, a.batch, a.position))
        FROM ingested_posts b
        JOIN ingested_posts a
          ON a.post_id = b.post_id
         AND (a.ingested_at, a.batch, a.position) < (b.ingested_at, b.batch, b.position)
        WHERE b.batch = ?
        GROUP BY b.row_key
        """,
        [batch],
    )
    return dict(rows)
