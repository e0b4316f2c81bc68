"""Agreement coefficients against hand-computed cases and published worked examples."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from miko_assets.annotate.agreement import (
    binary_scores,
    cohen_kappa,
    counts_matrix,
    fleiss_kappa,
    krippendorff_alpha,
)
from miko_assets.annotate.models import majority_vote

NAN = math.nan

# Fleiss (1971), as reproduced on Wikipedia's "Fleiss' kappa" page: 10 subjects, 14 raters,
# 5 categories; P-bar = 0.378, P-bar_e = 0.213, kappa = 0.210.
FLEISS_WIKIPEDIA = [
    [0, 0, 0, 0, 14],
    [0, 2, 6, 4, 2],
    [0, 0, 3, 5, 6],
    [0, 3, 9, 2, 0],
    [2, 2, 8, 1, 1],
    [7, 7, 0, 0, 0],
    [3, 2, 6, 3, 0],
    [2, 5, 3, 2, 2],
    [6, 5, 2, 1, 0],
    [0, 2, 2, 3, 7],
]

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: nominal data,
# 4 observers x 12 units, missing data; alpha = 0.743. The same matrix gives 0.849 with the
# interval metric (the paper) and 0.815 with the ordinal one (R package irr, kripp.alpha).
KRIPPENDORFF_C = [
    [1, 2, 3, 3, 2, 1, 4, 1, 2, NAN, NAN, NAN],
    [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, NAN, 3],
    [NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, NAN],
    [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, NAN],
]


def test_fleiss_wikipedia_worked_example():
    assert fleiss_kappa(FLEISS_WIKIPEDIA) == pytest.approx(0.210, abs=5e-4)


def test_fleiss_hand_computed_constant_raters():
    # P_i = 1, 1, 0 -> P-bar = 2/3; shares 1/2, 1/2 -> P_e = 1/2; kappa = 1/3
    assert fleiss_kappa([[2, 0], [0, 2], [1, 1]]) == pytest.approx(1 / 3)


def test_fleiss_hand_computed_varying_raters():
    # P = (1 + 0) / 2 = 0.5; shares 4/5, 1/5 -> P_e = 0.68; kappa = (0.5 - 0.68) / 0.32
    assert fleiss_kappa([[3, 0], [1, 1]]) == pytest.approx(-0.5625)


def test_fleiss_perfect_and_undefined():
    assert fleiss_kappa([[3, 0], [0, 3]]) == pytest.approx(1.0)
    assert math.isnan(fleiss_kappa([[3, 0], [2, 0]]))


def test_fleiss_rejects_items_with_one_rating():
    with pytest.raises(ValueError):
        fleiss_kappa([[2, 0], [1, 0]])


def test_counts_matrix_and_unknown_label():
    assert counts_matrix(
        [["yes", "yes", "no"], ["unsure", "no"]], ["yes", "no", "unsure"]
    ).tolist() == [
        [2, 1, 0],
        [0, 1, 1],
    ]
    with pytest.raises(ValueError):
        counts_matrix([["maybe"]], ["yes", "no"])


def test_krippendorff_2011_binary_two_observers():
    # section A: alpha = 0.095
    a = [0, 1, 0, 0, 0, 0, 0, 0, 1, 0]
    b = [1, 1, 1, 0, 0, 1, 0, 0, 0, 0]
    assert krippendorff_alpha([a, b]) == pytest.approx(0.095, abs=5e-4)


def test_krippendorff_2011_nominal_two_observers():
    # section B: alpha = 0.692
    a = list("aabbdcccedda")
    b = list("babbbcccedd" + "d")
    assert krippendorff_alpha([a, b]) == pytest.approx(0.692, abs=5e-4)


def test_krippendorff_2011_nominal_four_observers_missing_data():
    assert krippendorff_alpha(KRIPPENDORFF_C) == pytest.approx(0.743, abs=5e-4)
    # raters are exchangeable; None works as missing like NaN
    shuffled = [KRIPPENDORFF_C[i] for i in (3, 1, 0, 2)]
    with_none = [[None if isinstance(v, float) else v for v in row] for row in shuffled]
    assert krippendorff_alpha(with_none) == pytest.approx(
        krippendorff_alpha(KRIPPENDORFF_C)
    )


def test_krippendorff_interval_and_ordinal_same_data():
    assert krippendorff_alpha(np.array(KRIPPENDORFF_C), "interval") == pytest.approx(
        0.849, abs=5e-4
    )
    assert krippendorff_alpha(KRIPPENDORFF_C, "ordinal") == pytest.approx(
        0.815, abs=5e-4
    )


def test_krippendorff_hand_computed():
    # units (a,a), (a,b), (b,b): D_o pairs = 2, n_a = n_b = 3, n = 6 -> 1 - 5 * 2 / 18
    assert krippendorff_alpha([["a", "a", "b"], ["a", "b", "b"]]) == pytest.approx(
        1 - 10 / 18
    )


def test_krippendorff_undefined_and_invalid():
    assert math.isnan(krippendorff_alpha([["x", "x"], ["x", "x"]]))
    assert math.isnan(krippendorff_alpha([[1, None], [None, 2]]))  # nothing pairable
    with pytest.raises(ValueError):
        krippendorff_alpha([[1, 2], [1]])
    with pytest.raises(ValueError):
        krippendorff_alpha([[1, 2], [1, 2]], level="ratio")


def test_cohen_kappa_wikipedia_example():
    # 50 proposals: yes/yes 20, yes/no 5, no/yes 10, no/no 15 -> p_o 0.7, p_e 0.5, kappa 0.4
    a = ["yes"] * 25 + ["no"] * 25
    b = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_matches_scikit_learn():
    rng = random.Random(7)
    for _ in range(20):
        a = [rng.choice("xyz") for _ in range(40)]
        b = [x if rng.random() < 0.6 else rng.choice("xyz") for x in a]
        assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))


def test_cohen_kappa_undefined():
    assert math.isnan(cohen_kappa(["a", "a"], ["a", "a"]))
    assert math.isnan(cohen_kappa([], []))


def test_binary_scores_hand_computed():
    scores = binary_scores(
        [True, True, False, False, True], [True, False, False, True, True]
    )
    assert (scores.tp, scores.fp, scores.fn, scores.tn) == (2, 1, 1, 1)
    assert scores.accuracy == pytest.approx(0.6)
    assert scores.precision == pytest.approx(2 / 3)
    assert scores.recall == pytest.approx(2 / 3)
    assert scores.f1 == pytest.approx(2 / 3)
    # p_o = 0.6, p_e = 0.6 * 0.6 + 0.4 * 0.4 = 0.52
    assert scores.cohen_kappa == pytest.approx((0.6 - 0.52) / 0.48)


def test_binary_scores_without_predicted_positives():
    scores = binary_scores([False, False], [True, False])
    assert math.isnan(scores.precision)
    assert scores.recall == 0.0
    assert scores.f1 == 0.0


def test_majority_vote():
    assert majority_vote(["yes", "no", "yes"]) == "yes"
    assert majority_vote(["yes", None, None, "no", "no"]) == "no"
    assert majority_vote(["yes", "no"]) is None
    assert majority_vote(["yes", "no", "unsure"], tie_breaker=["no", "yes"]) == "no"
    assert majority_vote(["yes", "no"], tie_breaker=["unsure"]) is None
    assert majority_vote([]) is None
