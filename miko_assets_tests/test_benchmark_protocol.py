"""The generator benchmark's protocol: presets, the posts it scores, per-relation generation."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from miko_assets.distill.relations import RELATIONS_BY_NAME
from miko_assets.llm.models import LLMRequest, LLMResponse
from miko_assets.stages.benchmark import (
    BenchmarkConfig,
    benchmark_posts,
    benchmark_presets,
    generate,
    parse_generators,
)
from miko_assets.stages.common import Validator
from miko_assets_tests.paths import MIKO_RELEASE

OPEN_MODELS = {
    "llama-2-7b-chat": "meta-llama/Llama-2-7b-chat-hf",
    "llama-2-13b-chat": "meta-llama/Llama-2-13b-chat-hf",
    "llama-2-7b": "meta-llama/Llama-2-7b-hf",
    "llama-2-13b": "meta-llama/Llama-2-13b-hf",
    "falcon-7b-instruct": "tiiuae/falcon-7b-instruct",
    "mistral-7b-instruct-v0.1": "mistralai/Mistral-7B-Instruct-v0.1",
    "mistral-7b-instruct-v0.2": "mistralai/Mistral-7B-Instruct-v0.2",
    "mistral-7b-v0.1": "mistralai/Mistral-7B-v0.1",
}


def test_presets_follow_the_authors_protocol() -> None:
    presets = benchmark_presets({})
    for name, model in OPEN_MODELS.items():
        config = presets[name].config
        assert (config.provider, config.model, config.prompt_version) == ("openai", model, "v4")
        assert (config.params.top_k, config.params.max_tokens) == (10, 50)
    embedded = presets["smollm2-135m"].config
    assert (embedded.provider, embedded.prompt_version, embedded.params.top_k) == ("local", "v4", 10)
    prompt = embedded.prompt()
    assert prompt.per_prefix and prompt.placeholders == {"text", "prefix"}  # text only
    one_call = presets["smollm2-135m-one-call"].config
    assert (one_call.prompt_version, one_call.params.max_tokens, one_call.params.top_k) == ("v2", 700, None)


def test_generators_by_preset_or_triple_and_bad_entries() -> None:
    env = {"MIKO_INTENTIONS_TEMPERATURE": "0.9"}  # stage overrides do not leak into presets
    first, second = parse_generators("mistral-7b-v0.1, local:SmolLM2-135M-Instruct.Q4_1:v2", env)
    assert first.name == "mistral-7b-v0.1" and first.config.params.temperature == 1.0
    assert second.name == "local:SmolLM2-135M-Instruct.Q4_1:v2"
    with pytest.raises(ValueError, match="unknown preset 'gpt-2'"):
        parse_generators("gpt-2", {})
    with pytest.raises(ValueError, match="twice"):
        parse_generators("smollm2-135m,smollm2-135m", {})
    assert [g.name for g in BenchmarkConfig.from_env({}).generators] == ["smollm2-135m"]


def test_every_released_post_by_default_or_a_seeded_sample() -> None:
    every = benchmark_posts(MIKO_RELEASE)
    assert len(every) > 600 and len({p.post_id for p in every}) == len(every)
    sample = benchmark_posts(MIKO_RELEASE, 30, seed=3)
    assert len(sample) == 30 and sample == benchmark_posts(MIKO_RELEASE, 30, seed=3)
    assert sample != benchmark_posts(MIKO_RELEASE, 30, seed=4)
    assert BenchmarkConfig.from_env({}).posts is None
    assert BenchmarkConfig.from_env({"MIKO_BENCHMARK_POSTS": "30"}).code_version.startswith("posts=30,seed=0|")


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[LLMRequest]] = []

    def __call__(self, requests: Sequence[LLMRequest], validate: Validator | None = None) -> list[LLMResponse]:
        self.batches.append(list(requests))
        return [
            LLMResponse(call_id=r.cache_key(), status="ok", text=" share the joy of the day." if r.continuation else "{}")
            for r in requests
        ]


def test_per_relation_generators_make_one_call_per_scored_relation_text_only() -> None:
    posts = benchmark_posts(MIKO_RELEASE, 3, seed=0)
    generators = parse_generators("smollm2-135m,smollm2-135m-one-call", {})
    recorder = Recorder()
    items = generate(generators, posts, recorder)
    one_call, per_relation = recorder.batches
    assert len(one_call) == 3 and len(per_relation) == sum(len(p.references) for p in posts)
    assert [r.continuation.prefix for r in per_relation[: len(posts[0].references)]] == [
        RELATIONS_BY_NAME[name].prefix for name in posts[0].references
    ]
    assert all(posts[0].text in r.messages[-1].content for r in per_relation[:1])
    ours = items[items["generator"] == "smollm2-135m"]
    assert (ours["status"] == "ok").all() and ours["llm_call_id"].nunique() == len(ours)
    assert ours["hypothesis"].str.endswith("share the joy of the day").all()
    theirs = items[items["generator"] == "smollm2-135m-one-call"]
    assert (theirs["status"] == "failed").all() and theirs["error"].str.contains("missing").all()
