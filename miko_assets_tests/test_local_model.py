"""The embedded llama.cpp provider, running the real SmolLM2-135M-Instruct GGUF."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from miko_assets.llm.local import ENV_MODEL_PATH, LocalLlamaProvider, _load_pool, default_gguf_path
from miko_assets.llm.continuation import check_continuation
from miko_assets.llm.models import Continuation, GenerationParams, ImageInput, LLMRequest, Message
from miko_assets.llm.provider_interface import Provider, ProviderError, ProviderReply
from miko_assets.llm.provider_registry import ProviderRegistry
from miko_assets.llm.runner import LLMRunner

pytestmark = pytest.mark.slow


class Mood(BaseModel):
    sentiment: Literal["positive", "negative", "neutral"]
    reason: str = Field(max_length=80)


@pytest.fixture(scope="module")
def provider() -> LocalLlamaProvider:
    return LocalLlamaProvider()


def _request(
    provider: LocalLlamaProvider,
    content: str,
    *,
    max_tokens: int = 120,
    temperature: float = 0.2,
) -> LLMRequest:
    return LLMRequest(
        provider="local",
        model=provider.model,
        messages=(
            Message(role="system", content="You are a careful assistant. Answer briefly."),
            Message(role="user", content=content),
        ),
        params=GenerationParams(temperature=temperature, max_tokens=max_tokens),
    )


def _send(provider: Provider, request: LLMRequest, timeout_s: float = 120) -> ProviderReply:
    return asyncio.run(provider.send(request, timeout_s))


def test_default_model_is_the_packaged_smollm2(provider: LocalLlamaProvider) -> None:
    assert default_gguf_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert provider.model == "SmolLM2-135M-Instruct.Q4_1"
    assert provider.name == "local"


def test_structured_request_parses_and_validates(provider: LocalLlamaProvider) -> None:
    request = _request(
        provider,
        'Post: "Just missed my train by ten seconds. Great start to the day." '
        "Give the sentiment of the post and a short reason, as JSON.",
    ).model_copy(update={"output_schema": Mood.model_json_schema(), "schema_name": "Mood"})

    reply = _send(provider, request)

    assert reply.finish_reason == "stop", reply.text
    mood = Mood.model_validate(json.loads(reply.text or ""))
    assert mood.sentiment in ("positive", "negative", "neutral")
    assert reply.tokens_in > 20 and reply.tokens_out > 0
    assert reply.raw is not None and reply.raw["grammar"] == "json_schema"
    # Seeded: the same request gives the same answer, which is what the call cache assumes.
    assert _send(provider, request).text == reply.text


def test_plain_text_request(provider: LocalLlamaProvider) -> None:
    reply = _send(provider, _request(provider, "Name one colour of the sky."))
    assert reply.finish_reason == "stop"
    assert reply.text and reply.text.strip()
    assert reply.provider_request_id and reply.raw and reply.raw["grammar"] == "none"


def test_tiny_max_tokens_finishes_with_length(provider: LocalLlamaProvider) -> None:
    reply = _send(provider, _request(provider, "Write a long story about a cat.", max_tokens=3))
    assert reply.finish_reason == "length"
    assert reply.tokens_out == 3


def test_concurrent_calls_are_spread_over_the_contexts_and_all_answer() -> None:
    provider = LocalLlamaProvider(contexts=2)

    async def many() -> list[ProviderReply]:
        requests = [
            _request(provider, f"Say a word that rhymes with {word}.", max_tokens=16)
            for word in ("cat", "dog", "tree", "sun")
        ]
        return await asyncio.gather(*(provider.send(r, 120) for r in requests))

    replies = asyncio.run(many())
    assert all(r.finish_reason in ("stop", "length") and r.tokens_out > 0 for r in replies)
    # Both contexts answered some of them.
    pool = _load_pool(provider.model_path, provider.n_ctx, provider.n_threads, 2)
    assert all(context.n_tokens > 0 for context in pool.contexts)


def test_image_request_is_refused(provider: LocalLlamaProvider) -> None:
    image = ImageInput(sha256="0" * 64, data_b64="AAAA")
    request = _request(provider, "What is in this picture?").model_copy(
        update={"messages": (Message(role="user", content="Describe it.", images=(image,)),)}
    )
    with pytest.raises(ProviderError, match="the embedded model cannot see images") as caught:
        _send(provider, request)
    assert caught.value.kind == "images_unsupported" and not caught.value.retryable


def test_prompt_beyond_the_context_is_refused_not_truncated(provider: LocalLlamaProvider) -> None:
    with pytest.raises(ProviderError, match="2048-token context") as caught:
        _send(provider, _request(provider, "word " * 2500))
    assert caught.value.kind == "context_overflow" and not caught.value.retryable

    # Room for the prompt but not for max_tokens: refused too, before any generation.
    with pytest.raises(ProviderError) as caught:
        _send(provider, _request(provider, "word " * 1900, max_tokens=300))
    assert caught.value.kind == "context_overflow"


def test_deadline_stops_generation(provider: LocalLlamaProvider) -> None:
    request = _request(provider, "Write a very long story.", max_tokens=1500, temperature=1.0)
    with pytest.raises(ProviderError, match="generation passed") as caught:
        _send(provider, request, timeout_s=0.2)
    assert caught.value.kind == "timeout" and caught.value.retryable
    # The model was released: the next call runs normally.
    assert _send(provider, _request(provider, "Say hi.", max_tokens=8)).tokens_out > 0


def test_request_for_another_model_is_refused(provider: LocalLlamaProvider) -> None:
    request = _request(provider, "Hi").model_copy(update={"model": "gpt-4o"})
    with pytest.raises(ProviderError, match="serves 'SmolLM2-135M-Instruct.Q4_1'") as caught:
        _send(provider, request)
    assert caught.value.kind == "model_mismatch"


def test_model_path_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    missing = tmp_path / "absent.gguf"
    monkeypatch.setenv(ENV_MODEL_PATH, str(missing))
    with pytest.raises(ProviderError, match=f"GGUF model file not found: {missing}") as caught:
        LocalLlamaProvider()
    assert caught.value.kind == "model_not_found"

    monkeypatch.setenv(ENV_MODEL_PATH, str(default_gguf_path()))
    assert LocalLlamaProvider().model_path == default_gguf_path().resolve()


def test_a_file_that_is_not_a_model_fails_clearly(tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"not a gguf file")
    provider = LocalLlamaProvider(fake)
    with pytest.raises(ProviderError, match="cannot load GGUF model") as caught:
        _send(provider, _request(provider, "Hi"))
    assert caught.value.kind == "model_load"


def _continuation_request(
    provider: LocalLlamaProvider, prefix: str, *, min_words: int = 3, max_words: int = 16, max_tokens: int = 48
) -> LLMRequest:
    content = f'The tweet: "Just ran my first marathon!"\nComplete the sentence: {prefix} ...'
    request = _request(provider, content, max_tokens=max_tokens, temperature=0.3)
    continuation = Continuation(prefix=prefix, min_words=min_words, max_words=max_words)
    return request.model_copy(update={"continuation": continuation})


def test_continuation_is_one_lowercase_clause_continuing_the_prefix(provider: LocalLlamaProvider) -> None:
    prefix = "After posting this Tweet, the user feels"
    reply = _send(provider, _continuation_request(provider, prefix))
    assert reply.finish_reason == "stop" and reply.raw["grammar"] == "continuation"
    assert re.fullmatch(r" [a-z'\-]+(?:,? [a-z'\-]+){2,15}\.", reply.text), reply.text
    assert check_continuation(Continuation(prefix=prefix), reply.text)


def test_a_grammar_the_model_cannot_satisfy_in_its_tokens_is_a_failure(provider: LocalLlamaProvider) -> None:
    # 40 words cannot fit in 12 tokens: the answer is cut, and the runner fails it as `length`.
    request = _continuation_request(provider, "After viewing this Tweet, others feel", min_words=40, max_words=40, max_tokens=12)
    reply = _send(provider, request)
    assert reply.finish_reason == "length"
    result = LLMRunner(ProviderRegistry(env={}, providers=[provider]), None).run([request])
    (response,) = result.responses
    assert response.status == "failed" and response.error_kind == "length"
