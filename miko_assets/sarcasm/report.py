"""The results table and plot of a sarcasm student experiment."""

from __future__ import annotations

import io
from collections.abc import Sequence

import pandas as pd
from matplotlib.figure import Figure

from miko_assets.sarcasm.students import BASELINE_VARIANT, MAJORITY_STUDENT, StudentResult

METRIC_COLUMNS = ("accuracy", "precision", "recall", "f1", "macro_f1")
RESULT_COLUMNS = (
    "dataset",
    "variant",
    "student",
    "teacher_model",
    "teacher_prompt_versions",
    "teacher_prompt_shas",
    "n_train",
    "n_test",
    "n_train_with_intentions",
    "n_test_with_intentions",
    *METRIC_COLUMNS,
    "macro_f1_diff",
    "ci_low",
    "ci_high",
    "n_resamples",
    "fields",
    "empty_fields",
    "split_method",
    "seed",
)


def results_frame(results: Sequence[StudentResult]) -> pd.DataFrame:
    """One row per result, columns in `RESULT_COLUMNS` order; list fields comma-joined."""
    rows = []
    for result in results:
        row = result.model_dump(exclude={"metrics"})
        row.update(result.metrics.model_dump())
        row["fields"] = ",".join(result.fields)
        row["empty_fields"] = ",".join(result.empty_fields)
        rows.append(row)
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


def plot_results(results: pd.DataFrame) -> bytes:
    """PNG (Agg) of macro-F1 per variant and student (left) and of each variant's macro-F1
    difference from the text-only baseline with its bootstrap interval (right), per dataset."""
    datasets = sorted(results["dataset"].unique())
    # A bare Figure renders with Agg and leaves pyplot's global state (and backend) alone.
    fig = Figure(figsize=(14, 0.35 * results["variant"].nunique() * len(datasets) + 2.5))
    axes = fig.subplots(len(datasets), 2, squeeze=False)
    for (left, right), dataset in zip(axes, datasets):
        rows = results[results["dataset"] == dataset]
        variants = list(dict.fromkeys(rows.loc[rows["student"] != MAJORITY_STUDENT, "variant"]))
        students = [s for s in dict.fromkeys(rows["student"]) if s != MAJORITY_STUDENT]
        height = 0.8 / max(len(students), 1)
        for i, student in enumerate(students):
            scores = rows[rows["student"] == student].set_index("variant").reindex(variants)
            positions = [v + i * height for v in range(len(variants))]
            left.barh(positions, scores["macro_f1"], height=height, label=student)
            low = (scores["macro_f1_diff"] - scores["ci_low"]).fillna(0)
            high = (scores["ci_high"] - scores["macro_f1_diff"]).fillna(0)
            right.errorbar(
                scores["macro_f1_diff"].fillna(0), positions, xerr=[low, high], fmt="o", capsize=3, label=student
            )
        majority = rows.loc[rows["student"] == MAJORITY_STUDENT, "macro_f1"]
        if not majority.empty:
            left.axvline(majority.iloc[0], color="grey", linestyle="--", label="majority class")
        ticks = [v + height * (len(students) - 1) / 2 for v in range(len(variants))]
        for ax in (left, right):
            ax.set_yticks(ticks, variants)
            ax.invert_yaxis()
            ax.legend(fontsize="small")
        right.set_yticklabels([])
        right.axvline(0, color="grey", linewidth=1)
        left.set_xlabel("macro-F1 on the test split")
        right.set_xlabel(f"macro-F1 minus '{BASELINE_VARIANT}' (95% paired bootstrap CI)")
        left.set_title(dataset)
        right.set_title(f"{dataset}: difference from text only")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()
