"""MIKO's released accept labels as human annotations, checked against the raw file."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from miko_assets.annotate.miko_release import (
    RELEASE_ANNOTATOR,
    accepted_references,
    read_release,
    release_accept_rates,
    release_annotations,
)
from miko_assets.annotate.models import intention_text_sha
from miko_assets.ingest.batches import ingest_file
from miko_assets.stages.human_annotations import import_file
from miko_assets.warehouse.warehouse import Warehouse
from miko_assets_tests.paths import MIKO_RELEASE as RELEASE

ORDER = [
    "xWant",
    "oEffect",
    "xAttr",
    "xIntent",
    "xReact",
    "oReact",
    "oWant",
    "xEffect",
    "xNeed",
    "Open",
]


@pytest.fixture(scope="module")
def raw() -> list[dict]:
    return json.loads(RELEASE.read_text())


@pytest.fixture(scope="module")
def release():
    return read_release(RELEASE)


def _direct_counts(raw: list[dict]) -> tuple[Counter, Counter]:
    """Labels whose intention is present and non-empty, counted straight from the JSON."""
    total, accepted = Counter(), Counter()
    for record in raw:
        for i, label in enumerate(record["intention_labels"]):
            if record["intentions"].get(f"Intention {i + 1}", "").strip():
                total[ORDER[i]] += 1
                accepted[ORDER[i]] += label
    return total, accepted


def test_accept_rates_equal_a_direct_count(raw, release):
    total, accepted = _direct_counts(raw)
    rates = release_accept_rates(release).set_index("relation")
    assert list(rates.index) == ORDER + ["ALL"]
    for relation in ORDER:
        assert rates.loc[relation, "n"] == total[relation]
        assert rates.loc[relation, "accepted"] == accepted[relation]
        assert rates.loc[relation, "accept_rate"] == pytest.approx(
            accepted[relation] / total[relation]
        )
    assert rates.loc["ALL", "accept_rate"] == pytest.approx(
        sum(accepted.values()) / sum(total.values())
    )
    # the paper: 76.2% overall over all 881 posts, xReact lowest and xWant highest
    assert rates.loc["ALL", "accept_rate"] == pytest.approx(0.762, abs=0.01)
    per_relation = rates.drop("ALL")["accept_rate"]
    assert per_relation.idxmin() == "xReact" and per_relation.idxmax() == "xWant"


def test_missing_intentions_are_skipped_not_invented(raw, release):
    total, _ = _direct_counts(raw)
    assert release.records == len(raw)
    assert len(release.intentions) == sum(total.values())
    assert len(release.skipped) == 10 * len(raw) - sum(total.values())
    assert all("no intention text" in reason for reason in release.skipped)


def test_annotation_rows(raw, release):
    ids = lambda post_id, relation: f"{post_id}/{relation}"
    rows = release_annotations(release, ids)
    assert len(rows) == len(release.intentions)
    assert len({r.annotation_key for r in rows}) == len(rows)
    assert {r.stage for r in rows} == {"plausibility"}
    assert {r.label for r in rows} == {"accept", "reject"}
    assert {r.source_sha256 for r in rows} == {release.source_sha256}

    first = raw[0]
    stem = first["image"].removesuffix(".jpg")
    by_id = {r.intention_id: r for r in rows if r.annotator == RELEASE_ANNOTATOR}
    for i, relation in enumerate(ORDER):
        row = by_id[f"miko_release:{stem}/{relation}"]
        assert row.post_id == f"miko_release:{stem}"
        assert row.label == ("accept" if first["intention_labels"][i] else "reject")
        text = first["intentions"][f"Intention {i + 1}"]
        assert row.intention_text_sha == intention_text_sha(text)

    # posts that appear twice keep both label sets, under two annotator names
    repeated = [image for image, n in Counter(r["image"] for r in raw).items() if n > 1]
    assert repeated
    second_names = {r.annotator for r in rows if r.annotator != RELEASE_ANNOTATOR}
    assert second_names == {f"{RELEASE_ANNOTATOR}#2"}
    assert {r.post_id for r in rows if r.annotator != RELEASE_ANNOTATOR} == {
        f"miko_release:{image.removesuffix('.jpg')}" for image in repeated
    }
    # the keys do not depend on the order of reading: a re-import maps onto the same rows
    assert [
        r.annotation_key for r in release_annotations(read_release(RELEASE), ids)
    ] == [r.annotation_key for r in rows]


def test_accepted_references(raw, release):
    references = accepted_references(release)
    verdicts = defaultdict(list)
    for record in raw:
        post_id = "miko_release:" + record["image"].removesuffix(".jpg")
        for i, label in enumerate(record["intention_labels"]):
            text = record["intentions"].get(f"Intention {i + 1}", "").strip()
            if text:
                verdicts[(post_id, ORDER[i])].append((label, text))
    expected = {
        key: [text for _, text in pairs[:1]]
        for key, pairs in verdicts.items()
        if all(label == 1 for label, _ in pairs)
    }
    assert references == expected
    # the post listed twice with all-accept and all-reject labels gives no reference at all
    assert not any(post_id == "miko_release:198" for post_id, _ in references)


def test_every_ingested_post_gets_the_labels_of_every_record_that_judges_it(raw, tmp_path):
    """Ingestion and the label import take post identity from the one release reader: each post
    of the shared release (13 of them listed twice) is ingested once and gets the labels of all
    its records, one annotator per record."""
    warehouse = Warehouse(tmp_path / "w.duckdb")
    ingest_file(warehouse, "miko_release", RELEASE)
    import_file(warehouse, "miko_release", RELEASE)
    ingested = {post_id for (post_id,) in warehouse.rows("SELECT post_id FROM ingested_posts")}
    annotators = dict(
        warehouse.rows("SELECT post_id, count(DISTINCT annotator) FROM human_annotations GROUP BY post_id")
    )
    records_per_image = Counter(record["image"] for record in raw)
    assert annotators == {f"miko_release:{Path(image).stem}": n for image, n in records_per_image.items()}
    assert set(annotators) == ingested
