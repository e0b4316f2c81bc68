"""Splitting loaded posts into `post_batches` partitions and recording them in the warehouse."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from pydantic import BaseModel

from miko_assets.datasets.post import Post
from miko_assets.datasets.registry import load_posts
from miko_assets.warehouse.warehouse import Warehouse

BATCH_KEY_PATTERN = re.compile(r"^[a-z0-9_.-]+$")
DEFAULT_BATCH_SIZE = 500


class IngestResult(BaseModel):
    ingest_id: str
    source_path: str
    rows_read: int
    rows_added: int
    rows_already_ingested: int
    new_batches: list[str]


def batch_prefix(dataset: str, split: str) -> str:
    """`<dataset>-<split>` reduced to the characters a partition key may hold."""
    prefix = f"{_slug(dataset)}-{_slug(split)}"
    if not BATCH_KEY_PATTERN.match(prefix):
        raise ValueError(f"cannot build a partition key from dataset={dataset!r} split={split!r}")
    return prefix


def batch_key(prefix: str, number: int) -> str:
    return f"{prefix}-{number:04d}"


def row_key(post: Post, occurrence: int) -> str:
    """Identity of one ingested row: the same row of the same file always gets the same key.

    Two rows with the same post id but different content get different keys, so both are
    kept and the `posts` stage can reject the later one as a duplicate id with a reason.
    """
    payload = json.dumps(
        [post.dataset, post.split, post.source_id, occurrence, post.text, post.image_path],
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:24]


def ingest_posts(
    warehouse: Warehouse,
    posts: Iterable[Post],
    *,
    source_path: str | Path,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> IngestResult:
    """Record posts not seen before into new batches; re-ingesting the same rows adds nothing."""
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    ingest_id = uuid.uuid4().hex
    occurrences: Counter[str] = Counter()
    keyed: list[tuple[str, Post]] = []
    for post in posts:
        keyed.append((row_key(post, occurrences[post.post_id]), post))
        occurrences[post.post_id] += 1

    known = _existing_row_keys(warehouse, [k for k, _ in keyed])
    fresh = [(k, p) for k, p in keyed if k not in known]

    now = datetime.now(timezone.utc).replace(tzinfo=None)
    rows: list[dict] = []
    new_batches: list[str] = []
    next_number: dict[str, int] = {}
    by_prefix: dict[str, list[tuple[str, Post]]] = {}
    for key, post in fresh:
        by_prefix.setdefault(batch_prefix(post.dataset, post.split), []).append((key, post))
    for prefix, items in by_prefix.items():
        next_number[prefix] = _next_batch_number(warehouse, prefix)
        for start in range(0, len(items), batch_size):
            batch = batch_key(prefix, next_number[prefix])
            next_number[prefix] += 1
            new_batches.append(batch)
            for position, (key, post) in enumerate(items[start : start + batch_size]):
                rows.append(_ingested_row(key, post, batch, position, str(source_path), ingest_id, now))

    warehouse.append("ingested_posts", pd.DataFrame(rows))
    return IngestResult(
        ingest_id=ingest_id,
        source_path=str(source_path),
        rows_read=len(keyed),
        rows_added=len(rows),
        rows_already_ingested=len(keyed) - len(rows),
        new_batches=new_batches,
    )


def ingest_file(
    warehouse: Warehouse,
    format_name: str,
    path: str | Path,
    *,
    split: str | None = None,
    images_dir: str | Path | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> IngestResult:
    """Load a dataset file with the loader for `format_name` and ingest its posts."""
    path = Path(path).resolve()
    images = Path(images_dir).resolve() if images_dir else None
    posts = load_posts(format_name, path, split=split, images_dir=images)
    return ingest_posts(warehouse, posts, source_path=path, batch_size=batch_size)


def known_batches(warehouse: Warehouse) -> list[str]:
    return [r[0] for r in warehouse.rows("SELECT DISTINCT batch FROM ingested_posts ORDER BY batch")]


def _ingested_row(
    key: str, post: Post, batch: str, position: int, source_path: str, ingest_id: str, now: datetime
) -> dict:
    return {
        "row_key": key,
        "post_id": post.post_id,
        "batch": batch,
        "position": position,
        "dataset": post.dataset,
        "split": post.split,
        "source_id": post.source_id,
        "text": post.text,
        "text_error": post.text_error,
        "image_path": post.image_path,
        "image_root": post.image_root,
        "label": post.label,
        "labels_json": json.dumps(post.labels, ensure_ascii=False),
        "metadata_json": json.dumps(post.metadata, ensure_ascii=False, default=str),
        "source_path": source_path,
        "ingest_id": ingest_id,
        "ingested_at": now,
    }


def _existing_row_keys(warehouse: Warehouse, keys: list[str]) -> set[str]:
    if not keys:
        return set()
    found = warehouse.rows(
        "SELECT row_key FROM ingested_posts WHERE row_key IN (SELECT unnest(?))", [keys]
    )
    return {r[0] for r in found}


def _next_batch_number(warehouse: Warehouse, prefix: str) -> int:
    rows = warehouse.rows(
        "SELECT DISTINCT batch FROM ingested_posts WHERE starts_with(batch, ?)", [prefix + "-"]
    )
    numbers = [int(b.rsplit("-", 1)[1]) for (b,) in rows if b.rsplit("-", 1)[1].isdigit()]
    return max(numbers, default=-1) + 1


def _slug(value: str) -> str:
    return re.sub(r"[^a-z0-9_.]+", "_", value.lower()).strip("_") or "none"
