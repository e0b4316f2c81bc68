"""A large batch full of bad input materializes, and every bad row is in rejected_posts with its reason."""

from __future__ import annotations

import json
import random
from pathlib import Path

import dagster as dg
from PIL import Image

from miko_assets.assets.posts import posts
from miko_assets.ingest.batches import ingest_file
from miko_assets.ingest.posts import MAX_TEXT_CHARS
from miko_assets.partitions import register_batches
from miko_assets.resources import WarehouseResource
from miko_assets.warehouse.warehouse import Warehouse

N_POSTS = 600


def _write_batch(folder: Path) -> dict[str, int]:
    """A JSONL file of N_POSTS lines, a known number of each kind of bad input; returns those numbers."""
    images = folder / "images"
    images.mkdir()
    Image.new("RGB", (40, 30), "green").save(images / "ok.jpg")
    (images / "corrupt.jpg").write_bytes((images / "ok.jpg").read_bytes()[:120])
    (images / "not_an_image.jpg").write_text("hello")
    rng = random.Random(7)
    expected = {"corrupt_image": 0, "missing_image": 0, "empty": 0, "huge": 0, "non_utf8": 0, "duplicate": 0}
    lines: list[bytes] = []
    seen_ids: set[str] = set()
    for i in range(N_POSTS):
        kind = rng.choice(["good"] * 4 + list(expected))
        record: dict[str, object] = {"id": str(i), "text": f"post number {i} about the weather", "label": i % 2}
        if kind == "corrupt_image":
            record["image"] = rng.choice(["corrupt.jpg", "not_an_image.jpg"])
        elif kind == "missing_image":
            record["image"] = f"gone_{i}.jpg"
        elif kind == "empty":
            record["text"] = rng.choice(["", "   ", "\u0000\u0007", "\n\t"])
        elif kind == "huge":
            record["text"] = "word " * (MAX_TEXT_CHARS // 4)
        elif kind == "duplicate" and seen_ids:
            record["id"] = rng.choice(sorted(seen_ids))
            record["text"] = f"another text claiming id {record['id']} ({i})"
        elif kind == "duplicate":
            kind = "good"
        else:
            record["image"] = "ok.jpg"
        line = json.dumps(record, ensure_ascii=False).encode()
        if kind == "non_utf8":
            line = line.replace(b"weather", b"weath\xe9r\xff")
        lines.append(line)
        seen_ids.add(str(record["id"]))
        if kind != "good":
            expected[kind] += 1
    (folder / "big.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    return expected


def test_large_batch_with_bad_input_materializes_and_records_every_reason(tmp_path: Path) -> None:
    expected = _write_batch(tmp_path)
    wh = Warehouse(tmp_path / "w.duckdb")
    result = ingest_file(wh, "jsonl", tmp_path / "big.jsonl", split="train", images_dir=tmp_path / "images", batch_size=N_POSTS)
    assert result.rows_added == N_POSTS
    (batch,) = result.new_batches
    with dg.instance_for_test() as instance:
        register_batches(instance, wh)
        outcome = dg.materialize([posts], partition_key=batch, instance=instance,
                                 resources={"warehouse": WarehouseResource(path=str(wh.path))})
    assert outcome.success

    reasons = wh.rows("SELECT rejected_part, reason FROM rejected_posts WHERE batch = ?", [batch])
    by_kind = {
        "corrupt_image": sum(1 for part, r in reasons if part == "image" and ("corrupt" in r or "not an image" in r)),
        "missing_image": sum(1 for part, r in reasons if part == "image" and "not found" in r),
        "empty": sum(1 for part, r in reasons if part == "post" and r == "empty text after normalisation"),
        "huge": sum(1 for part, r in reasons if part == "post" and r.startswith("text too long")),
        "non_utf8": sum(1 for part, r in reasons if part == "post" and "UTF-8" in r),
        "duplicate": sum(1 for part, r in reasons if part == "post" and r.startswith("duplicate post id")),
    }
    assert by_kind == expected
    assert len(reasons) == sum(expected.values())
    rejected_posts = sum(expected[k] for k in ("empty", "huge", "non_utf8", "duplicate"))
    kept = wh.rows("SELECT count(*), count(DISTINCT post_id) FROM posts WHERE batch = ?", [batch])[0]
    assert kept == (N_POSTS - rejected_posts, N_POSTS - rejected_posts)
