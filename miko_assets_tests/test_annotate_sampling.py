"""Stratified, seeded sampling of intentions for annotation."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from miko_assets.annotate.miko_release import read_release
from miko_assets.annotate.sampling import sample_for_annotation
from miko_assets_tests.paths import SHARED_DATA

DATA = SHARED_DATA


def _rows(sizes: dict[str, int]) -> list[dict[str, str]]:
    return [
        {"intention_id": f"{relation}-{i:04d}", "relation": relation}
        for relation, size in sizes.items()
        for i in range(size)
    ]


def test_share_per_stratum_and_at_least_one():
    rows = _rows({"xWant": 1, "oEffect": 3, "xAttr": 10, "xNeed": 100})
    sample = sample_for_annotation(rows, share=0.1, seed=1)
    assert Counter(r["relation"] for r in sample) == {
        "xWant": 1,
        "oEffect": 1,
        "xAttr": 1,
        "xNeed": 10,
    }
    assert Counter(r["relation"] for r in sample_for_annotation(rows, 0.25, 1)) == {
        "xWant": 1,  # 0.25 rounds to 0, but every non-empty stratum gets one
        "oEffect": 1,  # 0.75 rounds to 1
        "xAttr": 3,  # 2.5 rounds half up
        "xNeed": 25,
    }


def test_edges_of_share():
    rows = _rows({"xWant": 4, "Open": 2})
    assert sample_for_annotation(rows, 0, seed=3) == []
    assert sample_for_annotation(rows, 1, seed=3) == sorted(
        rows, key=lambda r: r["intention_id"]
    )
    for share in (-0.1, 1.5):
        with pytest.raises(ValueError):
            sample_for_annotation(rows, share, seed=3)


def test_reproducible_and_independent_of_input_order():
    rows = _rows({"xWant": 50, "oEffect": 40})
    first = sample_for_annotation(rows, 0.2, seed=11)
    shuffled = rows[:]
    random.Random(5).shuffle(shuffled)
    assert sample_for_annotation(shuffled, 0.2, seed=11) == first
    assert [r["intention_id"] for r in first] == sorted(
        r["intention_id"] for r in first
    )
    assert sample_for_annotation(rows, 0.2, seed=12) != first


def test_other_strata_do_not_move_a_stratum_sample():
    base = _rows({"xWant": 30, "oEffect": 30})
    grown = (
        base
        + _rows({"xReact": 20})
        + [
            {"intention_id": f"oEffect-extra-{i}", "relation": "oEffect"}
            for i in range(5)
        ]
    )
    xwant = lambda sample: [r for r in sample if r["relation"] == "xWant"]
    assert xwant(sample_for_annotation(grown, 0.3, seed=2)) == xwant(
        sample_for_annotation(base, 0.3, seed=2)
    )


def test_custom_stratum_and_duplicate_ids():
    rows = [{"id": str(i), "batch": "a" if i % 2 else "b"} for i in range(10)]
    sample = sample_for_annotation(rows, 0.2, seed=0, stratify_by="batch", id_key="id")
    assert Counter(r["batch"] for r in sample) == {"a": 1, "b": 1}
    with pytest.raises(ValueError):
        sample_for_annotation(
            rows + rows[:1], 0.2, seed=0, stratify_by="batch", id_key="id"
        )


def test_release_intentions_sampled_per_relation():
    release = read_release(DATA / "miko_release" / "train.json")
    rows = [
        {
            "intention_id": f"{i.post_id}|{i.relation}|{i.annotator}",
            "relation": i.relation,
        }
        for i in release.intentions
    ]
    sizes = Counter(r["relation"] for r in rows)
    sample = sample_for_annotation(rows, 0.05, seed=2024)
    assert Counter(r["relation"] for r in sample) == {
        relation: int(size * 0.05 + 0.5) for relation, size in sizes.items()
    }
