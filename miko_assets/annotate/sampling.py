"""Reproducible stratified sampling of intentions for annotation."""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

Row = TypeVar("Row", bound=Mapping[str, Any])


def sample_for_annotation(
    rows: Iterable[Row],
    share: float,
    seed: int,
    stratify_by: str = "relation",
    id_key: str = "intention_id",
) -> list[Row]:
    """A `share` of `rows` from every stratum, at least one per non-empty stratum when share > 0.

    Each stratum keeps round(share * size) rows (halves round up). Rows are ranked by a
    hash of (seed, id) rather than drawn from a shuffled list, so the sample depends only
    on the seed and the set of ids: not on input order, not on the Python process, and
    adding rows to one stratum never changes another stratum's sample. Returns the
    chosen rows sorted by id.
    """
    if not 0 <= share <= 1:
        raise ValueError(f"share must be within [0, 1], got {share}")
    strata: dict[Any, list[Row]] = defaultdict(list)
    seen: set[str] = set()
    for row in rows:
        row_id = str(row[id_key])
        if row_id in seen:
            raise ValueError(f"duplicate {id_key}: {row_id}")
        seen.add(row_id)
        strata[row[stratify_by]].append(row)
    if share == 0:
        return []

    chosen: list[Row] = []
    for members in strata.values():
        keep = max(1, math.floor(share * len(members) + 0.5))
        ranked = sorted(
            members, key=lambda r: (_rank(seed, str(r[id_key])), str(r[id_key]))
        )
        chosen.extend(ranked[:keep])
    return sorted(chosen, key=lambda r: str(r[id_key]))


def _rank(seed: int, row_id: str) -> str:
    return hashlib.sha256(f"{seed}\x1f{row_id}".encode()).hexdigest()
