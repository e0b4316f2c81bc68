"""Records shared by the annotation modules: stages, label vocabularies, one human judgement
and the consensus of several."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence

from pydantic import BaseModel, ConfigDict

from miko_assets.annotate.stages import Stage

PLAUSIBILITY_LABELS: tuple[str, ...] = ("yes", "no", "unsure")
TYPICALITY_LABELS: tuple[str, ...] = ("1", "2", "3", "4", "5")
STAGE_LABELS: dict[Stage, tuple[str, ...]] = {
    "plausibility": PLAUSIBILITY_LABELS,
    "typicality": TYPICALITY_LABELS,
}

# MIKO's release states one accept bit per intention; it maps onto stage 1's yes / no.
_PLAUSIBILITY_SYNONYMS = {
    "yes": "yes",
    "accept": "yes",
    "accepted": "yes",
    "plausible": "yes",
    "true": "yes",
    "1": "yes",
    "no": "no",
    "reject": "no",
    "rejected": "no",
    "implausible": "no",
    "false": "no",
    "0": "no",
    "unsure": "unsure",
    "not sure": "unsure",
    "uncertain": "unsure",
    "unknown": "unsure",
}


def normalize_label(stage: Stage, label: object) -> str | None:
    """The canonical label of `stage` for a raw label, or None when it is not one.

    Plausibility: yes / no / unsure (accept / reject and 1 / 0 map to yes / no).
    Typicality: "1".."5" (ints and integral floats accepted).
    """
    if label is None:
        return None
    if stage == "plausibility":
        return _PLAUSIBILITY_SYNONYMS.get(str(label).strip().lower())
    if isinstance(label, bool):
        return None
    if isinstance(label, float) and label.is_integer():
        label = int(label)
    text = str(label).strip()
    return text if text in TYPICALITY_LABELS else None


class HumanAnnotation(BaseModel):
    """One person's (or one released label set's) judgement of one intention at one stage.

    `annotation_key` is stable across imports of the same judgement, so a caller can drop
    rows it already holds; `source_sha256` names the file the row came from;
    `intention_text_sha` names the text judged (an intention id outlives regenerations).
    """

    model_config = ConfigDict(frozen=True)

    annotation_key: str
    intention_id: str
    intention_text_sha: str
    post_id: str | None
    relation: str
    stage: Stage
    annotator: str
    label: str
    annotation_id: str
    source: str
    source_sha256: str
    updated_at: str | None = None


def intention_text_sha(text: str) -> str:
    """sha256 of an intention's whitespace-normalised text: which text an annotation is about."""
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()


def annotation_key(*parts: object) -> str:
    """A short stable hash of the parts that identify one judgement."""
    return hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:32]


def majority_vote(
    labels: Iterable[Hashable | None], tie_breaker: Sequence[Hashable] = ()
) -> Hashable | None:
    """The most frequent label (None values ignored).

    On a tie, the first tied label in `tie_breaker` wins; with no tie-breaker covering the
    tie (the default), the vote is undecided and None is returned.
    """
    counts = Counter(label for label in labels if label is not None)
    if not counts:
        return None
    top = max(counts.values())
    tied = [label for label, count in counts.items() if count == top]
    if len(tied) == 1:
        return tied[0]
    return next((label for label in tie_breaker if label in tied), None)


def consensus_label(stage: Stage, labels: Iterable[object]) -> str | None:
    """The raters' consensus on one intention at one stage, or None when there is none.

    Plausibility: the majority label (a tie is no consensus). Typicality: the lower
    median rating, so the consensus is always one of the five scale points.
    """
    canonical = [
        c for c in (normalize_label(stage, label) for label in labels) if c is not None
    ]
    if not canonical:
        return None
    if stage == "plausibility":
        winner = majority_vote(canonical)
        return None if winner is None else str(winner)
    ratings = sorted(int(c) for c in canonical)
    return str(ratings[(len(ratings) - 1) // 2])
