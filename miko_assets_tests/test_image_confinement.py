"""Image paths from data never read anything outside their image folder (issue 15, item 1)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from miko_assets.annotate.labelstudio import local_files_url
from miko_assets.datasets.registry import load_posts
from miko_assets.imaging import confine
from miko_assets.imaging.confine import UnsafeImagePath, confined_path
from miko_assets.imaging.encode import encode_for_api
from miko_assets.imaging.inspect import ImageError
from miko_assets.ingest.batches import ingest_file
from miko_assets.ingest.posts import build_posts
from miko_assets.warehouse.warehouse import Warehouse


@pytest.fixture
def image_tree(tmp_path: Path) -> tuple[Path, Path]:
    """An images folder with good, linked and hostile entries, and a real JPEG outside it."""
    images = tmp_path / "data" / "images"
    (images / "sub").mkdir(parents=True)
    Image.new("RGB", (32, 24), "red").save(images / "good.jpg")
    Image.new("RGB", (32, 24), "green").save(tmp_path / "data" / "outside.jpg")
    (images / "link_out.jpg").symlink_to(tmp_path / "data" / "outside.jpg")
    (images / "sub" / "link_in.jpg").symlink_to(images / "good.jpg")
    os.mkfifo(images / "pipe.jpg")
    (images / "folder.jpg").mkdir()
    return images, tmp_path / "data" / "outside.jpg"


def test_confined_path_accepts_only_regular_files_inside_the_folder(image_tree: tuple[Path, Path]) -> None:
    images, outside = image_tree
    assert confined_path(images / "good.jpg", images) == (images / "good.jpg").resolve()
    assert confined_path("sub/link_in.jpg", images) == (images / "good.jpg").resolve()
    refused = {
        "../outside.jpg": "through '..'",
        "sub/../../outside.jpg": "through '..'",
        str(outside): "outside the image folder",
        "/etc/passwd": "outside the image folder",
        "link_out.jpg": "symlink",
        "pipe.jpg": "named pipe",
        "folder.jpg": "directory",
    }
    for name, reason in refused.items():
        with pytest.raises(UnsafeImagePath, match=reason):
            confined_path(images / name if not name.startswith("/") else name, images)
    with pytest.raises(FileNotFoundError):
        confined_path(images / "missing.jpg", images)


def test_posts_stage_rejects_escaping_images_with_reasons_and_never_opens_them(
    tmp_path: Path, image_tree: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    images, outside = image_tree
    names = {
        "1": "good.jpg",
        "2": "../outside.jpg",
        "3": "/etc/passwd",
        "4": "link_out.jpg",
        "5": "pipe.jpg",
        "6": "sub/link_in.jpg",
        "7": "folder.jpg",
        "8": str(outside),
    }
    data = images.parent / "posts.jsonl"
    data.write_text("\n".join(json.dumps({"id": i, "text": f"post {i}", "image": n}) for i, n in names.items()))
    wh = Warehouse(tmp_path / "w.duckdb")
    (batch,) = ingest_file(wh, "jsonl", data, split="train", images_dir=images).new_batches

    opened: list[str] = []
    real_open = os.open
    monkeypatch.setattr(confine.os, "open", lambda p, *a, **k: (opened.append(str(p)), real_open(p, *a, **k))[1])
    ingested = wh.query("SELECT * FROM ingested_posts WHERE batch = ?", [batch])
    posts, rejected = build_posts(ingested, {}, run_id=None)

    verified = dict(zip(posts["source_id"], posts["image_sha256"], strict=True))
    assert {k for k, v in verified.items() if isinstance(v, str)} == {"1", "6"}
    assert len(posts) == 8, "an image problem never drops the post itself"
    reasons = dict(zip(rejected["post_id"], rejected["reason"], strict=True))
    assert set(rejected["rejected_part"]) == {"image"}
    assert "through '..'" in reasons["posts:2"]
    assert "outside the image folder" in reasons["posts:3"]
    assert "symlink" in reasons["posts:4"]
    assert "named pipe" in reasons["posts:5"]
    assert "directory" in reasons["posts:7"]
    assert "outside the image folder" in reasons["posts:8"]
    assert opened == [str((images / "good.jpg").resolve())] * 2, "only the two good images were opened"


def test_image_folder_defaults_to_the_data_files_folder(tmp_path: Path) -> None:
    Image.new("RGB", (8, 8), "red").save(tmp_path / "secret.jpg")
    (tmp_path / "d").mkdir()
    data = tmp_path / "d" / "p.jsonl"
    data.write_text(json.dumps({"id": "1", "text": "hi", "image": "../secret.jpg"}))
    (post,) = load_posts("jsonl", data)
    assert post.image_root == str(data.parent)
    row = pd.DataFrame([{**post.model_dump(exclude={"labels", "metadata"}), "batch": "b", "row_key": "k",
                         "position": 0, "labels_json": "{}", "metadata_json": "{}"}])
    _, rejected = build_posts(row, {}, run_id=None)
    assert "through '..'" in rejected["reason"].item()


def test_miko_release_images_are_confined(tmp_path: Path) -> None:
    release = tmp_path / "release.json"
    release.write_text(json.dumps([{"image": "../../etc/passwd", "text": "hello", "intentions": {}}]))
    (post,) = load_posts("miko_release", release, images_dir=tmp_path / "imgs")
    with pytest.raises(ImageError, match="through '..'"):
        encode_for_api(post.image_path, post.image_root)


def test_label_studio_urls_refuse_files_outside_the_document_root(image_tree: tuple[Path, Path]) -> None:
    images, outside = image_tree
    assert local_files_url(images / "good.jpg", images) == "/data/local-files/?d=good.jpg"
    for hostile in (outside, images / "link_out.jpg", images / ".." / "outside.jpg"):
        with pytest.raises(UnsafeImagePath):
            local_files_url(hostile, images)
