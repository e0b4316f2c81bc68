"""Splitting loaded posts into `post_batches` partitions and recording them in the warehouse."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel

from miko_assets.clock import utc_now
from miko_assets.datasets.post import Post
from miko_assets.datasets.registry import LOADERS, load_posts
from miko_assets.ingest.keys import DEFAULT_BATCH_SIZE, batch_key, batch_prefix
from miko_assets.warehouse.schema import INGEST_LEDGER, INGESTED_POSTS
from miko_assets.warehouse.warehouse import Warehouse


class IngestRefused(ValueError):
    """A file that is structurally wrong for its format (empty, no rows, no usable text).

    Nothing of it is ingested; the message is one line that says what is wrong.
    """


class IngestResult(BaseModel):
    """What one ingest did. `rows_added` includes the broken rows (`rows_set_aside`), which are
    stored so that the posts stage lists them in `rejected_posts` with their reason."""

    ingest_id: str
    source_path: str
    rows_read: int
    rows_added: int
    rows_already_ingested: int
    # Posts already ingested under another split, not added again (see `second_copy`).
    rows_in_other_splits: int = 0
    other_splits: list[str] = []
    rows_set_aside: int = 0
    set_aside_reasons: dict[str, int] = {}
    new_batches: list[str]


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


def content_key(dataset: str, source_id: str, occurrence: int, text: str) -> str:
    """Identity of a post's content and source, whatever split it was ingested under."""
    payload = json.dumps([dataset, source_id, occurrence, text], ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:24]


def ingest_posts(
    warehouse: Warehouse,
    posts: Iterable[Post],
    *,
    source_path: str | Path,
    batch_size: int = DEFAULT_BATCH_SIZE,
    second_copy: bool = False,
) -> IngestResult:
    """Record posts not seen before into new batches; re-ingesting the same rows adds nothing.

    A post is known by its content and source (dataset, source id, text), not by its split:
    posts already ingested under another split are counted in `rows_in_other_splits` and not
    added, unless `second_copy` asks for them under this split too. Checking what is known,
    numbering new batches and inserting happen in one transaction that first updates the
    ingest ledger's row, so two ingests at once wait for each other (the DuckDB file has one
    writer at a time; on a DuckLake the two updates conflict and `Warehouse.write()` runs the
    later ingest again) and neither adds what the other did.
    """
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    ingest_id = uuid.uuid4().hex
    occurrences: Counter[str] = Counter()
    keyed: list[tuple[str, str, Post]] = []
    for post in posts:
        occurrence = occurrences[post.post_id]
        keyed.append(
            (row_key(post, occurrence), content_key(post.dataset, post.source_id, occurrence, post.text), post)
        )
        occurrences[post.post_id] += 1

    now = utc_now()

    def record(con: duckdb.DuckDBPyConnection) -> tuple[list[dict], list[str], list[str], list[str]]:
        _take_ingest_turn(con, ingest_id, now)
        _key_legacy_contents(con)
        known_rows = _existing(con, "row_key", [k for k, _, _ in keyed])
        known_contents = _existing(con, "content_key", [c for _, c, _ in keyed])
        fresh, elsewhere = [], []
        for key, content, post in keyed:
            if key in known_rows:
                continue
            if content in known_contents and not second_copy:
                elsewhere.append(content)
                continue
            fresh.append((key, content, post))
        by_prefix: dict[str, list[tuple[str, str, Post]]] = {}
        for item in fresh:
            by_prefix.setdefault(batch_prefix(item[2].dataset, item[2].split), []).append(item)
        rows: list[dict] = []
        new_batches: list[str] = []
        for prefix, items in by_prefix.items():
            number = _next_batch_number(con, prefix)
            for start in range(0, len(items), batch_size):
                batch = batch_key(prefix, number)
                number += 1
                new_batches.append(batch)
                for position, (key, content, post) in enumerate(items[start : start + batch_size]):
                    rows.append(
                        _ingested_row(key, content, post, batch, position, str(source_path), ingest_id, now)
                    )
        if rows:
            con.register("new_rows", pd.DataFrame(rows))
            con.execute(f"INSERT INTO {INGESTED_POSTS.name} BY NAME SELECT * FROM new_rows")
            con.unregister("new_rows")
        return rows, new_batches, elsewhere, _splits_of(con, elsewhere)

    rows, new_batches, elsewhere, other_splits = warehouse.write(record)
    broken = Counter(_reason_kind(row["text_error"]) for row in rows if row["text_error"])
    return IngestResult(
        ingest_id=ingest_id,
        source_path=str(source_path),
        rows_read=len(keyed),
        rows_added=len(rows),
        rows_already_ingested=len(keyed) - len(rows) - len(elsewhere),
        rows_in_other_splits=len(elsewhere),
        other_splits=other_splits,
        rows_set_aside=sum(broken.values()),
        set_aside_reasons=dict(broken.most_common()),
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
    second_copy: bool = False,
    on_post: Callable[[], None] | None = None,
) -> IngestResult:
    """Load a dataset file with the loader for `format_name` and ingest its posts; `on_post()`
    follows each post read (for a progress display).

    Raises `IngestRefused`, adding nothing, for an empty file, a file the format reads no
    rows from, or one in which no row has usable text (the wrong format, no text field).
    """
    path = Path(path).resolve()
    images = Path(images_dir).resolve() if images_dir else None
    if not path.is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if not path.read_bytes().strip():
        raise IngestRefused(f"{path} is empty: nothing to ingest")
    try:
        read = load_posts(format_name, path, split=split, images_dir=images)
        posts = list(_counted(read, on_post) if on_post else read)
    except (ValueError, UnicodeError) as exc:
        if format_name not in LOADERS:
            raise
        raise IngestRefused(f"not a {format_name} file: {exc}") from exc
    if not posts:
        raise IngestRefused(f"read no posts from {path} as {format_name}: is it a {format_name} file?")
    if all(post.text_error for post in posts):
        raise IngestRefused(
            f"no row of {path} has usable text when read as {format_name} "
            f"(row 1: {posts[0].text_error}); check the format and that the file has a text field"
        )
    return ingest_posts(warehouse, posts, source_path=path, batch_size=batch_size, second_copy=second_copy)


def ingest_report(result: IngestResult) -> list[str]:
    """The lines `miko ingest` prints about an ingest (the partitions line is the caller's)."""
    lines = [
        f"read {result.rows_read} rows from {result.source_path}: {result.rows_added} added, "
        f"{result.rows_already_ingested} already ingested"
    ]
    if result.rows_in_other_splits:
        lines.append(
            f"{result.rows_in_other_splits} posts were already ingested under split "
            f"{', '.join(result.other_splits)} and were not added again "
            "(pass --second-copy to add them under this split too)"
        )
    if result.rows_set_aside:
        common = list(result.set_aside_reasons.items())[:5]
        reasons = "; ".join(f"{n} x {reason}" for reason, n in common)
        if len(result.set_aside_reasons) > len(common):
            reasons += "; ..."
        lines.append(
            f"{result.rows_set_aside} of the added rows were set aside as broken and will be listed "
            f"in rejected_posts when their partition's posts are materialized: {reasons}"
        )
    return lines


def _counted(posts: Iterable[Post], on_post: Callable[[], None]) -> Iterator[Post]:
    for post in posts:
        on_post()
        yield post


def known_batches(warehouse: Warehouse) -> list[str]:
    return [r[0] for r in warehouse.rows("SELECT DISTINCT batch FROM ingested_posts ORDER BY batch")]


def _ingested_row(
    key: str, content: str, post: Post, batch: str, position: int, source_path: str, ingest_id: str, now: datetime
) -> dict:
    return {
        "row_key": key,
        "content_key": content,
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


def _existing(con: duckdb.DuckDBPyConnection, column: str, keys: list[str]) -> set[str]:
    """Those of `keys` already in `ingested_posts.<column>` (`row_key` or `content_key`)."""
    if not keys:
        return set()
    found = con.execute(
        f"SELECT DISTINCT {column} FROM {INGESTED_POSTS.name} WHERE {column} IN (SELECT unnest(?::VARCHAR[]))",
        [keys],
    ).fetchall()
    return {r[0] for r in found}


def _splits_of(con: duckdb.DuckDBPyConnection, contents: list[str]) -> list[str]:
    """The splits the posts with these content keys were ingested under."""
    if not contents:
        return []
    found = con.execute(
        f"SELECT DISTINCT split FROM {INGESTED_POSTS.name} WHERE content_key IN (SELECT unnest(?::VARCHAR[])) "
        "ORDER BY split",
        [contents],
    ).fetchall()
    return [r[0] for r in found]


def _take_ingest_turn(con: duckdb.DuckDBPyConnection, ingest_id: str, now: datetime) -> None:
    """Update the ingest ledger's one row (recreating it if it was deleted)."""
    updated = con.execute(
        f"UPDATE {INGEST_LEDGER.name} SET ingests = ingests + 1, last_ingest_id = ?, last_ingested_at = ?",
        [ingest_id, now],
    ).fetchone()[0]
    if not updated:
        con.execute(f"INSERT INTO {INGEST_LEDGER.name} VALUES (1, ?, ?)", [ingest_id, now])


def _key_legacy_contents(con: duckdb.DuckDBPyConnection) -> None:
    """Give rows ingested before content keys existed theirs (occurrence: order within their ingest)."""
    if not con.execute(f"SELECT count(*) FROM {INGESTED_POSTS.name} WHERE content_key IS NULL").fetchone()[0]:
        return
    legacy = con.execute(
        f"""
        SELECT row_key, dataset, source_id, text, occurrence FROM (
            SELECT *, row_number() OVER (
                PARTITION BY ingest_id, dataset, source_id ORDER BY batch, position) - 1 AS occurrence
            FROM {INGESTED_POSTS.name}
        ) WHERE content_key IS NULL
        """
    ).fetchall()
    if not legacy:
        return
    keys = pa.table({
        "row_key": [r[0] for r in legacy],
        "content_key": [content_key(r[1], r[2], r[4], r[3] or "") for r in legacy],
    })
    con.register("legacy_content_keys", keys)
    con.execute(
        f"UPDATE {INGESTED_POSTS.name} SET content_key = k.content_key FROM legacy_content_keys k "
        f"WHERE {INGESTED_POSTS.name}.row_key = k.row_key"
    )
    con.unregister("legacy_content_keys")


def _next_batch_number(con: duckdb.DuckDBPyConnection, prefix: str) -> int:
    rows = con.execute(
        f"SELECT DISTINCT batch FROM {INGESTED_POSTS.name} WHERE starts_with(batch, ?)", [prefix + "-"]
    ).fetchall()
    numbers = [int(b.rsplit("-", 1)[1]) for (b,) in rows if b.rsplit("-", 1)[1].isdigit()]
    return max(numbers, default=-1) + 1


def _reason_kind(error: str) -> str:
    """A row's problem without its line or row number, so that alike problems count together."""
    return re.sub(r"\b(line|row|record) \d+", r"\1 N", error)
