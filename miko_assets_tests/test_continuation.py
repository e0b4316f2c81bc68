"""Answers that continue a prefix: validation, provider payloads, and the runner's failures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from miko_assets.llm.anthropic_provider import messages_params
from miko_assets.llm.config import RunnerConfig
from miko_assets.llm.continuation import (
    ContinuationError,
    check_continuation,
    continuation_text,
    restates_prefix,
)
from miko_assets.llm.models import (
    Continuation,
    GenerationParams,
    LLMRequest,
    Message,
    canonical_json,
    sha256_text,
)
from miko_assets.llm.openai_provider import chat_payload
from miko_assets.llm.provider_interface import ProviderReply
from miko_assets.llm.provider_registry import ProviderRegistry
from miko_assets.llm.runner import LLMRunner
from miko_assets.warehouse.warehouse import Warehouse

X_WANT = "After posting this Tweet, the user wants to"
X_ATTR = "The user posts this Tweet because the user is"
OPEN = "The user posts this Tweet because"


def _request(prefix: str = X_WANT, model: str = "m", provider: str = "scripted", **params: object) -> LLMRequest:
    return LLMRequest(
        provider=provider,
        model=model,
        messages=(Message(role="system", content="s"), Message(role="user", content=f"Complete: {prefix} ...")),
        params=GenerationParams(temperature=0.3, max_tokens=48, **params),
        continuation=Continuation(prefix=prefix, min_words=3, max_words=16),
    )


@pytest.mark.parametrize(
    ("prefix", "answer", "expected"),
    [
        (X_WANT, " relax after a long race.", "relax after a long race"),
        (X_WANT, "After posting this Tweet, the user wants to relax.\nMore chatter", "relax"),
        (X_WANT, "... celebrate with friends", "celebrate with friends"),
        (OPEN, " the user wants to share good news.", "the user wants to share good news"),
    ],
)
def test_usable_continuations(prefix: str, answer: str, expected: str) -> None:
    assert continuation_text(prefix, answer) == expected
    assert check_continuation(Continuation(prefix=prefix), answer) == expected


@pytest.mark.parametrize(
    ("prefix", "answer", "reason"),
    [
        (X_WANT, "", "empty"),
        (X_WANT, " .", "empty"),
        (X_WANT, " the user wants to.", "only_prefix"),
        (X_WANT, "After posting this Tweet, the user wants to", "empty"),
        (X_ATTR, " the user is happy.", "restates_prefix"),
        (X_WANT, " after posting this tweet they rest.", "restates_prefix"),
    ],
)
def test_unusable_continuations_fail_with_a_reason(prefix: str, answer: str, reason: str) -> None:
    with pytest.raises(ContinuationError) as caught:
        check_continuation(Continuation(prefix=prefix), answer)
    assert caught.value.reason == reason


def test_restating_is_judged_against_the_requests_own_prefix() -> None:
    # "the user ..." restates xAttr's prefix but is the natural way to continue Open's.
    assert restates_prefix(X_ATTR, "the user is kind") and not restates_prefix(OPEN, "the user is kind")


def test_hashes_without_the_new_fields_are_unchanged() -> None:
    params = GenerationParams(temperature=0.5, max_tokens=300)
    old_dump = {"temperature": 0.5, "max_tokens": 300, "top_p": None, "seed": None}
    assert params.params_hash() == sha256_text(canonical_json(old_dump))[:16]
    plain = _request().model_copy(update={"continuation": None})
    assert "continuation" not in plain.fingerprint()
    assert GenerationParams(top_k=10).params_hash() != GenerationParams().params_hash()
    assert _request().cache_key() != plain.cache_key()


def test_servers_get_a_line_stop_and_top_k_anthropic_a_prefilled_turn() -> None:
    payload = chat_payload(_request(top_k=10))
    assert payload["stop"] == ["\n"] and payload["top_k"] == 10 and payload["max_tokens"] == 48
    assert "top_k" not in chat_payload(_request())
    params = messages_params(_request(top_k=10))
    assert params["messages"][-1] == {"role": "assistant", "content": X_WANT}
    assert params["stop_sequences"] == ["\n"] and params["extra_body"]["top_k"] == 10


class ScriptedProvider:
    """An in-process provider answering each call to a model with its next scripted (text, finish)."""

    name = "scripted"

    def __init__(self, replies: Mapping[str, Sequence[tuple[str, str]]]) -> None:
        self.replies = {model: list(answers) for model, answers in replies.items()}
        self.sent: list[LLMRequest] = []

    async def send(self, request: LLMRequest, timeout_s: float) -> ProviderReply:
        self.sent.append(request)
        text, finish = self.replies[request.model].pop(0)
        return ProviderReply(text=text, finish_reason=finish, tokens_in=10, tokens_out=5)

    async def aclose(self) -> None:
        pass


def _runner(provider: ScriptedProvider, warehouse: Warehouse | None) -> LLMRunner:
    config = RunnerConfig(flush_interval_s=0.05, backoff_base_s=0.01, backoff_max_s=0.02)
    return LLMRunner(ProviderRegistry(env={}, providers=[provider]), warehouse, config=config)


def test_runner_fails_prefix_only_and_cut_answers_with_reasons_and_caches_good_ones(tmp_path: Path) -> None:
    warehouse = Warehouse(tmp_path / "w.duckdb")
    provider = ScriptedProvider({
        "m": [(" relax after the race.", "stop")],
        # only the prefix again, and again after the repair call
        "m2": [(" the user wants to.", "stop"), (" the user wants to.", "stop")],
        "m3": [(" run another marathon next spring with", "length")],  # cut at the token limit
    })
    requests = [_request(X_WANT), _request(X_WANT, model="m2"), _request(X_WANT, model="m3")]
    first = _runner(provider, warehouse).run(requests)
    good, prefix_only, cut = first.responses
    assert (good.status, good.parsed) == ("ok", "relax after the race")
    assert prefix_only.status == "failed" and prefix_only.error_kind == "invalid_output"
    assert "only_prefix" in prefix_only.error and prefix_only.repair_of is not None
    repair = [r for r in provider.sent if r.model == "m2"][1]
    assert "do not repeat its beginning" in repair.messages[-1].content
    assert cut.status == "failed" and cut.error_kind == "length"
    again = _runner(ScriptedProvider({}), warehouse).run(requests[:1])
    assert again.responses[0].from_cache and again.responses[0].parsed == "relax after the race"
