"""MIKO's released accept labels read as human plausibility annotations.

The release (`train.json`) is a list of posts, each with ten intentions ("Intention 1" ..
"Intention 10", in the relation order of `RELATION_NAMES`) and one accept bit per
intention (label i is for "Intention i+1"). Two quirks of the real file are kept visible
rather than smoothed over:
- some posts appear twice with the same intentions but different labels; the first record
  is annotator "miko-release", the k-th repeat "miko-release#k", so both judgements stay;
- some records lack an intention (no "Intention 10", or an empty text): their label judges
  nothing, so it is skipped with a reason.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pydantic import BaseModel, ConfigDict

from miko_assets.annotate.models import (
    HumanAnnotation,
    annotation_key,
    intention_text_sha,
)
from miko_assets.distill.relations import RELATION_NAMES

RELEASE_ANNOTATOR = "miko-release"
RELEASE_DATASET = "miko_release"


class ReleaseIntention(BaseModel):
    """One labelled intention of one release record."""

    model_config = ConfigDict(frozen=True)

    record: int
    post_id: str
    image: str
    post_text: str
    relation: str
    intention: str
    accepted: bool
    annotator: str


@dataclass(frozen=True)
class ReleaseLabels:
    """Everything read from one release file."""

    intentions: list[ReleaseIntention]
    source: str
    source_sha256: str
    records: int
    skipped: list[str] = field(default_factory=list)


def release_post_id(image: str) -> str:
    """`miko_release:<image file stem>`, the post id of a release record."""
    return f"{RELEASE_DATASET}:{Path(image).stem}"


def read_release(path: str | Path, source_name: str | None = None) -> ReleaseLabels:
    """Read the release file; malformed records raise, missing intentions are skipped."""
    path = Path(path)
    raw = path.read_bytes()
    records = json.loads(raw)
    intentions: list[ReleaseIntention] = []
    skipped: list[str] = []
    seen: Counter[str] = Counter()
    for index, record in enumerate(records):
        labels = record["intention_labels"]
        if len(labels) != len(RELATION_NAMES) or set(labels) - {0, 1}:
            raise ValueError(f"record {index}: expected ten 0/1 labels, got {labels!r}")
        post_id = release_post_id(record["image"])
        seen[post_id] += 1
        annotator = RELEASE_ANNOTATOR + (
            "" if seen[post_id] == 1 else f"#{seen[post_id]}"
        )
        for number, (relation, label) in enumerate(
            zip(RELATION_NAMES, labels), start=1
        ):
            text = (record["intentions"].get(f"Intention {number}") or "").strip()
            if not text:
                skipped.append(
                    f"record {index} ({post_id}) {relation}: no intention text"
                )
                continue
            intentions.append(
                ReleaseIntention(
                    record=index,
                    post_id=post_id,
                    image=record["image"],
                    post_text=record["text"],
                    relation=relation,
                    intention=text,
                    accepted=bool(label),
                    annotator=annotator,
                )
            )
    return ReleaseLabels(
        intentions=intentions,
        source=source_name or f"{path.parent.name}/{path.name}",
        source_sha256=hashlib.sha256(raw).hexdigest(),
        records=len(records),
        skipped=skipped,
    )


def release_annotations(
    release: ReleaseLabels, intention_id_for: Callable[[str, str], str]
) -> list[HumanAnnotation]:
    """Plausibility annotation rows (label accept / reject), keyed by the project's intention ids
    and the sha of the release's text, so they only meet annotations of that same text."""
    rows = []
    for item in release.intentions:
        intention_id = intention_id_for(item.post_id, item.relation)
        rows.append(
            HumanAnnotation(
                annotation_key=annotation_key(
                    RELEASE_DATASET, intention_id, "plausibility", item.annotator
                ),
                intention_id=intention_id,
                intention_text_sha=intention_text_sha(item.intention),
                post_id=item.post_id,
                relation=item.relation,
                stage="plausibility",
                annotator=item.annotator,
                label="accept" if item.accepted else "reject",
                annotation_id=f"{release.source}[{item.record}]:{item.relation}",
                source=release.source,
                source_sha256=release.source_sha256,
            )
        )
    return rows


def release_accept_rates(release: ReleaseLabels) -> pd.DataFrame:
    """Accept rate per relation (MIKO's order) and overall, over every labelled intention."""
    df = pd.DataFrame(
        [{"relation": i.relation, "accepted": i.accepted} for i in release.intentions]
    )
    per_relation = (
        df.groupby("relation")["accepted"]
        .agg(n="size", accepted="sum")
        .reindex([r for r in RELATION_NAMES if r in set(df["relation"])])
    )
    per_relation.loc["ALL"] = [len(df), int(df["accepted"].sum())]
    per_relation["accept_rate"] = per_relation["accepted"] / per_relation["n"]
    return per_relation.reset_index().astype({"n": int, "accepted": int})


def accepted_references(release: ReleaseLabels) -> dict[tuple[str, str], list[str]]:
    """Reference intentions per (post_id, relation) for the benchmark.

    An intention is a reference when every record of its post accepts it (a post labelled
    twice with conflicting bits gives no reference for that relation).
    """
    verdicts: dict[tuple[str, str, str], list[bool]] = defaultdict(list)
    for item in release.intentions:
        verdicts[(item.post_id, item.relation, item.intention)].append(item.accepted)
    references: dict[tuple[str, str], list[str]] = defaultdict(list)
    for (post_id, relation, text), accepted in sorted(verdicts.items()):
        if all(accepted):
            references[(post_id, relation)].append(text)
    return dict(references)
