"""The intention benchmark: generators write the ten intentions zero-shot from a post's text,
scored against MIKO's accepted intentions.

Prefixes: every relation's intention opens with a fixed prefix ("After posting this Tweet, the
user wants to"). Hypotheses and references are both scored WITHOUT it (`split_prefix`, which
matches it case- and spacing-insensitively), so the shared boilerplate does not inflate BLEU,
ROUGE-L or BERTScore and only what a generator actually wrote is compared.

Zero-shot from the text: the generator gets the intentions prompt with the post's text only;
the image description and the key-information fields say they are absent. A relation the
generator did not answer (or a failed call) is scored as an empty hypothesis, i.e. 0.

Generators come from `MIKO_BENCHMARK_GENERATORS`, comma-separated `provider:model:prompt_version`
(a model name may itself contain colons), e.g.
`local:SmolLM2-135M-Instruct.Q4_1:v2,openai:gpt-4o-mini:v1`; the intentions stage's generation
parameters apply to all. Default: the current intentions stage configuration.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from miko_assets.annotate.benchmark import (
    BERTSCORE_F1,
    BERTSCORE_P,
    BERTSCORE_R,
    BLEU1,
    BLEU2,
    ROUGE_L,
    BenchmarkItem,
    MiniLMBertScorer,
    leaderboard,
    relation_scores,
    score_items,
)
from miko_assets.annotate.miko_release import accepted_references, read_release
from miko_assets.distill.config import StageConfig, code_version, stage_config
from miko_assets.distill.intentions import (
    build_intentions_request,
    parse_intentions,
    split_prefix,
)
from miko_assets.distill.relations import RELATION_NAMES, RELATIONS_BY_NAME
from miko_assets.llm.models import LLMResponse
from miko_assets.stages.common import Completer, response_failure
from miko_assets.stages.human_annotations import DEFAULT_RELEASE_PATH
from miko_assets.stages.intentions import require_some_intention
from miko_assets.warehouse.schema import BENCHMARK_ITEMS, BENCHMARK_RESULTS

POSTS_ENV = "MIKO_BENCHMARK_POSTS"
GENERATORS_ENV = "MIKO_BENCHMARK_GENERATORS"
RELEASE_ENV = "MIKO_BENCHMARK_RELEASE"
DEFAULT_POSTS = 20
INTENTIONS_STAGE = "intentions"
SCORING_VERSION = "prefix-stripped|bleu1,bleu2,rouge_l|bertscore=all-MiniLM-L6-v2,last-layer,no-idf,no-rescale"

# warehouse column -> metric name of `annotate.benchmark`
METRIC_COLUMNS = {
    "bleu1": BLEU1, "bleu2": BLEU2, "rouge_l": ROUGE_L,
    "bertscore_p": BERTSCORE_P, "bertscore_r": BERTSCORE_R, "bertscore_f1": BERTSCORE_F1,
}
GENERATOR_COLUMNS = ("generator", "provider", "model", "prompt_name", "prompt_version", "prompt_sha", "params_hash", "code_version")
_VERSION = re.compile(r"^v\d+$")


@dataclass(frozen=True)
class Generator:
    """One intentions configuration under test."""

    config: StageConfig

    @property
    def name(self) -> str:
        return f"{self.config.provider}:{self.config.model}:{self.config.prompt_version}"

    def columns(self) -> dict[str, str]:
        """The configuration columns every benchmark row of this generator carries."""
        prompt = self.config.prompt()
        return {
            "generator": self.name,
            "provider": self.config.provider,
            "model": self.config.model,
            "prompt_name": prompt.name,
            "prompt_version": prompt.version,
            "prompt_sha": prompt.sha,
            "params_hash": self.config.params.params_hash(),
            "code_version": code_version(self.config, prompt),
        }


def parse_generators(spec: str, env: Mapping[str, str] = os.environ) -> tuple[Generator, ...]:
    """Generators from `provider:model:version,...`; raises ValueError on a malformed entry."""
    generators = []
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        provider, _, rest = entry.partition(":")
        model, _, version = rest.rpartition(":")
        if not provider or not model or not _VERSION.match(version):
            raise ValueError(f"{GENERATORS_ENV}: expected provider:model:vN, got {entry!r}")
        overrides = {"PROVIDER": provider, "MODEL": model, "PROMPT_VERSION": version}
        stage_env = {**env, **{f"MIKO_{INTENTIONS_STAGE.upper()}_{k}": v for k, v in overrides.items()}}
        generators.append(Generator(stage_config(INTENTIONS_STAGE, stage_env)))
    if len({g.name for g in generators}) != len(generators):
        raise ValueError(f"{GENERATORS_ENV} names a generator twice: {spec!r}")
    return tuple(generators)


@dataclass(frozen=True)
class BenchmarkConfig:
    """The benchmark set (the first `posts` release posts with a reference) and the generators."""

    release_path: Path
    posts: int
    generators: tuple[Generator, ...]

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> BenchmarkConfig:
        spec = env.get(GENERATORS_ENV)
        generators = parse_generators(spec, env) if spec else (Generator(stage_config(INTENTIONS_STAGE, env)),)
        return cls(
            release_path=Path(env.get(RELEASE_ENV) or DEFAULT_RELEASE_PATH),
            posts=int(env.get(POSTS_ENV) or DEFAULT_POSTS),
            generators=generators,
        )

    @property
    def code_version(self) -> str:
        generators = ";".join(g.columns()["code_version"] for g in self.generators)
        return f"posts={self.posts}|{generators}|{SCORING_VERSION}"


@dataclass(frozen=True)
class BenchmarkPost:
    post_id: str
    text: str
    references: dict[str, tuple[str, ...]]


def benchmark_posts(release_path: Path, limit: int) -> list[BenchmarkPost]:
    """The first `limit` distinct release posts (file order) with at least one accepted intention."""
    release = read_release(release_path)
    references = accepted_references(release)
    posts: list[BenchmarkPost] = []
    seen: set[str] = set()
    for item in release.intentions:
        if len(posts) == limit:
            break
        if item.post_id in seen:
            continue
        seen.add(item.post_id)
        refs = {r: tuple(references[(item.post_id, r)]) for r in RELATION_NAMES if (item.post_id, r) in references}
        if refs:
            posts.append(BenchmarkPost(item.post_id, item.post_text, refs))
    return posts


def generate(generators: Sequence[Generator], posts: Sequence[BenchmarkPost], complete: Completer) -> pd.DataFrame:
    """Every generator's intentions for every post (one batch through the LLM layer), as
    `generated_items` rows."""
    requests = []
    for generator in generators:
        prompt = generator.config.prompt()
        requests += [build_intentions_request(generator.config, prompt, post.text, None, None) for post in posts]
    responses = complete(requests, require_some_intention)
    frames = [
        generated_items(generator, posts, responses[i * len(posts) : (i + 1) * len(posts)])
        for i, generator in enumerate(generators)
    ]
    return pd.concat(frames, ignore_index=True)


def generated_items(generator: Generator, posts: Sequence[BenchmarkPost], responses: Sequence[LLMResponse]) -> pd.DataFrame:
    """One row per post and relation with references: the generated intention, or why there is none."""
    columns = generator.columns()
    rows = []
    for post, response in zip(posts, responses, strict=True):
        parsed = {p.relation: p for p in parse_intentions(response.text)} if response.status == "ok" else {}
        for relation, references in post.references.items():
            item = parsed.get(relation)
            if item is not None and item.status == "ok":
                hypothesis, error = item.full_text, None
            elif response.status == "ok":
                hypothesis, error = "", f"the answer has no {relation} intention ({item.status if item else 'missing'})"
            else:
                hypothesis, error = "", response_failure(response)
            rows.append({
                **columns,
                "post_id": post.post_id,
                "relation": relation,
                "hypothesis": hypothesis,
                "references_json": json.dumps(list(references), ensure_ascii=False),
                "llm_call_id": response.call_id,
                "status": "failed" if error else "ok",
                "error": error,
            })
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class BenchmarkScores:
    items: pd.DataFrame
    results: pd.DataFrame
    leaderboard: pd.DataFrame


def _completion(relation: str, text: str) -> str:
    return split_prefix(RELATIONS_BY_NAME[relation], text)[0] if relation in RELATIONS_BY_NAME else text


def score_generations(items: pd.DataFrame, bert: MiniLMBertScorer | None, run_id: str | None) -> BenchmarkScores:
    """Score generated items (`generated_items` rows) with their prefixes stripped.

    `items` and `results` are ready for `benchmark_items` and `benchmark_results`;
    `leaderboard` keeps the metric names of `annotate.benchmark` for display.
    """
    items = items.reset_index(drop=True)
    scored = score_items(
        [
            BenchmarkItem(
                item_id=str(i), relation=row["relation"], hypothesis=_completion(row["relation"], row["hypothesis"]),
                references=tuple(_completion(row["relation"], r) for r in json.loads(row["references_json"])),
            )
            for i, row in enumerate(items.to_dict("records"))
        ],
        bert,
    )
    metrics = [m for m in METRIC_COLUMNS.values() if m in scored.columns]
    with_config = pd.concat([items[list(GENERATOR_COLUMNS)], scored[["relation", *metrics]]], axis=1)
    board = leaderboard(with_config, GENERATOR_COLUMNS)
    failed = items.assign(failed=items["status"] != "ok").groupby("generator")["failed"].sum()
    board.insert(1, "n_failed", board["generator"].map(failed).astype(int))
    per_relation = relation_scores(with_config, GENERATOR_COLUMNS)
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    stamp = {"dagster_run_id": run_id, "created_at": now}
    to_columns = {metric: column for column, metric in METRIC_COLUMNS.items()}
    results = pd.concat([per_relation, board.assign(relation="ALL")], ignore_index=True).rename(columns=to_columns)
    return BenchmarkScores(
        items=pd.concat([items, scored[metrics].rename(columns=to_columns)], axis=1)
        .assign(**stamp).reindex(columns=BENCHMARK_ITEMS.column_names),
        results=results.assign(**stamp).reindex(columns=BENCHMARK_RESULTS.column_names)
        .astype({"rank": "Int64", "n_failed": "Int64"}),
        leaderboard=board,
    )
