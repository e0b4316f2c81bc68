"""Agreement report tables on a hand-computed case, on the real release, and its plot."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from miko_assets.annotate.miko_release import read_release, release_annotations
from miko_assets.annotate.models import intention_text_sha
from miko_assets.annotate.report import (
    HUMAN_MAJORITY,
    MIKO_PUBLISHED_ACCEPT_RATE,
    build_agreement_report,
    human_consensus,
    plot_agreement,
)
from miko_assets_tests.paths import MIKO_RELEASE as RELEASE

RELATION = {
    "i1": "xWant",
    "i2": "xWant",
    "i3": "xReact",
    "i4": "xReact",
    "i5": "xReact",
}


def _sha(intention: str) -> str:
    """The text sha of the one text every rater of `intention` saw (unless a test says otherwise)."""
    return intention_text_sha(f"PersonX {intention}  text\n")


def _human() -> pd.DataFrame:
    rows = []
    plausibility = {
        "i1": ["yes", "yes", "yes"],
        "i2": ["yes", "no", "no"],
        "i3": ["no", "no", "yes"],
        "i4": ["accept", "unsure", "unsure"],  # release-style synonym of yes
        "i5": ["yes", "no", None],  # a3 did not rate i5: a tie, no consensus
    }
    for intention, labels in plausibility.items():
        for annotator, label in zip(["a1", "a2", "a3"], labels):
            if label is not None:
                rows.append((intention, "plausibility", annotator, label, "2025-03-02"))
    rows.append(
        ("i2", "plausibility", "a1", "no", "2025-03-01")
    )  # superseded by the later "yes"
    for intention, labels in {"i1": [5, 4, 4], "i3": [2, 3, 1]}.items():
        for annotator, label in zip(["a1", "a2", "a3"], labels):
            rows.append((intention, "typicality", annotator, str(label), "2025-03-03"))
    df = pd.DataFrame(
        rows, columns=["intention_id", "stage", "annotator", "label", "updated_at"]
    )
    df["relation"] = df["intention_id"].map(RELATION)
    df["intention_text_sha"] = df["intention_id"].map(_sha)
    return df


def _judges() -> pd.DataFrame:
    rows = [
        (
            "m1",
            "v1",
            "plausibility",
            {"i1": "yes", "i2": "yes", "i3": "no", "i4": "yes", "i5": "no"},
        ),
        ("m2", "v2", "plausibility", {"i1": "yes", "i2": "no", "i3": None}),
        ("m1", "v1", "typicality", {"i1": "5", "i3": "4"}),
    ]
    records = [
        {
            "intention_id": i,
            "intention_text_sha": _sha(i),
            "relation": RELATION[i],
            "stage": stage,
            "label": label,
            "judge_model": model,
            "judge_prompt_version": version,
        }
        for model, version, stage, labels in rows
        for i, label in labels.items()
    ]
    return pd.DataFrame(records)


@pytest.fixture(scope="module")
def report():
    return build_agreement_report(_human(), _judges())


def test_consensus_uses_latest_label_per_annotator():
    consensus = human_consensus(_human(), "plausibility").set_index("intention_id")
    assert consensus["consensus"].to_dict() == {
        "i1": "yes",
        "i2": "no",
        "i3": "no",
        "i4": "unsure",
        "i5": None,
    }
    assert consensus.loc["i2", "n_ratings"] == 3


def test_human_agreement_hand_computed(report):
    table = report.human_agreement.set_index(["stage", "relation"])
    # xWant: P = (1 + 1/3) / 2, shares 4/6, 2/6 -> P_e = 5/9 -> kappa 1/4
    assert table.loc[("plausibility", "xWant"), "fleiss_kappa"] == pytest.approx(0.25)
    # xReact (i5 has two ratings): P-bar = 2/9, P_e = 22/64 -> kappa -5/27
    assert table.loc[("plausibility", "xReact"), "fleiss_kappa"] == pytest.approx(
        -5 / 27
    )
    assert table.loc[("plausibility", "xReact"), "n_ratings"] == 8
    assert table.loc[("plausibility", "ALL"), "n_items"] == 5
    assert table.loc[("typicality", "ALL"), "alpha_level"] == "ordinal"
    assert not math.isnan(table.loc[("typicality", "ALL"), "krippendorff_alpha"])
    assert list(report.human_agreement["relation"][:3]) == ["xWant", "xReact", "ALL"]


def test_judge_against_human_majority(report):
    table = report.judge_agreement.set_index(
        ["stage", "judge_model", "judge_prompt_version", "relation"]
    )
    m1 = table.loc[("plausibility", "m1", "v1", "ALL")]
    # references i1 yes, i2 no, i3 no (i4 unsure and i5 tied have none); m1 says yes, yes, no
    assert (m1["n"], m1["tp"], m1["fp"], m1["fn"], m1["tn"]) == (3, 1, 1, 0, 1)
    assert m1["accuracy"] == pytest.approx(2 / 3)
    assert m1["precision"] == pytest.approx(0.5)
    assert m1["recall"] == pytest.approx(1.0)
    assert m1["f1"] == pytest.approx(2 / 3)
    assert m1["cohen_kappa"] == pytest.approx(0.4)
    assert table.loc[
        ("plausibility", "m1", "v1", "xWant"), "cohen_kappa"
    ] == pytest.approx(0.0)
    assert math.isnan(table.loc[("plausibility", "m1", "v1", "xReact"), "precision"])

    m2 = table.loc[("plausibility", "m2", "v2", "ALL")]
    assert (m2["n"], m2["n_failed"], m2["accuracy"]) == (2, 1, 1.0)

    typical = table.loc[("typicality", "m1", "v1", "ALL")]
    # human lower medians 4 (typical) and 2 (not); the judge says 5 and 4
    assert (typical["tp"], typical["fp"], typical["accuracy"]) == (1, 1, 0.5)


def test_accept_rates(report):
    table = report.accept_rates.set_index(["rater", "relation"])
    assert table.loc[(HUMAN_MAJORITY, "ALL"), "n"] == 4
    assert table.loc[(HUMAN_MAJORITY, "ALL"), "accept_rate"] == pytest.approx(0.25)
    assert table.loc[(HUMAN_MAJORITY, "xWant"), "accept_rate"] == pytest.approx(0.5)
    assert table.loc[("judge m1 / v1", "xReact"), "accept_rate"] == pytest.approx(1 / 3)
    assert table.loc[("judge m2 / v2", "ALL"), "n"] == 2
    assert set(report.accept_rates["miko_published_overall"]) == {
        MIKO_PUBLISHED_ACCEPT_RATE
    }


def _judged(model: str, labels: dict[str, tuple[str, str | None]]) -> pd.DataFrame:
    """Plausibility verdicts of one judge: intention -> (label, text sha)."""
    return pd.DataFrame(
        [
            {
                "intention_id": i,
                "intention_text_sha": sha,
                "relation": RELATION[i],
                "stage": "plausibility",
                "label": label,
                "judge_model": model,
                "judge_prompt_version": "v1",
            }
            for i, (label, sha) in labels.items()
        ]
    )


def _judge_table(human: pd.DataFrame, judges: pd.DataFrame) -> pd.DataFrame:
    return build_agreement_report(human, judges).judge_agreement.set_index(
        ["stage", "judge_model", "judge_prompt_version", "relation"]
    )


def test_a_judge_is_compared_only_with_humans_who_saw_the_same_text():
    # i1 was regenerated before the judge ran: its humans said yes to another text
    rewritten = intention_text_sha("PersonX wants something else entirely")
    judges = _judged("m3", {"i1": ("no", rewritten), "i2": ("no", _sha("i2"))})
    table = _judge_table(_human(), judges).loc[("plausibility", "m3", "v1", "ALL")]
    # only i2 (human majority no) is compared; by id alone i1 would add a false negative
    counts = table[["n", "n_failed", "tp", "fp", "fn", "tn"]].tolist()
    assert counts == [1, 0, 0, 0, 0, 1]


def test_humans_who_saw_different_texts_rate_different_items():
    rewritten = intention_text_sha("PersonX wants something else entirely")
    late = pd.DataFrame(
        [
            ("i1", rewritten, "plausibility", "a4", "no", "2025-04-01", "xWant"),
            # a row stored before the sha existed: its text is unknown
            ("i2", None, "plausibility", "a5", "yes", "2025-04-01", "xWant"),
        ],
        columns=[
            "intention_id",
            "intention_text_sha",
            "stage",
            "annotator",
            "label",
            "updated_at",
            "relation",
        ],
    )
    human = pd.concat([_human(), late], ignore_index=True)
    consensus = human_consensus(human, "plausibility").set_index(
        ["intention_id", "intention_text_sha"]
    )
    rated = consensus[["n_ratings", "consensus"]]
    assert rated.loc[("i1", _sha("i1"))].tolist() == [3, "yes"]
    assert rated.loc[("i1", rewritten)].tolist() == [1, "no"]
    assert rated.loc[("i2", _sha("i2"))].tolist() == [3, "no"]
    before = build_agreement_report(_human(), _judges()).human_agreement
    after = build_agreement_report(human, _judges()).human_agreement
    pd.testing.assert_frame_equal(
        before.drop(columns="n_annotators"), after.drop(columns="n_annotators")
    )
    # the judges compared with i1's original text are not compared with the rewritten one
    pd.testing.assert_frame_equal(
        _judge_table(_human(), _judges()), _judge_table(human, _judges())
    )


def test_judge_rows_without_a_text_sha_are_left_out():
    judges = _judged("m4", {"i1": ("yes", None), "i3": ("no", float("nan"))})
    report = build_agreement_report(_human(), judges)
    assert report.judge_agreement.empty
    assert "judge m4 / v1" not in set(report.accept_rates["rater"])


def test_release_labels_in_the_report():
    release = read_release(RELEASE)
    rows = pd.DataFrame(
        [r.model_dump() for r in release_annotations(release, lambda p, r: f"{p}/{r}")]
    )
    empty_judges = pd.DataFrame(
        columns=[
            "intention_id",
            "intention_text_sha",
            "relation",
            "stage",
            "label",
            "judge_model",
            "judge_prompt_version",
        ]
    )
    report = build_agreement_report(rows, empty_judges)
    # only posts the release lists twice have two ratings per intention
    twice = rows.groupby("intention_id").size()
    overall = report.human_agreement.set_index("relation").loc["ALL"]
    assert overall["n_items"] == (twice == 2).sum()
    assert overall["n_annotators"] == 2
    assert report.judge_agreement.empty
    rates = report.accept_rates.set_index("relation")
    single = rows[rows["intention_id"].map(twice) == 1]
    # an intention labelled once is its own majority, so those all count
    assert rates.loc["ALL", "n"] >= len(single)


def test_plot_is_a_png(report):
    png = plot_agreement(report)
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000
