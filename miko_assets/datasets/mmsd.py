"""MMSD (Cai et al., ACL 2019): one Python list literal per line.

Train lines are `[id, text, label]`, valid/test lines `[id, text, hashtag_label, label]`.
The image of a post is `<images_dir>/<id>.jpg`. The `extract_all` file lists five
attribute words detected in each image (`[id, w1, ..., w5]`).
"""

from __future__ import annotations

import ast
import logging
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, Field

from miko_assets.datasets.common import (
    image_fields,
    iter_lines,
    new_post,
    parse_flag,
    resolve_split,
)
from miko_assets.datasets.post import Post

DATASET = "mmsd"
ATTRIBUTES_FILE = "extract_all"
# The upstream loader's order; a post counts against the first keyword it contains.
FILTER_KEYWORDS = (
    "sarcasm",
    "sarcastic",
    "reposting",
    "<url>",
    "joke",
    "humour",
    "humor",
    "jokes",
    "irony",
    "ironic",
    "exgag",
)

logger = logging.getLogger(__name__)


class KeywordFilterStats(BaseModel):
    """What the upstream keyword filter dropped, filled in while a load runs."""

    seen: int = 0
    dropped: int = 0
    by_keyword: dict[str, int] = Field(default_factory=dict)
    dropped_ids: list[str] = Field(default_factory=list)


def _literal(path: Path, number: int, text: str) -> list[object]:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as error:
        raise ValueError(f"{path}:{number}: not a Python list literal ({error})") from error
    if not isinstance(value, list):
        raise ValueError(f"{path}:{number}: expected a list, got {type(value).__name__}")
    return value


def load_attributes(path: Path) -> dict[str, list[str]]:
    """Read an `extract_all` file: image id -> its detected attribute words."""
    attributes: dict[str, list[str]] = {}
    for line in iter_lines(path):
        if line.text.strip():
            image_id, *words = _literal(path, line.number, line.text)
            attributes[str(image_id)] = [str(word) for word in words]
    return attributes


def filter_keyword(text: str) -> str | None:
    """The upstream filter keyword found among the text's whitespace tokens, if any."""
    tokens = set(text.split())
    return next((word for word in FILTER_KEYWORDS if word in tokens), None)


def load_mmsd(
    path: Path,
    *,
    split: str | None = None,
    images_dir: Path | None = None,
    attributes_path: Path | None = None,
    keyword_filter: bool = False,
    filter_stats: KeywordFilterStats | None = None,
) -> Iterator[Post]:
    """Yield the posts of an MMSD text file.

    `attributes_path` defaults to an `extract_all` file beside `path` when one exists.
    With `keyword_filter`, posts the upstream loader drops are skipped (matching its
    whitespace-token test); they are counted in `filter_stats` and logged.
    """
    split = resolve_split(split, path)
    if attributes_path is None and (path.parent / ATTRIBUTES_FILE).is_file():
        attributes_path = path.parent / ATTRIBUTES_FILE
    attributes = load_attributes(attributes_path) if attributes_path is not None else {}
    stats = filter_stats if filter_stats is not None else KeywordFilterStats()
    for line in iter_lines(path):
        if not line.text.strip():
            continue
        fields = _literal(path, line.number, line.text)
        if len(fields) == 3:
            source_id, text, label = fields
            labels = {}
        elif len(fields) == 4:
            source_id, text, hashtag_label, label = fields
            labels = {"hashtag_label": parse_flag(hashtag_label)}
        else:
            raise ValueError(f"{path}:{line.number}: expected 3 or 4 fields, got {len(fields)}")
        source_id, text = str(source_id), str(text)
        stats.seen += 1
        keyword = filter_keyword(text) if keyword_filter else None
        if keyword is not None:
            stats.dropped += 1
            stats.by_keyword[keyword] = stats.by_keyword.get(keyword, 0) + 1
            stats.dropped_ids.append(source_id)
            continue
        metadata = {"image_attributes": attributes[source_id]} if source_id in attributes else {}
        yield new_post(
            DATASET,
            split,
            source_id,
            text,
            text_error=line.error,
            **image_fields(images_dir, f"{source_id}.jpg"),
            label=parse_flag(label),
            labels=labels,
            metadata=metadata,
        )
    if keyword_filter:
        logger.info("MMSD keyword filter dropped %d of %d posts in %s", stats.dropped, stats.seen, path)
