"""Provider batch APIs behind one small interface: OpenAI Batch and Anthropic Message Batches.

Every item's `custom_id` is its request's cache key. Bodies are built by the online providers'
own mappings (`chat_payload`, `messages_params`) and answers parsed by their parsers, so a
batch answer is recorded exactly as the same online call would be. The SDKs keep their own
retries here: these are a few control calls, not the per-request path the runner paces.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Literal, Protocol

import anthropic
import openai
from pydantic import BaseModel

from miko_assets.llm.anthropic_provider import (
    AnthropicProvider,
    AnthropicSettings,
    messages_params,
    parse_message,
)
from miko_assets.llm.models import LLMRequest
from miko_assets.llm.openai_provider import (
    OpenAIProvider,
    OpenAISettings,
    chat_payload,
    parse_chat_completion,
)
from miko_assets.llm.provider_interface import (
    ProviderError,
    ProviderReply,
    error_body_message,
    error_from_status,
    redact,
)
from miko_assets.llm.provider_registry import ProviderConfigError, build_provider

BATCH_PROVIDERS = ("openai", "anthropic")

ItemResult = ProviderReply | ProviderError
"""One item's answer, or why it has none (a failure kind and a redacted message)."""

_OPENAI_ENDPOINT: Literal["/v1/chat/completions"] = "/v1/chat/completions"
_OPENAI_ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
# Anthropic reports errored items by error type only; these match `error_from_status` kinds.
_ANTHROPIC_ERROR_KINDS = {
    "invalid_request_error": "bad_request",
    "not_found_error": "bad_request",
    "request_too_large": "bad_request",
    "authentication_error": "auth",
    "permission_error": "auth",
    "rate_limit_error": "rate_limited",
    "api_error": "server_error",
    "overloaded_error": "server_error",
}


class BatchState(BaseModel):
    """A batch as last polled: the provider's status word, whether it has ended, and why not
    every item has a result when the provider says so (e.g. a failed validation)."""

    provider_status: str
    ended: bool
    detail: str | None = None


class BatchClient(Protocol):
    """Submit, poll and fetch one provider's batches. Never logs or returns the API key."""

    name: str

    async def submit(self, items: Sequence[tuple[str, LLMRequest]]) -> str:
        """Send (custom_id, request) pairs as one batch; returns the provider's batch id."""
        ...

    async def poll(self, batch_id: str) -> BatchState: ...

    async def results(self, batch_id: str) -> dict[str, ItemResult]:
        """The ended batch's results by custom_id (items without one are absent)."""
        ...

    async def aclose(self) -> None: ...


def batch_client(provider_name: str, env: Mapping[str, str] = os.environ) -> BatchClient:
    """The batch client of a provider, configured from `env` like its online provider."""
    if provider_name not in BATCH_PROVIDERS:
        raise ProviderConfigError(
            f"provider {provider_name!r} has no batch API; batches need one of "
            f"{', '.join(BATCH_PROVIDERS)}"
        )
    provider = build_provider(provider_name, env)
    if isinstance(provider, OpenAIProvider):
        return OpenAIBatchClient(provider.settings)
    assert isinstance(provider, AnthropicProvider)
    return AnthropicBatchClient(provider.settings)


@contextmanager
def _sdk_errors(sdk: ModuleType, secret: str | None) -> Iterator[None]:
    """SDK exceptions (`openai` or `anthropic`, which share their shape) as redacted
    `ProviderError`s."""
    try:
        yield
    except sdk.APIStatusError as exc:
        message = redact(error_body_message(exc.body, exc.message), [secret])
        raise error_from_status(exc.status_code, message, exc.response.headers) from None
    except sdk.APITimeoutError:
        raise ProviderError(
            "timeout", "the batch API did not answer in time", retryable=True
        ) from None
    except sdk.APIConnectionError as exc:
        raise ProviderError("connection", redact(str(exc), [secret]), retryable=True) from None


class OpenAIBatchClient:
    """OpenAI Batch: a JSONL file of Chat Completions bodies, one batch over it, and output and
    error files of the answers."""

    name = "openai"

    def __init__(self, settings: OpenAISettings) -> None:
        self._secret = settings.api_key.get_secret_value() if settings.api_key else None
        self._json_mode = settings.json_mode
        # Local servers need no key, but the SDK insists on one.
        self._sdk = openai.AsyncOpenAI(api_key=self._secret or "unused", base_url=settings.base_url)

    async def submit(self, items: Sequence[tuple[str, LLMRequest]]) -> str:
        lines = "".join(
            json.dumps(
                {
                    "custom_id": key,
                    "method": "POST",
                    "url": _OPENAI_ENDPOINT,
                    "body": chat_payload(request, self._json_mode),
                },
                ensure_ascii=False,
            )
            + "\n"
            for key, request in items
        )
        with _sdk_errors(openai, self._secret):
            upload = await self._sdk.files.create(
                file=("miko-batch.jsonl", lines.encode(), "application/jsonl"), purpose="batch"
            )
            batch = await self._sdk.batches.create(
                input_file_id=upload.id, endpoint=_OPENAI_ENDPOINT, completion_window="24h"
            )
        return batch.id

    async def poll(self, batch_id: str) -> BatchState:
        with _sdk_errors(openai, self._secret):
            batch = await self._sdk.batches.retrieve(batch_id)
        errors = batch.errors.data if batch.errors and batch.errors.data else []
        detail = "; ".join(f"{e.code}: {e.message}" for e in errors[:3]) or None
        return BatchState(
            provider_status=batch.status,
            ended=batch.status in _OPENAI_ENDED,
            detail=redact(detail, [self._secret]) if detail else None,
        )

    async def results(self, batch_id: str) -> dict[str, ItemResult]:
        results: dict[str, ItemResult] = {}
        with _sdk_errors(openai, self._secret):
            batch = await self._sdk.batches.retrieve(batch_id)
            for file_id in (batch.output_file_id, batch.error_file_id):
                if not file_id:
                    continue
                content = await self._sdk.files.content(file_id)
                for line in content.text.splitlines():
                    if line.strip():
                        item = json.loads(line)
                        results[item["custom_id"]] = self._item(item)
        return results

    def _item(self, item: dict[str, Any]) -> ItemResult:
        response = item.get("response") or {}
        status = response.get("status_code")
        if status == 200:
            try:
                return parse_chat_completion(response.get("body"))
            except ProviderError as exc:
                return exc
        if status:
            message = error_body_message(response.get("body"), f"HTTP {status}")
            return error_from_status(status, redact(message, [self._secret]))
        error = item.get("error") or {}
        code = str(error.get("code") or "error")
        return ProviderError(
            code if code.startswith("batch_") else f"batch_{code}",
            redact(str(error.get("message") or "the batch gave no answer"), [self._secret]),
        )

    async def aclose(self) -> None:
        await self._sdk.close()


def anthropic_batch_params(request: LLMRequest) -> dict[str, Any]:
    """The Messages API body of a request, as a batch item's `params` (the sampling parameters
    the online call passes as the SDK's `extra_body` belong in the body itself)."""
    params = messages_params(request)
    sampling = params.pop("extra_body", {})
    return {**params, **sampling}


class AnthropicBatchClient:
    """Anthropic Message Batches: one create call with every item, and a JSONL of results."""

    name = "anthropic"

    def __init__(self, settings: AnthropicSettings) -> None:
        self._secret = settings.api_key.get_secret_value()
        self._sdk = anthropic.AsyncAnthropic(api_key=self._secret, base_url=settings.base_url)

    async def submit(self, items: Sequence[tuple[str, LLMRequest]]) -> str:
        requests: Any = [
            {"custom_id": key, "params": anthropic_batch_params(request)} for key, request in items
        ]
        with _sdk_errors(anthropic, self._secret):
            batch = await self._sdk.messages.batches.create(requests=requests)
        return batch.id

    async def poll(self, batch_id: str) -> BatchState:
        with _sdk_errors(anthropic, self._secret):
            batch = await self._sdk.messages.batches.retrieve(batch_id)
        return BatchState(
            provider_status=batch.processing_status, ended=batch.processing_status == "ended"
        )

    async def results(self, batch_id: str) -> dict[str, ItemResult]:
        results: dict[str, ItemResult] = {}
        with _sdk_errors(anthropic, self._secret):
            async for entry in await self._sdk.messages.batches.results(batch_id):
                results[entry.custom_id] = self._item(entry.result)
        return results

    def _item(self, result: Any) -> ItemResult:
        if result.type == "succeeded":
            try:
                return parse_message(result.message)
            except ProviderError as exc:
                return exc
        if result.type == "errored":
            error = result.error.error
            return ProviderError(
                _ANTHROPIC_ERROR_KINDS.get(error.type, "batch_errored"),
                redact(f"{error.type}: {error.message}", [self._secret]),
            )
        return ProviderError(
            f"batch_{result.type}", f"the batch was {result.type} before this request ran"
        )

    async def aclose(self) -> None:
        await self._sdk.close()
