"""The intention benchmark: generators write the ten intentions zero-shot from a post's text,
scored against MIKO's accepted intentions.

Prefixes: every relation's intention opens with a fixed prefix ("After posting this Tweet, the
user wants to"). Hypotheses and references are both scored WITHOUT it (`split_prefix`, which
matches it case- and spacing-insensitively), so the shared boilerplate does not inflate BLEU,
ROUGE-L or BERTScore and only what a generator actually wrote is compared.

Zero-shot from the text: the generator gets an intentions prompt with the post's text only
(a prompt that also reads the image description and key information is told they are absent).
A per-relation prompt (the authors' protocol, intentions v4) makes one call per relation that
has references; a one-call prompt one call per post. A relation the generator did not answer
(or a failed call) is scored as an empty hypothesis, i.e. 0.

Generators come from `MIKO_BENCHMARK_GENERATORS`, comma-separated, each a preset name from
`prompts/benchmark_presets.yaml` (the eight open models the authors compared, served through
the `openai` provider, and the embedded model) or `provider:model:prompt_version` (a model name
may itself contain colons), which takes the intentions stage's generation parameters. Default:
the `smollm2-135m` preset. Posts: every released post with a reference, or a seeded sample of
`MIKO_BENCHMARK_POSTS` of them (`MIKO_BENCHMARK_SEED`, default 0).
"""

from __future__ import annotations

import json
import os
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from miko_assets.annotate.benchmark_metrics import (
    BERTSCORE_F1,
    BERTSCORE_MODEL,
    BERTSCORE_P,
    BERTSCORE_R,
    BLEU1,
    BLEU2,
    ROUGE_L,
    BenchmarkItem,
    BertScoreModel,
    leaderboard,
    relation_scores,
    score_items,
)
from miko_assets.annotate.miko_release import accepted_references, read_release
from miko_assets.clock import utc_now
from miko_assets.distill.config import StageConfig, code_version, stage_config
from miko_assets.distill.intentions import (
    ParsedIntention,
    build_intentions_request,
    build_relation_requests,
    parse_intentions,
    relation_intention,
    split_prefix,
)
from miko_assets.distill.prompts import PromptError, prompts_dir
from miko_assets.distill.relations import RELATION_NAMES, RELATIONS_BY_NAME
from miko_assets.env_values import env_number
from miko_assets.llm.models import LLMResponse
from miko_assets.stages.common import Completer, response_failure
from miko_assets.stages.intentions import require_some_intention
from miko_assets.warehouse.schema import BENCHMARK_ITEMS, BENCHMARK_RESULTS

POSTS_ENV = "MIKO_BENCHMARK_POSTS"
SEED_ENV = "MIKO_BENCHMARK_SEED"
GENERATORS_ENV = "MIKO_BENCHMARK_GENERATORS"
RELEASE_ENV = "MIKO_BENCHMARK_RELEASE"
PRESETS_FILE = "benchmark_presets.yaml"
DEFAULT_PRESET = "smollm2-135m"
INTENTIONS_STAGE = "intentions"
SCORING_VERSION = "prefix-stripped|sacrebleu bleu1,bleu2 add-one|rouge-score rougeL|bert-score no-idf,no-rescale"

# warehouse column -> metric name of `annotate.benchmark_metrics`
METRIC_COLUMNS = {
    "bleu1": BLEU1, "bleu2": BLEU2, "rouge_l": ROUGE_L,
    "bertscore_p": BERTSCORE_P, "bertscore_r": BERTSCORE_R, "bertscore_f1": BERTSCORE_F1,
}
GENERATOR_COLUMNS = ("generator", "provider", "model", "prompt_name", "prompt_version", "prompt_sha", "params_hash", "code_version")
_VERSION = re.compile(r"^v\d+$")


@dataclass(frozen=True)
class Generator:
    """One intentions configuration under test, by preset name or `provider:model:vN`."""

    config: StageConfig
    preset: str | None = None

    @property
    def name(self) -> str:
        return self.preset or f"{self.config.provider}:{self.config.model}:{self.config.prompt_version}"

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


class _Preset(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: str
    model: str
    prompt_version: str | None = None
    params: dict[str, Any] | None = None


class _Protocol(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_version: str
    params: dict[str, Any]


class _PresetsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    protocol: _Protocol
    presets: dict[str, _Preset]


def benchmark_presets(env: Mapping[str, str] = os.environ) -> dict[str, Generator]:
    """Every named generator of `prompts/benchmark_presets.yaml`, by name."""
    path = prompts_dir(env) / PRESETS_FILE
    try:
        presets = _PresetsFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise PromptError(f"cannot read benchmark presets {path}: {exc}") from exc
    generators = {}
    for name, preset in presets.presets.items():
        params = preset.params if preset.params is not None else presets.protocol.params
        settings = {
            "PROVIDER": preset.provider,
            "MODEL": preset.model,
            "PROMPT_VERSION": preset.prompt_version or presets.protocol.prompt_version,
            **{key.upper(): str(value) for key, value in params.items()},
        }
        generators[name] = Generator(_intentions_config(settings, env), preset=name)
    return generators


def parse_generators(spec: str, env: Mapping[str, str] = os.environ) -> tuple[Generator, ...]:
    """Generators from preset names and `provider:model:vN` entries; raises ValueError on a
    malformed or unknown entry."""
    generators = []
    presets: dict[str, Generator] | None = None
    for entry in filter(None, (e.strip() for e in spec.split(","))):
        if ":" not in entry:
            presets = presets if presets is not None else benchmark_presets(env)
            if entry not in presets:
                raise ValueError(f"{GENERATORS_ENV}: unknown preset {entry!r}; known: {', '.join(presets)}")
            generators.append(presets[entry])
            continue
        provider, _, rest = entry.partition(":")
        model, _, version = rest.rpartition(":")
        if not provider or not model or not _VERSION.match(version):
            raise ValueError(f"{GENERATORS_ENV}: expected a preset name or provider:model:vN, got {entry!r}")
        generators.append(Generator(_intentions_config({"PROVIDER": provider, "MODEL": model, "PROMPT_VERSION": version}, env)))
    if len({g.name for g in generators}) != len(generators):
        raise ValueError(f"{GENERATORS_ENV} names a generator twice: {spec!r}")
    return tuple(generators)


def _intentions_config(settings: Mapping[str, str], env: Mapping[str, str]) -> StageConfig:
    """The intentions stage configuration with these `MIKO_INTENTIONS_*` settings in force."""
    prefix = f"MIKO_{INTENTIONS_STAGE.upper()}_"
    cleared = {k: v for k, v in env.items() if not k.startswith(prefix)}
    return stage_config(INTENTIONS_STAGE, {**cleared, **{prefix + k: v for k, v in settings.items()}})


@dataclass(frozen=True)
class BenchmarkConfig:
    """The benchmark set (every release post with a reference, or a seeded sample of `posts`
    of them) and the generators."""

    release_path: Path | None  # MIKO's released train.json; no default (it ships with no package)
    posts: int | None
    generators: tuple[Generator, ...]
    seed: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> BenchmarkConfig:
        spec = env.get(GENERATORS_ENV) or DEFAULT_PRESET
        posts = env_number(env, POSTS_ENV, int)
        return cls(
            release_path=Path(env[RELEASE_ENV]) if env.get(RELEASE_ENV) else None,
            posts=int(posts) if posts else None,
            generators=parse_generators(spec, env),
            seed=int(env_number(env, SEED_ENV, int) or 0),
        )

    @property
    def code_version(self) -> str:
        generators = ";".join(g.columns()["code_version"] for g in self.generators)
        chosen = "all" if self.posts is None else f"{self.posts},seed={self.seed}"
        return f"posts={chosen}|{generators}|{SCORING_VERSION}"

    @property
    def described_posts(self) -> str:
        """The benchmark set in words, for descriptions and reports."""
        return "every" if self.posts is None else f"a seeded sample (seed {self.seed}) of {self.posts}"


@dataclass(frozen=True)
class BenchmarkPost:
    post_id: str
    text: str
    references: dict[str, tuple[str, ...]]


def benchmark_posts(release_path: Path | None, limit: int | None = None, seed: int = 0) -> list[BenchmarkPost]:
    """The distinct release posts (file order) with at least one accepted intention; with
    `limit`, a sample of that many drawn with `seed` (kept in file order)."""
    if release_path is None:
        raise ValueError(f"set {RELEASE_ENV} to MIKO's released train.json to run the benchmark")
    release = read_release(release_path)
    references = accepted_references(release)
    posts: list[BenchmarkPost] = []
    seen: set[str] = set()
    for item in release.intentions:
        if item.post_id in seen:
            continue
        seen.add(item.post_id)
        refs = {r: tuple(references[(item.post_id, r)]) for r in RELATION_NAMES if (item.post_id, r) in references}
        if refs:
            posts.append(BenchmarkPost(item.post_id, item.post_text, refs))
    if limit is None or limit >= len(posts):
        return posts
    chosen = set(random.Random(seed).sample(range(len(posts)), limit))
    return [post for index, post in enumerate(posts) if index in chosen]


def generate(generators: Sequence[Generator], posts: Sequence[BenchmarkPost], complete: Completer) -> pd.DataFrame:
    """Every generator's intentions for every post, as `generated_items` rows: one batch of
    one-call requests and one of per-relation requests through the LLM layer."""
    one_call, per_relation = [], []
    for generator in generators:
        prompt = generator.config.prompt()
        for post in posts:
            if prompt.per_prefix:
                requests = build_relation_requests(generator.config, prompt, post.text, None, None)
                per_relation += [requests[RELATIONS_BY_NAME[r].number - 1] for r in post.references]
            else:
                one_call.append(build_intentions_request(generator.config, prompt, post.text, None, None))
    answers = iter(complete(one_call, require_some_intention) if one_call else [])
    continued = iter(complete(per_relation) if per_relation else [])
    frames = []
    for generator in generators:
        if generator.config.prompt().per_prefix:
            responses = [{r: next(continued) for r in post.references} for post in posts]
        else:
            responses = [dict.fromkeys(post.references, next(answers)) for post in posts]
        frames.append(generated_items(generator, posts, responses))
    return pd.concat(frames, ignore_index=True)


def generated_items(
    generator: Generator, posts: Sequence[BenchmarkPost], responses: Sequence[Mapping[str, LLMResponse]]
) -> pd.DataFrame:
    """One row per post and relation with references: the generated intention, or why there is
    none. `responses` maps each post's relations to the response that answered them (one
    response for all ten with a one-call prompt)."""
    columns = generator.columns()
    per_relation = generator.config.prompt().per_prefix
    rows = []
    for post, answered in zip(posts, responses, strict=True):
        for relation, references in post.references.items():
            response = answered[relation]
            item = _intention(relation, response, per_relation)
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


def _intention(relation: str, response: LLMResponse, per_relation: bool) -> ParsedIntention | None:
    if response.status != "ok":
        return None
    if per_relation:
        return relation_intention(RELATIONS_BY_NAME[relation], response.text)
    return {p.relation: p for p in parse_intentions(response.text)}.get(relation)


@dataclass(frozen=True)
class BenchmarkScores:
    items: pd.DataFrame
    results: pd.DataFrame
    leaderboard: pd.DataFrame

    @property
    def metric_names(self) -> list[str]:
        """The leaderboard's metric columns."""
        return [m for m in METRIC_COLUMNS.values() if m in self.leaderboard.columns]


def _completion(relation: str, text: str) -> str:
    return split_prefix(RELATIONS_BY_NAME[relation], text)[0] if relation in RELATIONS_BY_NAME else text


def score_generations(items: pd.DataFrame, bert: BertScoreModel | None, run_id: str | None = None) -> BenchmarkScores:
    """Score generated items (`generated_items` rows) with their prefixes stripped.

    `items` and `results` are ready for `benchmark_items` and `benchmark_results`, each row
    naming its BERTScore model; `leaderboard` keeps the metric names of `annotate.benchmark_metrics`
    for display.
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
    model = [BERTSCORE_MODEL] if BERTSCORE_MODEL in scored else []
    keys = [*GENERATOR_COLUMNS, *model]
    with_config = pd.concat([items[list(GENERATOR_COLUMNS)], scored[["relation", *metrics, *model]]], axis=1)
    board = leaderboard(with_config, keys)
    failed = items.assign(failed=items["status"] != "ok").groupby("generator")["failed"].sum()
    board.insert(1, "n_failed", board["generator"].map(failed).astype(int))
    per_relation = relation_scores(with_config, keys)
    now = utc_now()
    stamp = {"dagster_run_id": run_id, "created_at": now}
    to_columns = {metric: column for column, metric in METRIC_COLUMNS.items()}
    results = pd.concat([per_relation, board.assign(relation="ALL")], ignore_index=True).rename(columns=to_columns)
    return BenchmarkScores(
        items=pd.concat([items, scored[[*metrics, *model]].rename(columns=to_columns)], axis=1)
        .assign(**stamp).reindex(columns=BENCHMARK_ITEMS.column_names),
        results=results.assign(**stamp).reindex(columns=BENCHMARK_RESULTS.column_names)
        .astype({"rank": "Int64", "n_failed": "Int64"}),
        leaderboard=board,
    )
