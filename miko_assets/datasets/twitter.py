"""Twitter-2015/2017 multimodal NER corpora (CoNLL, as shipped with UMT).

Each tweet is a line `IMGID:<id>`, then one `token<TAB>BIO-tag` line per token, then a
blank line. The text is the tokens joined by single spaces (the original spacing is not
recoverable); the tokens and tags are kept in metadata. These corpora carry no sarcasm label.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from miko_assets.datasets.common import check_dataset_name, image_fields, iter_lines, new_post, resolve_split
from miko_assets.datasets.post import Post

IMGID_PREFIX = "IMGID:"


@dataclass
class _Tweet:
    image_id: str
    tokens: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _parse(path: Path) -> Iterator[_Tweet]:
    tweet: _Tweet | None = None
    for line in iter_lines(path):
        if line.text.startswith(IMGID_PREFIX):
            if tweet is not None:
                yield tweet
            tweet = _Tweet(line.text[len(IMGID_PREFIX) :].strip())
        elif line.text.strip():
            parts = line.text.split("\t")
            if tweet is None or len(parts) != 2:
                raise ValueError(f"{path}:{line.number}: expected `token<TAB>tag` after an IMGID line")
            tweet.tokens.append(parts[0])
            tweet.tags.append(parts[1].strip())
        if tweet is not None and line.error is not None:
            tweet.errors.append(line.error)
    if tweet is not None:
        yield tweet


def load_twitter(
    path: Path, *, dataset: str, split: str | None = None, images_dir: Path | None = None
) -> Iterator[Post]:
    """Yield the tweets of a CoNLL file as posts of `dataset` (twitter2015 or twitter2017)."""
    check_dataset_name(dataset)
    split = resolve_split(split, path)
    for tweet in _parse(path):
        yield new_post(
            dataset,
            split,
            tweet.image_id,
            " ".join(tweet.tokens),
            text_error="; ".join(tweet.errors) or None,
            **image_fields(images_dir, f"{tweet.image_id}.jpg"),
            metadata={"tokens": tweet.tokens, "ner_tags": tweet.tags},
        )
