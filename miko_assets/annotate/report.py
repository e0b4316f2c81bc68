"""Agreement report: humans among themselves, LLM judges against the human consensus.

Inputs are DataFrames as read from the warehouse.
- human rows: intention_id, intention_text_sha, relation, stage, annotator, label (optional
  updated_at); when an annotator judged an intention twice, the latest row (by updated_at) counts.
- judge rows: intention_id, intention_text_sha, relation, stage, label (None or NaN for a
  failed judgement), judge_model, judge_prompt_version.

An intention id outlives regenerations of its text, so the item annotations agree or disagree
on is an (intention_id, intention_text_sha) pair: a human label and a judge verdict (or two
humans' labels) are compared only when they are about the same text. Rows without a sha
(stored before the column existed) are left out of every table, since their text is unknown;
re-importing a human file fills the sha in, judge rows get it when the judges run again.

Judge-vs-human scores are binary: for plausibility "yes" is the positive class (a judge's
"unsure" counts as not plausible; intentions whose human consensus is "unsure" or tied
have no reference and are left out); for typicality a rating >= `typical_threshold` is
the positive class, compared with the humans' lower-median rating.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from miko_assets.annotate.agreement import (
    binary_scores,
    counts_matrix,
    fleiss_kappa,
    krippendorff_alpha,
)
from miko_assets.annotate.models import STAGE_LABELS, consensus_label, normalize_label
from miko_assets.annotate.stages import STAGES, Stage
from miko_assets.distill.relations import RELATION_NAMES
from miko_assets.missing import is_missing

MIKO_PUBLISHED_ACCEPT_RATE = 0.762
ALL = "ALL"
HUMAN_MAJORITY = "human majority"
_ITEM = ["intention_id", "intention_text_sha"]
_KEY = [*_ITEM, "stage", "annotator"]


@dataclass(frozen=True)
class AgreementReport:
    """The three tables of the `annotation_agreement` asset."""

    human_agreement: pd.DataFrame
    judge_agreement: pd.DataFrame
    accept_rates: pd.DataFrame


def latest_human_labels(human: pd.DataFrame) -> pd.DataFrame:
    """One canonical label per (intention, text, stage, annotator); off-scale labels and
    rows without a text sha dropped."""
    df = human.dropna(subset=["intention_text_sha"]).copy()
    if "updated_at" in df:
        df = df.sort_values("updated_at", kind="stable", na_position="first")
    df = df.drop_duplicates(_KEY, keep="last")
    df["label"] = [normalize_label(s, lab) for s, lab in zip(df["stage"], df["label"])]
    return df.dropna(subset=["label"]).reset_index(drop=True)


def human_consensus(human: pd.DataFrame, stage: Stage) -> pd.DataFrame:
    """Per intention text: relation, number of ratings and the consensus label (None if none)."""
    labels = latest_human_labels(human)
    labels = labels[labels["stage"] == stage]
    rows = [
        {
            "intention_id": intention_id,
            "intention_text_sha": text_sha,
            "relation": group["relation"].iloc[0],
            "n_ratings": len(group),
            "consensus": consensus_label(stage, group["label"]),
        }
        for (intention_id, text_sha), group in labels.groupby(_ITEM, sort=True)
    ]
    return pd.DataFrame(rows, columns=[*_ITEM, "relation", "n_ratings", "consensus"])


def _with_all(df: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """(relation, rows) for each relation in MIKO's order, then every row as ALL."""
    present = set(df["relation"])
    order = [r for r in RELATION_NAMES if r in present] + sorted(
        present - set(RELATION_NAMES)
    )
    return [(r, df[df["relation"] == r]) for r in order] + [(ALL, df)]


def human_agreement_table(human: pd.DataFrame) -> pd.DataFrame:
    """Fleiss' kappa and Krippendorff's alpha among humans per stage and relation.

    Only intention texts with at least two ratings count. Alpha is nominal for plausibility
    and ordinal for typicality; NaN where a coefficient is undefined.
    """
    labels = latest_human_labels(human)
    rows = []
    for stage in STAGES:
        staged = labels[labels["stage"] == stage]
        if staged.empty:
            continue
        for relation, part in _with_all(staged):
            per_item = part.groupby(_ITEM)["label"].apply(list)
            per_item = per_item[per_item.map(len) >= 2]
            if per_item.empty:
                kappa = alpha = math.nan
            else:
                kappa = fleiss_kappa(counts_matrix(per_item, STAGE_LABELS[stage]))
                rated = pd.MultiIndex.from_frame(part[_ITEM]).isin(per_item.index)
                alpha = _alpha(part[rated], stage)
            rows.append(
                {
                    "stage": stage,
                    "relation": relation,
                    "n_items": len(per_item),
                    "n_annotators": part["annotator"].nunique(),
                    "n_ratings": int(per_item.map(len).sum()),
                    "fleiss_kappa": kappa,
                    "krippendorff_alpha": alpha,
                    "alpha_level": "nominal" if stage == "plausibility" else "ordinal",
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "stage",
            "relation",
            "n_items",
            "n_annotators",
            "n_ratings",
            "fleiss_kappa",
            "krippendorff_alpha",
            "alpha_level",
        ],
    )


def _alpha(part: pd.DataFrame, stage: Stage) -> float:
    matrix = part.pivot(index="annotator", columns=_ITEM, values="label")
    if stage == "plausibility":
        return krippendorff_alpha(
            matrix.astype(object).where(matrix.notna(), None).values
        )
    return krippendorff_alpha(matrix.astype(float).values, level="ordinal")


def _positive(stage: Stage, label: str | None, typical_threshold: int) -> bool | None:
    if label is None:
        return None
    if stage == "plausibility":
        return {"yes": True, "no": False}.get(label)
    return int(label) >= typical_threshold


def _judge_labels(judges: pd.DataFrame) -> pd.DataFrame:
    """One label per (intention, text, stage, judge); rows without a text sha dropped."""
    df = judges.dropna(subset=["intention_text_sha"])
    df = df.drop_duplicates(
        [*_ITEM, "stage", "judge_model", "judge_prompt_version"], keep="last"
    ).copy()
    df["label"] = [
        None if is_missing(lab) else normalize_label(s, lab)
        for s, lab in zip(df["stage"], df["label"])
    ]
    return df


_JUDGE_COLUMNS = [
    "stage",
    "judge_model",
    "judge_prompt_version",
    "relation",
    "n",
    "n_failed",
    "accuracy",
    "precision",
    "recall",
    "f1",
    "cohen_kappa",
    "tp",
    "fp",
    "fn",
    "tn",
]


def judge_agreement_table(
    human: pd.DataFrame, judges: pd.DataFrame, typical_threshold: int = 4
) -> pd.DataFrame:
    """Each judge (model, prompt version) against the human consensus, per stage and relation.

    `n` counts intention texts with a human reference and a judge label of that same text;
    `n_failed` those with a reference whose judgement failed (no label).
    """
    rows = []
    judged = _judge_labels(judges)
    for stage in STAGES:
        reference = human_consensus(human, stage)
        reference["truth"] = [
            _positive(stage, c, typical_threshold) for c in reference["consensus"]
        ]
        reference = reference.dropna(subset=["truth"])[[*_ITEM, "relation", "truth"]]
        staged = judged[judged["stage"] == stage]
        for (model, version), runs in staged.groupby(
            ["judge_model", "judge_prompt_version"]
        ):
            merged = reference.merge(runs[[*_ITEM, "label"]], on=_ITEM, how="inner")
            for relation, part in _with_all(merged):
                ok = part[part["label"].notna()]
                scores = binary_scores(
                    [
                        bool(_positive(stage, lab, typical_threshold))
                        for lab in ok["label"]
                    ],
                    [bool(t) for t in ok["truth"]],
                )
                rows.append(
                    {
                        "stage": stage,
                        "judge_model": model,
                        "judge_prompt_version": version,
                        "relation": relation,
                        "n_failed": len(part) - len(ok),
                        **vars(scores),
                    }
                )
    return pd.DataFrame(rows, columns=_JUDGE_COLUMNS)


def accept_rate_table(human: pd.DataFrame, judges: pd.DataFrame) -> pd.DataFrame:
    """Plausibility accept rate per relation for the human majority and for each judge.

    Human: share of intentions with a consensus whose majority is "yes" (ties left out).
    Judge: share of its successful judgements that are "yes". MIKO's published overall
    rate sits beside every row.
    """
    raters: list[tuple[str, pd.DataFrame]] = []
    consensus = human_consensus(human, "plausibility").dropna(subset=["consensus"])
    raters.append((HUMAN_MAJORITY, consensus.rename(columns={"consensus": "label"})))
    judged = _judge_labels(judges)
    judged = judged[(judged["stage"] == "plausibility") & judged["label"].notna()]
    for (model, version), runs in judged.groupby(
        ["judge_model", "judge_prompt_version"]
    ):
        raters.append((f"judge {model} / {version}", runs))

    rows = []
    for rater, labelled in raters:
        if labelled.empty:
            continue
        for relation, part in _with_all(labelled):
            accepted = int((part["label"] == "yes").sum())
            rows.append(
                {
                    "rater": rater,
                    "relation": relation,
                    "n": len(part),
                    "accepted": accepted,
                    "accept_rate": accepted / len(part),
                    "miko_published_overall": MIKO_PUBLISHED_ACCEPT_RATE,
                }
            )
    return pd.DataFrame(
        rows,
        columns=[
            "rater",
            "relation",
            "n",
            "accepted",
            "accept_rate",
            "miko_published_overall",
        ],
    )


def build_agreement_report(
    human: pd.DataFrame, judges: pd.DataFrame, typical_threshold: int = 4
) -> AgreementReport:
    """All three agreement tables from human and judge annotation rows."""
    return AgreementReport(
        human_agreement=human_agreement_table(human),
        judge_agreement=judge_agreement_table(human, judges, typical_threshold),
        accept_rates=accept_rate_table(human, judges),
    )


def agg_pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(fig: Any) -> bytes:
    """Render a matplotlib figure to PNG bytes and close it."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    agg_pyplot().close(fig)
    return buffer.getvalue()


def grouped_bars(
    ax: Any, table: pd.DataFrame, group: str, series: str, value: str
) -> None:
    """Bars of `value` per `group` (x axis), one coloured bar per `series`."""
    groups = list(dict.fromkeys(table[group]))
    names = list(dict.fromkeys(table[series]))
    width = 0.8 / max(len(names), 1)
    x = np.arange(len(groups))
    for i, name in enumerate(names):
        part = table[table[series] == name].set_index(group)[value]
        ax.bar(
            x + i * width - 0.4 + width / 2,
            [part.get(g, np.nan) for g in groups],
            width,
            label=name,
        )
    ax.set_xticks(x, groups, rotation=45, ha="right")
    ax.legend(fontsize="small")


def plot_agreement(report: AgreementReport) -> bytes:
    """PNG: plausibility accept rates per relation beside MIKO's 76.2%, and judge-human kappa."""
    fig, (left, right) = agg_pyplot().subplots(1, 2, figsize=(13, 4.5))
    if not report.accept_rates.empty:
        grouped_bars(left, report.accept_rates, "relation", "rater", "accept_rate")
    left.axhline(MIKO_PUBLISHED_ACCEPT_RATE, color="black", linestyle="--", linewidth=1)
    left.text(
        0, MIKO_PUBLISHED_ACCEPT_RATE + 0.01, "MIKO published overall 76.2%", fontsize=8
    )
    left.set_ylim(0, 1.05)
    left.set_title("Plausibility accept rate")

    kappas = report.judge_agreement[
        report.judge_agreement["stage"] == "plausibility"
    ].copy()
    if not kappas.empty:
        kappas["judge"] = kappas["judge_model"] + " / " + kappas["judge_prompt_version"]
        grouped_bars(right, kappas, "relation", "judge", "cohen_kappa")
    right.axhline(0, color="black", linewidth=0.8)
    right.set_ylim(-1, 1)
    right.set_title("Judge vs human majority: Cohen's kappa (plausibility)")
    return figure_png(fig)
