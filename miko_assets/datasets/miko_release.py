"""MIKO's released intention benchmark (RingBDStack/Miko): a JSON list of posts.

This is the one reader of the release: ingestion (`load_miko_release`) and the label import
(`annotate.miko_release`) both take their posts from `read_release_records`, so they agree on
which post a record belongs to.

Each record is `{"image": "<name>.jpg", "text": ..., "intentions": {"Intention 1": ...,
"Intention 10": ...}, "intention_labels": [10 x 0/1]}`; label i judges "Intention i+1".
Images are not published, so `image_path` is set only when an images dir is given.

Post identity: the source id is the image name without its extension. The release lists some
posts twice (same image, text and intentions, different labels): such a repeat is the same
post judged a second time, not a new post. A record that reuses an earlier image with another
text is a different post and gets `#2`, `#3`... in file order. Ids are stable for an unchanged
file.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from miko_assets.datasets.common import image_fields, new_post, parse_flag, resolve_split
from miko_assets.datasets.post import Post, make_post_id
from miko_assets.json_files import parse_json_file

DATASET = "miko_release"
N_INTENTIONS = 10
_INTENTION_KEY = re.compile(r"Intention\s*(\d+)")


@dataclass(frozen=True)
class ReleaseRecord:
    """One record of the release and the post it judges."""

    index: int
    image: str
    text: str
    # The ten intentions in relation order; one the record lacks is None.
    intentions: list[str | None]
    # The ten accept bits (None where empty), or None when the record has no labels.
    labels: list[int | None] | None
    source_id: str
    # 1 for the post's first record, k for its k-th judgement.
    judgement: int

    @property
    def post_id(self) -> str:
        return make_post_id(DATASET, self.source_id)


def _ordered_intentions(intentions: dict[str, str]) -> list[str | None]:
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


def read_release_records(path: Path, data: bytes | None = None) -> list[ReleaseRecord]:
    """Every record of a release file (or of `data`, its bytes), in file order, each with its
    post's source id."""
    records = parse_json_file(Path(path).read_bytes() if data is None else data, str(path))
    if not isinstance(records, list):
        raise ValueError(f"{path}: expected a JSON list of posts")
    texts_by_stem: dict[str, list[str]] = {}
    judgements: Counter[str] = Counter()
    read: list[ReleaseRecord] = []
    for index, record in enumerate(records):
        try:
            image = str(record["image"])
            text = record["text"]
            intentions = _ordered_intentions(record.get("intentions", {}))
            labels = _intention_labels(record["intention_labels"]) if "intention_labels" in record else None
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            raise ValueError(f"{path}: record {index} is not a MIKO post ({error!r})") from error
        stem = Path(image).stem
        texts = texts_by_stem.setdefault(stem, [])
        if text not in texts:
            texts.append(text)
        number = texts.index(text) + 1
        source_id = stem if number == 1 else f"{stem}#{number}"
        judgements[source_id] += 1
        read.append(ReleaseRecord(index, image, text, intentions, labels, source_id, judgements[source_id]))
    return read


def load_miko_release(path: Path, *, split: str | None = None, images_dir: Path | None = None) -> Iterator[Post]:
    """Yield each post of a MIKO release file once, with the intentions and accept labels of its
    first record; `judged_again_in` lists the records that judge it again (their labels are
    further annotators, imported by `miko annotate import-miko-release`)."""
    split = resolve_split(split, path)
    records = read_release_records(path)
    again: dict[str, list[int]] = {}
    for record in records:
        if record.judgement > 1:
            again.setdefault(record.source_id, []).append(record.index)
    for record in records:
        if record.judgement > 1:
            continue
        yield new_post(
            DATASET,
            split,
            record.source_id,
            record.text,
            **image_fields(images_dir, record.image),
            metadata={
                "image": record.image,
                "record_index": record.index,
                "intentions": record.intentions,
                "intention_labels": record.labels,
                "judged_again_in": again.get(record.source_id, []),
            },
        )
