"""Student models that measure what intention knowledge adds to sarcasm detection.

Each student turns a variant's fields into features and fits a logistic regression
(`class_weight="balanced"`, since sarcasm sets are often unbalanced) on the dataset's train
split, then predicts its test split.

- `tfidf`: one TF-IDF block per field (word 1-2 grams, fitted on the train split), stacked.
- `minilm`: one all-MiniLM-L6-v2 vector per field, concatenated (an empty field is a zero
  vector). Per-field vectors rather than one embedding of the joined text because MiniLM
  truncates its input at 256 word pieces, which text plus ten intentions exceeds, and
  because keeping one block per relation makes a relation ablation remove exactly that
  relation's evidence.

A field that is empty for every training post (a text-only dataset has no captions) is left
out of the variant and named in the result's `empty_fields`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import BaseModel
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score
from sklearn.model_selection import train_test_split

from miko_assets.sarcasm.dataset import INTENT_COLUMNS, RELATIONS, intent_column

TRAIN_SPLIT = "train"
# The evaluation split, by preference, when a dataset ships its own.
TEST_SPLITS: tuple[str, ...] = ("test", "test2", "valid", "valid2", "validation", "dev")
BASELINE_VARIANT = "text"
MAJORITY_STUDENT = "majority"


class InsufficientData(ValueError):
    """A split has too few rows or only one class, so no student can be trained or scored."""


@dataclass(frozen=True)
class Variant:
    """A named set of dataset columns a student reads."""

    name: str
    fields: tuple[str, ...]


def student_variants() -> list[Variant]:
    """Text only, text + intentions, text + intentions + caption + key info, and one
    ablation per relation (all intentions except that one), the baseline first."""
    variants = [
        Variant(BASELINE_VARIANT, ("text",)),
        Variant("text+intentions", ("text", *INTENT_COLUMNS)),
        Variant("text+intentions+caption+key_info", ("text", *INTENT_COLUMNS, "caption", "key_info")),
    ]
    for relation in RELATIONS:
        kept = tuple(c for c in INTENT_COLUMNS if c != intent_column(relation))
        variants.append(Variant(f"text+intentions-{relation}", ("text", *kept)))
    return variants


def variants_named(names: Sequence[str]) -> list[Variant]:
    """The variants called `names` (all of them when `names` is empty), in `student_variants` order."""
    variants = student_variants()
    unknown = set(names) - {v.name for v in variants}
    if unknown:
        raise ValueError(f"unknown variants {sorted(unknown)}; known: {[v.name for v in variants]}")
    return [v for v in variants if not names or v.name in names]


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    test: pd.DataFrame
    method: str


def split_dataset(frame: pd.DataFrame, seed: int = 0, test_size: float = 0.2, min_per_class: int = 2) -> Split:
    """The dataset's own train / test (or valid) splits, else a seeded stratified split.

    Raises `InsufficientData` when either side has fewer than `min_per_class` posts of a class.
    """
    names = frame["split"].str.lower()
    test_name = next((s for s in TEST_SPLITS if (names == s).any()), None)
    if (names == TRAIN_SPLIT).any() and test_name is not None:
        split = Split(
            frame[names == TRAIN_SPLIT], frame[names == test_name], f"dataset splits {TRAIN_SPLIT} / {test_name}"
        )
    else:
        _require_classes(frame, "whole", "no split", min_per_class * 2)
        train, test = train_test_split(frame, test_size=test_size, random_state=seed, stratify=frame["label"])
        method = f"seeded stratified {1 - test_size:.0%}/{test_size:.0%} split (seed {seed}) of {sorted(set(names))}"
        split = Split(train, test, method)
    _require_classes(split.train, "train", split.method, min_per_class)
    _require_classes(split.test, "test", split.method, min_per_class)
    return split


def _require_classes(frame: pd.DataFrame, side: str, method: str, min_per_class: int) -> None:
    counts = frame["label"].value_counts()
    negatives, positives = int(counts.get(0, 0)), int(counts.get(1, 0))
    if min(negatives, positives) < min_per_class:
        raise InsufficientData(
            f"the {side} data ({method}) has {negatives} non-sarcastic and {positives} sarcastic posts; "
            f"a student needs at least {min_per_class} of each class"
        )


class Metrics(BaseModel):
    """Scores on the test split; precision, recall and F1 are for the sarcastic class (1)."""

    accuracy: float
    precision: float
    recall: float
    f1: float
    macro_f1: float


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> Metrics:
    return Metrics(
        accuracy=accuracy_score(y_true, y_pred),
        precision=precision_score(y_true, y_pred, pos_label=1, zero_division=0),
        recall=recall_score(y_true, y_pred, pos_label=1, zero_division=0),
        f1=f1_score(y_true, y_pred, pos_label=1, zero_division=0),
        macro_f1=f1_score(y_true, y_pred, average="macro", labels=[0, 1], zero_division=0),
    )


class BootstrapCI(BaseModel):
    """Macro-F1 of a variant minus that of the baseline, with a percentile interval."""

    diff: float
    low: float
    high: float
    confidence: float
    n_resamples: int


def macro_f1_rows(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Binary macro-F1 of each row of two (resamples x posts) label matrices.

    Matches sklearn's `f1_score(average="macro", labels=[0, 1], zero_division=0)`.
    """
    scores = np.zeros(y_true.shape[0])
    for cls in (0, 1):
        truth, pred = y_true == cls, y_pred == cls
        tp = (truth & pred).sum(axis=1)
        wrong = (truth ^ pred).sum(axis=1)  # false positives + false negatives
        denominator = 2 * tp + wrong
        scores += np.divide(2 * tp, denominator, out=np.zeros(len(tp)), where=denominator > 0)
    return scores / 2


def paired_bootstrap_macro_f1(
    y_true: np.ndarray,
    pred: np.ndarray,
    baseline_pred: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> BootstrapCI:
    """Paired bootstrap of the macro-F1 difference: both predictions are scored on the same
    resamples of the test set, so the interval reflects the difference, not each score's noise."""
    y_true, pred, baseline_pred = (np.asarray(a) for a in (y_true, pred, baseline_pred))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(y_true), size=(n_resamples, len(y_true)))
    diffs = macro_f1_rows(y_true[idx], pred[idx]) - macro_f1_rows(y_true[idx], baseline_pred[idx])
    alpha = (1 - confidence) / 2
    point = macro_f1_rows(y_true[None], pred[None])[0] - macro_f1_rows(y_true[None], baseline_pred[None])[0]
    return BootstrapCI(
        diff=float(point),
        low=float(np.quantile(diffs, alpha)),
        high=float(np.quantile(diffs, 1 - alpha)),
        confidence=confidence,
        n_resamples=n_resamples,
    )


Matrix: TypeAlias = np.ndarray | sp.spmatrix


class Featurizer(Protocol):
    name: str

    def transform(self, train: pd.DataFrame, test: pd.DataFrame, fields: Sequence[str]) -> tuple[Matrix, Matrix]:
        """Features of the train and test rows from `fields`, fitted on train only."""
        ...


class TfidfFeaturizer:
    name = "tfidf"

    def transform(self, train: pd.DataFrame, test: pd.DataFrame, fields: Sequence[str]) -> tuple[Matrix, Matrix]:
        train_blocks, test_blocks = [], []
        for column in fields:
            vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
            train_blocks.append(vectorizer.fit_transform(train[column]))
            test_blocks.append(vectorizer.transform(test[column]))
        return sp.hstack(train_blocks, format="csr"), sp.hstack(test_blocks, format="csr")


class MiniLMFeaturizer:
    """Embeds each distinct text once, however many variants reuse it."""

    name = "minilm"

    def __init__(self) -> None:
        self._cache: dict[str, np.ndarray] = {}

    def transform(self, train: pd.DataFrame, test: pd.DataFrame, fields: Sequence[str]) -> tuple[Matrix, Matrix]:
        return self._features(train, fields), self._features(test, fields)

    def _features(self, frame: pd.DataFrame, fields: Sequence[str]) -> np.ndarray:
        from miko_assets.embeddings import MINILM_DIM, embed_sentences

        texts = {t for column in fields for t in frame[column] if t.strip()}
        new = sorted(texts - self._cache.keys())
        self._cache.update(zip(new, embed_sentences(new)))
        zero = np.zeros(MINILM_DIM, dtype=np.float32)
        blocks = [np.stack([self._cache[t] if t.strip() else zero for t in frame[column]]) for column in fields]
        return np.hstack(blocks)


STUDENTS: dict[str, type[TfidfFeaturizer | MiniLMFeaturizer]] = {
    cls.name: cls for cls in (TfidfFeaturizer, MiniLMFeaturizer)
}


def fit_predict(x_train: Matrix, y_train: np.ndarray, x_test: Matrix, seed: int = 0) -> np.ndarray:
    """Fit the students' logistic regression and predict the test rows."""
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000, random_state=seed)
    return model.fit(x_train, y_train).predict(x_test)


class StudentResult(BaseModel):
    """One student variant on one dataset; the `ci_*` fields compare it with the same
    student's text-only variant (None for the baseline itself and the majority class)."""

    dataset: str
    student: str
    variant: str
    fields: list[str]
    empty_fields: list[str]
    split_method: str
    n_train: int
    n_test: int
    n_train_with_intentions: int
    n_test_with_intentions: int
    teacher_model: str | None
    teacher_prompt_versions: str | None
    teacher_prompt_shas: str | None
    metrics: Metrics
    macro_f1_diff: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    n_resamples: int | None = None
    seed: int


def run_experiment(
    frame: pd.DataFrame,
    students: Sequence[str] = ("tfidf", "minilm"),
    variants: Sequence[Variant] | None = None,
    seed: int = 0,
    n_resamples: int = 1000,
    min_per_class: int = 2,
    test_size: float = 0.2,
) -> list[StudentResult]:
    """Train and score every student variant on each dataset of a `build_sarcasm_dataset` frame.

    Each dataset also gets a majority-class row. The text-only baseline is always run, since
    every other variant's interval is against it. Raises `InsufficientData` (naming the
    dataset) when a split cannot support a student.
    """
    variants = list(variants or student_variants())
    if all(v.name != BASELINE_VARIANT for v in variants):
        variants.insert(0, student_variants()[0])
    unknown = set(students) - STUDENTS.keys()
    if unknown:
        raise ValueError(f"unknown students {sorted(unknown)}; known: {sorted(STUDENTS)}")

    results: list[StudentResult] = []
    for dataset, rows in frame.groupby("dataset", sort=True):
        try:
            split = split_dataset(rows, seed=seed, test_size=test_size, min_per_class=min_per_class)
        except InsufficientData as exc:
            raise InsufficientData(f"dataset {dataset!r}: {exc}") from exc
        results.extend(_run_dataset(str(dataset), split, students, variants, seed, n_resamples))
    return results


def _run_dataset(
    dataset: str,
    split: Split,
    students: Sequence[str],
    variants: list[Variant],
    seed: int,
    n_resamples: int,
) -> list[StudentResult]:
    y_train, y_test = split.train["label"].to_numpy(), split.test["label"].to_numpy()
    used = pd.concat([split.train, split.test])
    used = used[used["has_intentions"]]
    majority = np.full(len(y_test), np.bincount(y_train).argmax())
    # The majority-class row carries what every row of this dataset shares.
    shared = StudentResult(
        dataset=dataset,
        student=MAJORITY_STUDENT,
        variant=BASELINE_VARIANT,
        fields=[],
        empty_fields=[],
        split_method=split.method,
        n_train=len(split.train),
        n_test=len(split.test),
        n_train_with_intentions=int(split.train["has_intentions"].sum()),
        n_test_with_intentions=int(split.test["has_intentions"].sum()),
        teacher_model=_distinct(used["teacher_model"]),
        teacher_prompt_versions=_distinct(used["teacher_prompt_version"]),
        teacher_prompt_shas=_distinct(used["teacher_prompt_sha"]),
        metrics=classification_metrics(y_test, majority),
        seed=seed,
    )
    results = [shared]
    for student in students:
        featurizer = STUDENTS[student]()
        predictions: dict[str, np.ndarray] = {}
        for variant in sorted(variants, key=lambda v: v.name != BASELINE_VARIANT):
            fields = [f for f in variant.fields if split.train[f].str.strip().ne("").any()]
            x_train, x_test = featurizer.transform(split.train, split.test, fields)
            predictions[variant.name] = pred = fit_predict(x_train, y_train, x_test, seed=seed)
            update = {
                "student": student,
                "variant": variant.name,
                "fields": fields,
                "empty_fields": [f for f in variant.fields if f not in fields],
                "metrics": classification_metrics(y_test, pred),
            }
            if variant.name != BASELINE_VARIANT:
                ci = paired_bootstrap_macro_f1(
                    y_test, pred, predictions[BASELINE_VARIANT], n_resamples=n_resamples, seed=seed
                )
                update |= {"macro_f1_diff": ci.diff, "ci_low": ci.low, "ci_high": ci.high, "n_resamples": n_resamples}
            results.append(shared.model_copy(update=update))
    return results


def _distinct(values: pd.Series) -> str | None:
    parts = {p for v in values.dropna() for p in str(v).split(",") if p}
    return ",".join(sorted(parts)) or None
