"""Ingestion into partitions and the `posts` asset, through a real Dagster instance and DuckDB file."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pytest
from PIL import Image

from miko_assets.assets.ingest import ingest_job, register_batches
from miko_assets.assets.posts import posts
from miko_assets.ingest.batches import ingest_file
from miko_assets.ingest.posts import MAX_TEXT_CHARS, normalize_text
from miko_assets.resources import WarehouseResource
from miko_assets.warehouse.warehouse import Warehouse


@pytest.fixture
def messy_dataset(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (64, 48), "red").save(images / "good.jpg")
    Image.new("RGB", (64, 48), "blue").save(images / "full.jpg")
    (images / "broken.jpg").write_bytes((images / "full.jpg").read_bytes()[:300])
    lines = [
        json.dumps({"id": "1", "text": "Cafe\u0301 time \u2615 #monday\x07", "image": "good.jpg", "label": 0}),
        json.dumps({"id": "2", "text": "great, another meeting", "image": "broken.jpg", "label": 1}),
        json.dumps({"id": "3", "text": "no picture here", "image": "missing.jpg"}),
        json.dumps({"id": "4", "text": "   \t  "}),
        json.dumps({"id": "5", "text": "x" * (MAX_TEXT_CHARS + 1)}),
        json.dumps({"id": "1", "text": "a second post claiming id 1"}),
    ]
    data = "\n".join(lines).encode() + b'\n{"id": "6", "text": "caf\xe9 latin-1 bytes"}\n'
    path = tmp_path / "messy.jsonl"
    path.write_bytes(data)
    return path


def test_normalize_text() -> None:
    assert normalize_text("Cafe\u0301\x00 time\n\n\u2615\u200d ") == "Caf\u00e9 time \u2615\u200d"


def test_ingest_is_idempotent_and_batches_are_valid_keys(tmp_path: Path, messy_dataset: Path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    first = ingest_file(wh, "jsonl", messy_dataset, split="train", batch_size=3)
    assert first.rows_read == 7
    assert first.new_batches == ["messy-train-0000", "messy-train-0001", "messy-train-0002"]
    again = ingest_file(wh, "jsonl", messy_dataset, split="train", batch_size=3)
    assert again.rows_added == 0 and again.new_batches == [] and again.rows_already_ingested == 7
    assert wh.rows("SELECT count(*) FROM ingested_posts") == [(7,)]

    with dg.instance_for_test() as instance:
        assert register_batches(instance, wh) == first.new_batches
        assert register_batches(instance, wh) == []
        assert instance.get_dynamic_partitions("post_batches") == first.new_batches


def test_posts_asset_rejects_bad_input_with_reasons(tmp_path: Path, messy_dataset: Path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    result = ingest_file(wh, "jsonl", messy_dataset, split="train", images_dir=messy_dataset.parent / "images", batch_size=100)
    (batch,) = result.new_batches
    with dg.instance_for_test() as instance:
        register_batches(instance, wh)
        outcome = dg.materialize(
            [posts], partition_key=batch, instance=instance,
            resources={"warehouse": WarehouseResource(path=str(wh.path))},
        )
        assert outcome.success
        metadata = outcome.asset_materializations_for_node("posts")[0].metadata
        assert metadata["posts"].value == 3

    kept = dict(wh.rows("SELECT source_id, text FROM posts WHERE batch = ? ORDER BY source_id", [batch]))
    assert kept == {"1": "Caf\u00e9 time \u2615 #monday", "2": "great, another meeting", "3": "no picture here"}
    good = wh.rows("SELECT image_width, image_height, length(image_sha256), image_error FROM posts WHERE source_id = '1'")
    assert good == [(64, 48, 64, None)]
    assert wh.rows("SELECT image_sha256 IS NULL, image_error IS NOT NULL FROM posts WHERE source_id = '2'") == [(True, True)]

    reasons = wh.rows("SELECT post_id, rejected_part, reason FROM rejected_posts WHERE batch = ? ORDER BY post_id, reason", [batch])
    by_post = {(p, part): r for p, part, r in reasons}
    assert len(reasons) == 6
    assert "duplicate post id messy:1" in by_post[("messy:1", "post")]
    assert "corrupt" in by_post[("messy:2", "image")]
    assert "not found" in by_post[("messy:3", "image")]
    assert by_post[("messy:4", "post")] == "empty text after normalisation"
    assert by_post[("messy:5", "post")].startswith("text too long")
    assert "UTF-8" in by_post[("messy:6", "post")]


def test_ingest_job_from_config(tmp_path: Path, messy_dataset: Path) -> None:
    wh_path = tmp_path / "w.duckdb"
    with dg.instance_for_test() as instance:
        result = ingest_job.execute_in_process(
            run_config={"ops": {"ingest_dataset": {"config": {"format": "jsonl", "path": str(messy_dataset), "split": "train"}}}},
            instance=instance,
            resources={"warehouse": WarehouseResource(path=str(wh_path))},
        )
        assert result.success
        assert instance.get_dynamic_partitions("post_batches") == ["messy-train-0000"]
