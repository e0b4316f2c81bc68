"""Benchmark metrics (sacrebleu, rouge-score, bert-score): hand-computed BLEU / ROUGE-L,
self-scoring of the release, leaderboard."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from miko_assets.annotate.benchmark_metrics import (
    BERTSCORE_F1,
    BERTSCORE_MODEL,
    BERTSCORE_P,
    BERTSCORE_R,
    BLEU1,
    BLEU2,
    ROUGE_L,
    BenchmarkItem,
    default_bertscore,
    leaderboard,
    plot_leaderboard,
    relation_scores,
    score_items,
)
from miko_assets.annotate.miko_release import accepted_references, read_release
from miko_assets.distill.relations import RELATION_NAMES
from miko_assets_tests.paths import MIKO_RELEASE as RELEASE

HYP = "The cat sat on the mat"
REF = "the cat is on the mat"


def _score(hypothesis: str, *references: str) -> dict[str, float]:
    return score_items([BenchmarkItem("i", "xWant", hypothesis, references)]).iloc[0].to_dict()


def _release_self_items(limit_per_relation: int | None = None) -> list[BenchmarkItem]:
    items, per_relation = [], {}
    for (post_id, relation), refs in accepted_references(read_release(RELEASE)).items():
        if (
            limit_per_relation is not None
            and per_relation.get(relation, 0) >= limit_per_relation
        ):
            continue
        per_relation[relation] = per_relation.get(relation, 0) + 1
        items.append(
            BenchmarkItem(f"{post_id}/{relation}", relation, refs[0], tuple(refs))
        )
    return items


def test_bleu_hand_computed():
    # unigrams: the x2, cat, on, mat match -> 5/6; bigrams: the cat, on the, the mat -> 3/5,
    # add-one smoothed -> 4/6; same lengths, so no brevity penalty
    scores = _score(HYP, REF)
    assert scores[BLEU1] == pytest.approx(5 / 6)
    assert scores[BLEU2] == pytest.approx(math.sqrt(5 / 6 * 4 / 6))


def test_bleu_clipping_brevity_and_multiple_references():
    assert _score("the the the the", "the cat")[BLEU1] == pytest.approx(0.25)
    assert _score("the cat", "the cat sat on the mat")[BLEU1] == pytest.approx(math.exp(1 - 6 / 2))
    # multi-reference BLEU: each n-gram is clipped by its count in any reference, so "the"
    # (first reference) and "cat" (second) both match: 1.0
    assert _score("the cat", "the dog", "a cat")[BLEU1] == pytest.approx(1.0)
    assert _score("", REF)[BLEU2] == 0.0
    assert _score("dog", REF)[BLEU1] == 0.0


def test_rouge_l_hand_computed():
    # rouge-score drops punctuation: LCS "the cat on the mat" = 5 of 6 tokens each way
    assert _score(HYP + ".", REF + ".")[ROUGE_L] == pytest.approx(5 / 6)
    # precision 2/2, recall 2/6 -> F1 = 2 * 1 * 1/3 / (1 + 1/3) = 1/2; the best reference counts
    assert _score("the cat", REF)[ROUGE_L] == pytest.approx(1 / 2)
    assert _score(HYP, "dog", REF)[ROUGE_L] == pytest.approx(5 / 6)
    assert _score("dog", REF)[ROUGE_L] == 0.0


def test_release_scored_against_itself_is_perfect_lexically():
    items = _release_self_items()
    scores = score_items(items)
    assert len(scores) == len(items) > 5000
    for metric in (BLEU1, BLEU2, ROUGE_L):
        assert scores[metric].min() == pytest.approx(1.0)


def test_items_need_references():
    with pytest.raises(ValueError):
        score_items([BenchmarkItem("x", "xWant", "a", ())])


def _scores() -> pd.DataFrame:
    # generator g1: xWant 0.9 on 3 items, xReact 0.1 on 1 -> macro 0.5, micro 0.7
    rows = [("g1", "v1", "xWant", 0.9)] * 3 + [("g1", "v1", "xReact", 0.1)]
    rows += [("g2", "v1", "xWant", 0.6), ("g2", "v1", "xReact", 0.6)]
    df = pd.DataFrame(rows, columns=["model", "prompt_version", "relation", ROUGE_L])
    df[BLEU1] = df[ROUGE_L]
    df[BLEU2] = df[ROUGE_L] / 2
    df.insert(0, "item_id", [f"i{i}" for i in range(len(df))])
    return df


def test_leaderboard_macro_averages_over_relations():
    table = leaderboard(_scores(), ["model", "prompt_version"])
    assert list(table["model"]) == ["g2", "g1"]
    assert list(table["rank"]) == [1, 2]
    g1 = table.set_index("model").loc["g1"]
    assert g1[ROUGE_L] == pytest.approx(0.5)
    assert (g1["n_items"], g1["n_relations"]) == (4, 2)
    per_relation = relation_scores(_scores(), ["model"]).set_index(
        ["model", "relation"]
    )
    assert per_relation.loc[("g1", "xWant"), "n_items"] == 3


def test_leaderboard_plot_is_a_png():
    png = plot_leaderboard(
        leaderboard(_scores(), ["model", "prompt_version"]), ["model", "prompt_version"]
    )
    assert png.startswith(b"\x89PNG\r\n\x1a\n")


@pytest.fixture(scope="module")
def bert():
    # offline, without the paper's roberta-large in the cache: MiniLM from its package by path
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setenv("TRANSFORMERS_OFFLINE", "1")
        scorer = default_bertscore()
        assert scorer.name == "all-MiniLM-L6-v2 (layer 6)"
        scorer.score([("warm up", ("warm up",))])
    return scorer


@pytest.mark.slow
def test_bertscore_self_scoring_is_perfect(bert):
    items = _release_self_items(limit_per_relation=8)
    scores = score_items(items, bert)
    assert set(scores["relation"]) == set(RELATION_NAMES)
    for metric in (BERTSCORE_P, BERTSCORE_R, BERTSCORE_F1):
        assert (scores[metric] - 1).abs().max() < 1e-5
    assert set(scores[BERTSCORE_MODEL]) == {bert.name}
    table = leaderboard(scores.assign(model="release"), ["model"])
    assert table.loc[0, BERTSCORE_F1] == pytest.approx(1.0, abs=1e-5)
    assert table.loc[0, "n_relations"] == 10


@pytest.mark.slow
def test_bertscore_ranks_a_paraphrase_above_an_unrelated_sentence(bert):
    reference = ("After posting this Tweet, the user feels happy and content.",)
    paraphrase, unrelated, empty = bert.score(
        [
            ("After posting this Tweet, the user feels glad and satisfied.", reference),
            ("The stock market fell sharply on Tuesday.", reference),
            ("", reference),
        ]
    )
    assert 0 < unrelated[2] < paraphrase[2] < 1 and empty == (0.0, 0.0, 0.0)
    # several references: the best one counts
    [best] = bert.score(
        [
            (
                "The stock market fell sharply on Tuesday.",
                (*reference, "Stocks fell on Tuesday."),
            )
        ]
    )
    assert best[2] > unrelated[2]
