"""How `post_batches` partitions are named, and how many posts one holds by default."""

from __future__ import annotations

import re

BATCH_KEY_PATTERN = re.compile(r"^[a-z0-9_.-]+$")
DEFAULT_BATCH_SIZE = 500


def batch_prefix(dataset: str, split: str) -> str:
    """`<dataset>-<split>` reduced to the characters a partition key may hold."""
    prefix = f"{_slug(dataset)}-{_slug(split)}"
    if not BATCH_KEY_PATTERN.match(prefix):
        raise ValueError(f"cannot build a partition key from dataset={dataset!r} split={split!r}")
    return prefix


def batch_key(prefix: str, number: int) -> str:
    return f"{prefix}-{number:04d}"


def _slug(value: str) -> str:
    return re.sub(r"[^a-z0-9_.]+", "_", value.lower()).strip("_") or "none"
