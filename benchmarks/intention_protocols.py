"""The embedded model on MIKO's released posts, one-call vs per-relation protocol, side by side.

Both generators come from `prompts/benchmark_presets.yaml`:
  - `smollm2-135m-one-call`: one call per post answering one JSON object with ten keys
    (intentions v2, temperature 0.7, at most 700 tokens), as the demo did before;
  - `smollm2-135m`: the MIKO authors' protocol, text only, one call per relation completing its
    prefix (intentions v4, top-k 10, at most 50 new tokens, a grammar for one clause).
Intentions are scored against the accepted intentions with the benchmark's metrics (BLEU-1/2
from sacrebleu, ROUGE-L from rouge-score, BERTScore from bert-score; the BERTScore model is
printed), and the script prints per-protocol scores, failures, seconds per call and the
quality floor of what was generated.

    python benchmarks/intention_protocols.py --posts 30 --seed 0     # a seeded sample
    python benchmarks/intention_protocols.py                          # every released post (long)

Answers are cached in `--warehouse` (default: a file under the system temp folder), so a
re-run, or a larger run after a smaller one with the same seed, pays only for new calls.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import pandas as pd

from miko_assets.annotate.benchmark_metrics import default_bertscore
from miko_assets.annotate.miko_release import read_release
from miko_assets.distill.intentions import split_prefix
from miko_assets.distill.quality import format_quality_floor, quality_floor
from miko_assets.distill.relations import RELATIONS_BY_NAME
from miko_assets.llm.runner import LLMRunner, RunSummary
from miko_assets.stages.benchmark import (
    benchmark_posts,
    generate,
    parse_generators,
    score_generations,
)
from miko_assets.stages.common import runner_completer
from miko_assets.warehouse.warehouse import Warehouse

GENERATORS = "smollm2-135m-one-call,smollm2-135m"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", type=int, default=None, help="a seeded sample of this many posts (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--release", type=Path, required=True, help="MIKO's released train.json")
    parser.add_argument("--warehouse", type=Path, default=Path(tempfile.gettempdir()) / "miko_intention_protocols.duckdb")
    parser.add_argument("--generators", default=GENERATORS)
    args = parser.parse_args()

    posts = benchmark_posts(args.release, args.posts, args.seed)
    released = len({i.post_id for i in read_release(args.release).intentions})
    chosen = "every" if args.posts is None else f"a sample (seed {args.seed}) of {len(posts)}"
    print(f"{chosen} release post(s) with a reference, of {released}; {sum(len(p.references) for p in posts)} scored relations")
    runner = LLMRunner.from_env(Warehouse(args.warehouse))
    bert = default_bertscore()
    rows = []
    for generator in parse_generators(args.generators):
        summaries: list[RunSummary] = []
        started = time.perf_counter()
        items = generate([generator], posts, runner_completer(runner, None, "benchmark", summaries))
        seconds = time.perf_counter() - started
        scores = score_generations(items, bert)
        calls = sum(s.calls_made for s in summaries)
        board = scores.leaderboard.iloc[0].to_dict()
        rows.append({
            "generator": generator.name,
            "protocol": "per relation" if generator.config.prompt().per_prefix else "one call",
            "items": int(board["n_items"]),
            "failed": int(board["n_failed"]),
            **{k: board[k] for k in scores.metric_names},
            "calls made": calls,
            "s/call": seconds / calls if calls else float("nan"),
            "BERTScore model": board["bertscore_model"],
        })
        print(f"\n{generator.name}: {calls} calls in {seconds:.0f} s "
              f"({summaries[0].cache_hits if summaries else 0} answers from the cache)")
        print("quality floor of the generated intentions:")
        for line in format_quality_floor(_quality(items, posts)):
            print(f"  {line}")
    print("\n" + pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f"))


def _quality(items: pd.DataFrame, posts: list) -> pd.DataFrame:
    """The quality floor of benchmark items (their hypotheses with the prefixes stripped)."""
    texts = {p.post_id: p.text for p in posts}
    frame = items.assign(
        prefix=[RELATIONS_BY_NAME[r].prefix for r in items["relation"]],
        completion=[split_prefix(RELATIONS_BY_NAME[r], h)[0] if h else None
                    for r, h in zip(items["relation"], items["hypothesis"], strict=True)],
    )
    return quality_floor(frame, texts)


if __name__ == "__main__":
    main()
