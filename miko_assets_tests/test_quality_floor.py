"""The quality floor of intentions: what counts as well-formed, and the per-relation figures."""

from __future__ import annotations

import pandas as pd
import pytest

from miko_assets.distill.quality import format_quality_floor, malformation, quality_floor
from miko_assets.distill.relations import RELATIONS_BY_NAME

POST = "Just finished my first marathon in the pouring rain today"
X_WANT = RELATIONS_BY_NAME["xWant"].prefix


@pytest.mark.parametrize(
    ("completion", "reason"),
    [
        ("rest and celebrate with friends", None),
        ("share the joy, and thank everyone who cheered.", None),
        (None, "no_completion"),
        ("rest", "too_short"),
        (" ".join(["run"] * 26), "too_long"),
        ("🏃🏃 #marathon #win", "unusual_characters"),
        ("visit https://example.com now", "unusual_characters"),
        ("Lorem ipsum 123 dolor", "unusual_characters"),
        ("the user wants to rest", "restates_prefix"),
        ("After posting this Tweet the user rests", "restates_prefix"),
        ("finished my first marathon in the pouring rain", "copies_post"),
        ("Just finished my first marathon in the pouring rain today and more", "copies_post"),
        ("run my first marathon again", None),  # three words of the post are not a copy
    ],
)
def test_malformation(completion: str | None, reason: str | None) -> None:
    assert malformation(X_WANT, completion, POST) == reason


def test_quality_floor_per_relation_and_overall() -> None:
    rows = pd.DataFrame(
        [
            ("p1", "xWant", X_WANT, "rest and celebrate with friends", "ok"),
            ("p2", "xWant", X_WANT, "rest and celebrate with friends", "ok"),
            ("p3", "xWant", X_WANT, "🏃 #win now", "ok"),
            ("p4", "xWant", X_WANT, None, "failed"),
            ("p1", "oReact", RELATIONS_BY_NAME["oReact"].prefix, "proud of the runner today", "ok"),
            ("p2", "oReact", RELATIONS_BY_NAME["oReact"].prefix, None, "empty"),
        ],
        columns=["post_id", "relation", "prefix", "completion", "status"],
    )
    table = quality_floor(rows, {f"p{i}": POST for i in range(1, 5)}).set_index("relation")
    assert list(table.index) == ["xWant", "oReact", "ALL"]
    assert table.loc["xWant", "rows"] == 4
    assert table.loc["xWant", "well_formed"] == pytest.approx(0.5)
    assert table.loc["xWant", "empty_or_failed"] == pytest.approx(0.25)
    assert table.loc["xWant", "distinct_tail_ratio"] == pytest.approx(2 / 3)
    assert table.loc["oReact", "well_formed"] == pytest.approx(0.5)
    assert table.loc["ALL", "well_formed"] == pytest.approx(3 / 6)
    lines = format_quality_floor(table.reset_index())
    assert len(lines) == 4 and "50%" in lines[1] and lines[-1].startswith("ALL")
    assert quality_floor(rows.iloc[0:0], {}).empty
