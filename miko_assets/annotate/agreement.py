"""Agreement coefficients and binary-judge scores, implemented from their definitions.

Every coefficient returns NaN where it is undefined (for example when all raters use a
single category, so chance agreement is 1) rather than a made-up number.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from miko_assets.missing import is_missing

AlphaLevel = Literal["nominal", "ordinal", "interval"]


def fleiss_kappa(counts: Sequence[Sequence[int]] | np.ndarray) -> float:
    """Fleiss' kappa from an items x categories matrix of rating counts.

    Items may have different numbers of raters (each at least 2): per-item agreement is
    computed with that item's own count and category shares are pooled over all ratings,
    which reduces to Fleiss (1971) when every item has the same number of raters.
    """
    table = np.asarray(counts, dtype=float)
    if table.ndim != 2 or table.shape[0] == 0:
        raise ValueError("counts must be a non-empty items x categories matrix")
    if (table < 0).any():
        raise ValueError("counts must be non-negative")
    raters = table.sum(axis=1)
    if (raters < 2).any():
        raise ValueError("every item needs at least 2 ratings")
    per_item = ((table * (table - 1)).sum(axis=1)) / (raters * (raters - 1))
    p_bar = per_item.mean()
    shares = table.sum(axis=0) / raters.sum()
    p_e = float((shares**2).sum())
    if math.isclose(p_e, 1.0):
        return math.nan
    return float((p_bar - p_e) / (1 - p_e))


def krippendorff_alpha(
    reliability_data: Sequence[Sequence[Any]] | np.ndarray,
    level: AlphaLevel = "nominal",
) -> float:
    """Krippendorff's alpha for reliability data given as raters x units.

    Missing values are None or NaN. Units with fewer than two values are not pairable and
    are left out, as in Krippendorff (2011). Nominal accepts any hashable values; ordinal
    ranks the values by their sort order; interval uses squared numeric differences.
    """
    rows = [list(r) for r in reliability_data]
    if not rows or len({len(r) for r in rows}) != 1:
        raise ValueError(
            "reliability_data must be raters x units with equal-length rows"
        )
    units = [[r[u] for r in rows if not is_missing(r[u])] for u in range(len(rows[0]))]
    units = [values for values in units if len(values) >= 2]
    if not units:
        return math.nan

    distinct = {v for values in units for v in values}
    # nominal values need not be mutually comparable; the order does not change alpha
    categories = sorted(distinct, key=repr) if level == "nominal" else sorted(distinct)
    index = {c: i for i, c in enumerate(categories)}
    coincidences = np.zeros((len(categories), len(categories)))
    for values in units:
        unit_counts = np.zeros(len(categories))
        for v in values:
            unit_counts[index[v]] += 1
        # pairs of values within the unit, each weighted 1 / (m_u - 1)
        coincidences += (np.outer(unit_counts, unit_counts) - np.diag(unit_counts)) / (
            len(values) - 1
        )
    marginals = coincidences.sum(axis=1)
    n = marginals.sum()
    delta = _squared_distances(categories, marginals, level)
    expected = (np.outer(marginals, marginals) * delta).sum()
    if expected == 0:
        return math.nan
    observed = (coincidences * delta).sum()
    return float(1 - (n - 1) * observed / expected)


def _squared_distances(
    categories: list[Any], marginals: np.ndarray, level: AlphaLevel
) -> np.ndarray:
    k = len(categories)
    if level == "nominal":
        return 1 - np.eye(k)
    if level == "interval":
        values = np.asarray(categories, dtype=float)
        return (values[:, None] - values[None, :]) ** 2
    if level == "ordinal":
        # delta(c, k) = (sum of n_g for g from c to k, minus (n_c + n_k) / 2) squared
        cumulative = np.concatenate([[0.0], np.cumsum(marginals)])
        lo = np.minimum.outer(np.arange(k), np.arange(k))
        hi = np.maximum.outer(np.arange(k), np.arange(k))
        between = cumulative[hi + 1] - cumulative[lo]
        return (between - (marginals[:, None] + marginals[None, :]) / 2) ** 2
    raise ValueError(f"unknown level of measurement: {level!r}")


def cohen_kappa(first: Sequence[Hashable], second: Sequence[Hashable]) -> float:
    """Cohen's kappa between two raters' labels of the same items (nominal, unweighted)."""
    if len(first) != len(second):
        raise ValueError("both raters must label the same items")
    n = len(first)
    if n == 0:
        return math.nan
    observed = sum(a == b for a, b in zip(first, second)) / n
    first_counts, second_counts = Counter(first), Counter(second)
    expected = sum(first_counts[c] * second_counts[c] for c in first_counts) / n**2
    if math.isclose(expected, 1.0):
        return math.nan
    return (observed - expected) / (1 - expected)


@dataclass(frozen=True)
class BinaryScores:
    """A binary judge against a reference; precision, recall, F1 are for the positive class."""

    n: int
    tp: int
    fp: int
    fn: int
    tn: int
    accuracy: float
    precision: float
    recall: float
    f1: float
    cohen_kappa: float


def binary_scores(predicted: Sequence[bool], reference: Sequence[bool]) -> BinaryScores:
    """Confusion counts, accuracy, precision, recall, F1 and Cohen's kappa of `predicted`."""
    if len(predicted) != len(reference):
        raise ValueError("predicted and reference must have the same length")
    pairs = [(bool(p), bool(r)) for p, r in zip(predicted, reference)]
    tp = sum(p and r for p, r in pairs)
    fp = sum(p and not r for p, r in pairs)
    fn = sum(r and not p for p, r in pairs)
    tn = sum(not p and not r for p, r in pairs)
    n = len(pairs)
    return BinaryScores(
        n=n,
        tp=tp,
        fp=fp,
        fn=fn,
        tn=tn,
        accuracy=_ratio(tp + tn, n),
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        cohen_kappa=cohen_kappa([p for p, _ in pairs], [r for _, r in pairs]),
    )


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def counts_matrix(
    ratings_per_item: Iterable[Iterable[Hashable]], categories: Sequence[Hashable]
) -> np.ndarray:
    """Items x categories count matrix for `fleiss_kappa` from each item's list of labels."""
    index = {c: i for i, c in enumerate(categories)}
    rows = []
    for labels in ratings_per_item:
        row = np.zeros(len(categories), dtype=int)
        for label in labels:
            if label not in index:
                raise ValueError(f"label {label!r} is not one of {list(categories)}")
            row[index[label]] += 1
        rows.append(row)
    return np.array(rows, dtype=int).reshape(len(rows), len(categories))
