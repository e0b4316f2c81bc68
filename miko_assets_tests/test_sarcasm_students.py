"""Sarcasm students on real data (iSarcasmEval, MMSD samples) and on a synthetic batch with intentions."""

from __future__ import annotations

import random
from collections.abc import Iterable

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from miko_assets.datasets.isarcasm import load_isarcasmeval
from miko_assets.datasets.mmsd import load_mmsd
from miko_assets.datasets.mmsd2 import load_mmsd2
from miko_assets.datasets.post import Post
from miko_assets.sarcasm.dataset import RELATIONS, build_sarcasm_dataset
from miko_assets.sarcasm.report import RESULT_COLUMNS, plot_results, results_frame
from miko_assets.sarcasm.students import (
    InsufficientData,
    StudentResult,
    TfidfFeaturizer,
    classification_metrics,
    fit_predict,
    macro_f1_rows,
    paired_bootstrap_macro_f1,
    run_experiment,
    split_dataset,
    student_variants,
)
from miko_assets_tests.paths import SHARED_DATA

DATA = SHARED_DATA
TEACHER = "smollm2-135m-instruct-q4_1"


def _posts_frame(posts: Iterable[Post]) -> pd.DataFrame:
    return pd.DataFrame([p.model_dump(include={"post_id", "text", "label", "split", "dataset"}) for p in posts])


def _by(results: list[StudentResult], student: str, variant: str = "text") -> StudentResult:
    return next(r for r in results if r.student == student and r.variant == variant)


def test_text_only_tfidf_beats_majority_on_isarcasmeval() -> None:
    posts = _posts_frame(load_isarcasmeval(DATA / "isarcasmeval" / "train.En.csv"))
    frame = build_sarcasm_dataset(posts).frame
    assert frame["label"].value_counts().to_dict() == {0: 2601, 1: 867}

    results = run_experiment(frame, students=("tfidf",), variants=student_variants()[:1], seed=0)
    tfidf, majority = _by(results, "tfidf"), _by(results, "majority")
    assert tfidf.split_method.startswith("seeded stratified 80%/20% split (seed 0)")
    assert (tfidf.n_train, tfidf.n_test) == (2774, 694)
    assert majority.metrics.f1 == 0.0 and majority.metrics.accuracy == pytest.approx(0.75, abs=0.01)
    assert 0.6 < tfidf.metrics.accuracy < 0.9
    assert 0.15 < tfidf.metrics.recall < 0.9 and 0.15 < tfidf.metrics.precision < 0.9
    assert tfidf.metrics.macro_f1 > majority.metrics.macro_f1 + 0.05

    # The gain over the majority class holds up under a paired bootstrap of the test set.
    split = split_dataset(frame, seed=0)
    x_train, x_test = TfidfFeaturizer().transform(split.train, split.test, ["text"])
    pred = fit_predict(x_train, split.train["label"].to_numpy(), x_test)
    y_test = split.test["label"].to_numpy()
    assert classification_metrics(y_test, pred) == tfidf.metrics
    ci = paired_bootstrap_macro_f1(y_test, pred, np.zeros_like(y_test), seed=1)
    assert ci.low > 0


@pytest.mark.parametrize(
    "posts",
    [
        pytest.param(
            lambda: [
                *load_mmsd(DATA / "mmsd" / "train_sample.txt"),
                *load_mmsd(DATA / "mmsd" / "valid2_sample.txt"),
            ],
            id="mmsd",
        ),
        pytest.param(
            lambda: [
                *load_mmsd2(DATA / "mmsd2" / "train_sample.json"),
                *load_mmsd2(DATA / "mmsd2" / "valid_sample.json"),
            ],
            id="mmsd2",
        ),
    ],
)
def test_mmsd_samples_are_refused_as_single_class(posts) -> None:
    # The shared MMSD and MMSD2.0 samples hold sarcastic posts only: a student must refuse
    # rather than report metrics a one-class test set cannot support.
    frame = build_sarcasm_dataset(_posts_frame(posts())).frame
    assert set(frame["label"]) == {1}
    assert set(frame["split"]) == {"train", "valid"}
    with pytest.raises(InsufficientData, match=r"dataset 'mmsd2?'.*0 non-sarcastic and \d+ sarcastic"):
        run_experiment(frame, students=("tfidf",))


def _synthetic_tables(n_posts: int = 100, seed: int = 7) -> dict[str, pd.DataFrame]:
    """Posts whose text says nothing about the label while their xIntent intention does."""
    rng = random.Random(seed)
    subjects = ["the bus", "my boss", "the weather", "monday", "the wifi", "this meeting", "traffic", "my phone"]
    comments = ["is great", "was something else", "happened again", "is exactly what i needed", "made my day"]
    tails = ["today", "as usual", "once more", "at 8am", "", "lol"]
    fillers = ["tell people about it", "see what happens", "talk about the day", "look at the picture"]
    sarcastic_intents = ["mock how awful {s} is", "ridicule {s} with bitter irony", "complain ironically about {s}"]
    sincere_intents = ["share good news about {s}", "sincerely praise {s}", "thank everyone for {s}"]
    posts, captions, key_info, intentions = [], [], [], []
    for i in range(n_posts):
        post_id, label, subject = f"synth:{i}", i % 2, rng.choice(subjects)
        split = "train" if i < int(n_posts * 0.7) else "test"
        posts.append(
            {
                "post_id": post_id,
                "text": f"{subject} {rng.choice(comments)} {rng.choice(tails)}".strip(),
                "label": label,
                "split": split,
                "dataset": "synth",
            }
        )
        if i % 2 == 0:
            captions.append({"post_id": post_id, "caption": f"a photo of {subject}", "caption_id": f"c{i}"})
        key_info.append(
            {
                "post_id": post_id,
                "concept": subject,
                "action": rng.choice(comments),
                "object": None,
                "emotion": rng.choice(["joy", "annoyance", "surprise"]),
                "keywords": subject,
                "key_info_id": f"k{i}",
            }
        )
        if i % 17 == 5:  # a few posts lack intentions
            continue
        for relation in RELATIONS:
            pool = (sarcastic_intents if label else sincere_intents) if relation == "xIntent" else fillers
            intentions.append(
                {
                    "post_id": post_id,
                    "relation": relation,
                    "intention": rng.choice(pool).format(s=subject),
                    "intention_id": f"{post_id}:{relation}",
                    "status": "ok",
                    "model": TEACHER,
                    "prompt_version": "intentions-v2" if i == 3 else "intentions-v1",
                    "prompt_sha": "sha-v2" if i == 3 else "sha-v1",
                    "llm_call_id": f"call:{post_id}",
                }
            )
    return {
        "posts": pd.DataFrame(posts),
        "captions": pd.DataFrame(captions),
        "key_info": pd.DataFrame(key_info),
        "intentions": pd.DataFrame(intentions),
    }


@pytest.fixture(scope="module")
def synthetic() -> pd.DataFrame:
    built = build_sarcasm_dataset(**_synthetic_tables())
    assert built.n_without_intentions == 6
    return built.frame


def _check_variants(results: list[StudentResult], student: str) -> None:
    names = [r.variant for r in results if r.student == student]
    assert names == [v.name for v in student_variants()]
    assert len(names) == 13
    for result in results:
        assert result.teacher_model == TEACHER
        assert result.teacher_prompt_versions == "intentions-v1,intentions-v2"
        assert (result.n_train, result.n_test) == (70, 30)
        assert result.split_method == "dataset splits train / test"
    text = _by(results, student)
    with_intentions = _by(results, student, "text+intentions")
    without_xintent = _by(results, student, "text+intentions-xIntent")
    without_xwant = _by(results, student, "text+intentions-xWant")
    assert text.ci_low is None
    assert with_intentions.metrics.macro_f1 > 0.85 > text.metrics.macro_f1
    assert with_intentions.ci_low > 0
    assert with_intentions.ci_low <= with_intentions.macro_f1_diff <= with_intentions.ci_high
    assert without_xwant.metrics.macro_f1 > 0.85 > without_xintent.metrics.macro_f1


def test_all_tfidf_variants_on_synthetic_intentions(synthetic: pd.DataFrame) -> None:
    results = run_experiment(synthetic, students=("tfidf",), n_resamples=500)
    _check_variants(results, "tfidf")
    full = _by(results, "tfidf", "text+intentions+caption+key_info")
    assert full.empty_fields == [] and full.fields[-2:] == ["caption", "key_info"]

    table = results_frame(results)
    assert list(table.columns) == list(RESULT_COLUMNS)
    assert len(table) == 14
    assert set(table["teacher_model"]) == {TEACHER}
    png = plot_results(table)
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_embedding_student_on_synthetic_intentions(synthetic: pd.DataFrame, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    results = run_experiment(synthetic, students=("minilm",), n_resamples=300)
    _check_variants(results, "minilm")


def test_text_only_dataset_drops_empty_fields_and_names_them(synthetic: pd.DataFrame) -> None:
    bare = synthetic.assign(caption="")
    results = run_experiment(bare, students=("tfidf",), variants=student_variants()[2:3], n_resamples=100)
    full = _by(results, "tfidf", "text+intentions+caption+key_info")
    assert full.empty_fields == ["caption"]
    assert "caption" not in full.fields


def test_split_falls_back_to_seeded_stratified_and_refuses_tiny_sides(synthetic: pd.DataFrame) -> None:
    one_split = synthetic.assign(split="all")
    first, again = split_dataset(one_split, seed=3), split_dataset(one_split, seed=3)
    assert list(first.test["post_id"]) == list(again.test["post_id"])
    assert len(first.test) == 20 and first.test["label"].mean() == 0.5
    assert "seed 3" in first.method

    valid = synthetic.assign(split=synthetic["split"].replace({"test": "valid2"}))
    assert split_dataset(valid).method == "dataset splits train / valid2"

    lopsided = synthetic[(synthetic["split"] == "train") | (synthetic["label"] == 1)]
    with pytest.raises(InsufficientData, match="test data .* 0 non-sarcastic"):
        split_dataset(lopsided)
    with pytest.raises(
        InsufficientData, match="2 non-sarcastic and 1 sarcastic posts; a student needs at least 4 of each class"
    ):
        split_dataset(synthetic.head(3).assign(split="all"))


def test_vectorised_macro_f1_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 2, size=(50, 40)), rng.integers(0, 2, size=(50, 40))
    y_true[0], y_pred[1] = 1, 0  # one class absent from the truth, then from the predictions
    expected = [f1_score(t, p, average="macro", labels=[0, 1], zero_division=0) for t, p in zip(y_true, y_pred)]
    np.testing.assert_allclose(macro_f1_rows(y_true, y_pred), expected)


def test_bootstrap_interval_covers_the_true_difference() -> None:
    # A population where the variant is right 85% of the time and the baseline 75%,
    # independently; its macro-F1 difference is the truth each test sample estimates.
    rng = np.random.default_rng(42)
    n = 200_000
    truth = (rng.random(n) < 0.3).astype(int)
    variant = np.where(rng.random(n) < 0.85, truth, 1 - truth)
    baseline = np.where(rng.random(n) < 0.75, truth, 1 - truth)
    true_diff = macro_f1_rows(truth[None], variant[None])[0] - macro_f1_rows(truth[None], baseline[None])[0]
    assert 0.05 < true_diff < 0.2

    covered, excludes_zero = 0, 0
    repeats = 200
    for i in range(repeats):
        sample = rng.choice(n, size=500, replace=False)
        ci = paired_bootstrap_macro_f1(truth[sample], variant[sample], baseline[sample], n_resamples=1000, seed=i)
        assert ci.low <= ci.diff <= ci.high
        covered += ci.low <= true_diff <= ci.high
        excludes_zero += ci.low > 0
    assert 0.88 <= covered / repeats <= 0.99
    assert excludes_zero / repeats > 0.9

    same = paired_bootstrap_macro_f1(truth[:300], variant[:300], variant[:300])
    assert (same.diff, same.low, same.high) == (0.0, 0.0, 0.0)
