"""MIKO's released accept labels read as human plausibility annotations.

The release (`train.json`) is read by `datasets.miko_release`, which also says which post each
record judges. Its ten intentions are in the relation order of `RELATION_NAMES`, with one accept
bit per intention. Two quirks of the real file are kept visible rather than smoothed over:
- some posts appear twice with the same intentions but different labels; the first record
  is annotator "miko-release", the k-th judgement of the post "miko-release#k", so both stay;
- some records lack an intention (no "Intention 10", or an empty text) or a label: such a
  label judges nothing, so it is skipped with a reason.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
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
from miko_assets.datasets.miko_release import DATASET, read_release_records
from miko_assets.distill.relations import RELATION_NAMES

RELEASE_ANNOTATOR = "miko-release"


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


def read_release(path: str | Path, source_name: str | None = None) -> ReleaseLabels:
    """Read the release file; malformed records raise, missing intentions and labels are skipped."""
    path = Path(path)
    raw = path.read_bytes()
    records = read_release_records(path, raw)
    intentions: list[ReleaseIntention] = []
    skipped: list[str] = []
    for record in records:
        annotator = RELEASE_ANNOTATOR + ("" if record.judgement == 1 else f"#{record.judgement}")
        labels = record.labels or [None] * len(RELATION_NAMES)
        for relation, text, label in zip(RELATION_NAMES, record.intentions, labels, strict=True):
            text = (text or "").strip()
            where = f"record {record.index} ({record.post_id}) {relation}"
            if not text:
                skipped.append(f"{where}: no intention text")
                continue
            if label is None:
                skipped.append(f"{where}: no label")
                continue
            intentions.append(
                ReleaseIntention(
                    record=record.index,
                    post_id=record.post_id,
                    image=record.image,
                    post_text=record.text,
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
                    DATASET, intention_id, "plausibility", item.annotator
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
