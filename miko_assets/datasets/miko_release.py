"""MIKO's released intention benchmark (RingBDStack/Miko): a JSON list of posts.

Each record is `{"image": "<name>.jpg", "text": ..., "intentions": {"Intention 1": ...,
"Intention 10": ...}, "intention_labels": [10 x 0/1]}`; label i judges "Intention i+1".
Images are not published, so `image_path` is set only when an images dir is given.

The source id is the image name without its extension. The release repeats some posts
(same image and text, annotated twice), so a repeat gets `#2`, `#3`... in file order,
keeping every post id unique and stable for an unchanged file.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from miko_assets.datasets.common import image_fields, new_post, parse_flag, resolve_split
from miko_assets.datasets.post import Post

DATASET = "miko_release"
N_INTENTIONS = 10
_INTENTION_KEY = re.compile(r"Intention\s*(\d+)")


def _ordered_intentions(intentions: dict[str, str]) -> list[str | None]:
    """The ten intentions in relation order; a relation the record lacks is None."""
    ordered: list[str | None] = [None] * N_INTENTIONS
    for key, text in intentions.items():
        match = _INTENTION_KEY.fullmatch(key.strip())
        if match is None or not 1 <= int(match.group(1)) <= N_INTENTIONS:
            raise ValueError(f"unexpected intention key {key!r}")
        ordered[int(match.group(1)) - 1] = text
    return ordered


def _intention_labels(labels: Any) -> list[int | None]:
    if not isinstance(labels, list) or len(labels) != N_INTENTIONS:
        raise ValueError(f"expected {N_INTENTIONS} intention labels, got {labels!r}")
    return [parse_flag(label) for label in labels]


def load_miko_release(path: Path, *, split: str | None = None, images_dir: Path | None = None) -> Iterator[Post]:
    """Yield the posts of a MIKO release file with their intentions and accept labels."""
    split = resolve_split(split, path)
    records = json.loads(path.read_bytes())
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of posts")
    seen: Counter[str] = Counter()
    for index, record in enumerate(records):
        try:
            image = str(record["image"])
            text = record["text"]
            intentions = _ordered_intentions(record.get("intentions", {}))
            labels = _intention_labels(record["intention_labels"]) if "intention_labels" in record else None
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"{path}: record {index} is not a MIKO post ({error!r})") from error
        stem = Path(image).stem
        seen[stem] += 1
        source_id = stem if seen[stem] == 1 else f"{stem}#{seen[stem]}"
        yield new_post(
            DATASET,
            split,
            source_id,
            text,
            **image_fields(images_dir, image),
            metadata={
                "image": image,
                "record_index": index,
                "intentions": intentions,
                "intention_labels": labels,
            },
        )
