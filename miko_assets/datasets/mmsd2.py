"""MMSD2.0 (Qin et al., Findings ACL 2023): a JSON list of `{image_id, text, label}`.

The image of a post is `<images_dir>/<image_id>.jpg`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from miko_assets.datasets.common import image_fields, new_post, parse_flag, resolve_split
from miko_assets.datasets.post import Post
from miko_assets.json_files import parse_json_file

DATASET = "mmsd2"


def load_mmsd2(path: Path, *, split: str | None = None, images_dir: Path | None = None) -> Iterator[Post]:
    """Yield the posts of an MMSD2.0 `text_json_final` file."""
    split = resolve_split(split, path)
    records = parse_json_file(path.read_bytes(), str(path))
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of posts")
    for index, record in enumerate(records):
        try:
            source_id = str(record["image_id"])
            text = record["text"]
            label = parse_flag(record["label"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{path}: record {index} is not an MMSD2.0 post ({error!r})") from error
        yield new_post(
            DATASET,
            split,
            source_id,
            text,
            **image_fields(images_dir, f"{source_id}.jpg"),
            label=label,
        )
