"""Anthropic Messages through the `anthropic` SDK.

Structured output goes through one tool whose `input_schema` is the request's schema, with
`tool_choice` forcing it; the tool input is the answer. System messages are the fixed part of
every prompt, so the last one carries `cache_control` and later calls read it from the
provider's prompt cache (Anthropic caches prompts of 1,024 tokens and more).
"""

from __future__ import annotations

import json
from typing import Any

import anthropic
from pydantic import BaseModel, ConfigDict, SecretStr

from miko_assets.llm.models import LLMRequest, Message
from miko_assets.llm.provider_interface import (
    FINISH_LENGTH,
    FINISH_REFUSAL,
    FINISH_STOP,
    ProviderError,
    ProviderReply,
    sdk_errors,
)

_FINISH = {
    "max_tokens": FINISH_LENGTH,
    "model_context_window_exceeded": FINISH_LENGTH,
    "refusal": FINISH_REFUSAL,
}


class AnthropicSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    api_key: SecretStr
    base_url: str | None = None


def messages_params(request: LLMRequest) -> dict[str, Any]:
    """The Messages API arguments for a request; a continuation prefills the assistant turn."""
    system = [m.content for m in request.messages if m.role == "system"]
    # Recent SDKs no longer type the sampling parameters; the API still reads them from the body.
    sampling: dict[str, Any] = {"temperature": request.params.temperature}
    if request.params.top_p is not None:
        sampling["top_p"] = request.params.top_p
    if request.params.top_k is not None:
        sampling["top_k"] = request.params.top_k
    messages = [_message(m) for m in request.messages if m.role != "system"]
    params: dict[str, Any] = {
        "model": request.model,
        "max_tokens": request.params.max_tokens,
        "messages": messages,
        "extra_body": sampling,
    }
    if request.continuation is not None:
        # A prefilled assistant turn: the model continues the prefix (no trailing space allowed).
        messages.append({"role": "assistant", "content": request.continuation.prefix.rstrip()})
        params["stop_sequences"] = ["\n"]
    if system:
        blocks: list[dict[str, Any]] = [{"type": "text", "text": text} for text in system]
        blocks[-1]["cache_control"] = {"type": "ephemeral"}
        params["system"] = blocks
    if request.output_schema is not None:
        name = request.schema_name or "answer"
        params["tools"] = [
            {
                "name": name,
                "description": "Record the answer.",
                "input_schema": request.output_schema,
            }
        ]
        params["tool_choice"] = {"type": "tool", "name": name}
    return params


def _message(message: Message) -> dict[str, Any]:
    if not message.images:
        return {"role": message.role, "content": message.content}
    blocks: list[dict[str, Any]] = [
        {
            "type": "image",
            "source": {"type": "base64", "media_type": i.media_type, "data": i.data_b64},
        }
        for i in message.images
    ]
    blocks.append({"type": "text", "text": message.content})
    return {"role": message.role, "content": blocks}


def parse_message(message: Any) -> ProviderReply:
    """A Messages API response as a reply: the forced tool's input as JSON, else the text."""
    try:
        tool_inputs = [b.input for b in message.content if b.type == "tool_use"]
        texts = [b.text for b in message.content if b.type == "text"]
        text = json.dumps(tool_inputs[0], ensure_ascii=False) if tool_inputs else "".join(texts)
        usage = message.usage
        cached = usage.cache_read_input_tokens or 0
        written = usage.cache_creation_input_tokens or 0
        return ProviderReply(
            text=text,
            finish_reason=_FINISH.get(message.stop_reason, FINISH_STOP),
            tokens_in=usage.input_tokens + cached + written,
            tokens_out=usage.output_tokens,
            tokens_cached=cached,
            tokens_cache_write=written,
            provider_request_id=message.id,
        )
    except (AttributeError, TypeError, IndexError) as exc:
        raise ProviderError(
            "malformed_response", f"unexpected Messages body ({type(exc).__name__})", retryable=True
        ) from None


class AnthropicProvider:
    """The `anthropic` provider (SDK retries off: the runner retries, honouring Retry-After)."""

    def __init__(self, settings: AnthropicSettings, name: str = "anthropic") -> None:
        self.name = name
        self.settings = settings
        self._secret = settings.api_key.get_secret_value()
        self._sdk: anthropic.AsyncAnthropic | None = None

    def __repr__(self) -> str:
        return f"AnthropicProvider(name={self.name!r}, base_url={self.settings.base_url!r})"

    def _client(self) -> anthropic.AsyncAnthropic:
        if self._sdk is None:
            self._sdk = anthropic.AsyncAnthropic(
                api_key=self._secret, base_url=self.settings.base_url, max_retries=0
            )
        return self._sdk

    async def send(self, request: LLMRequest, timeout_s: float) -> ProviderReply:
        with sdk_errors(anthropic, timeout_s, self._secret, "message"):
            message = await self._client().messages.create(
                **messages_params(request), timeout=timeout_s
            )
        return parse_message(message)

    async def aclose(self) -> None:
        if self._sdk is not None:
            await self._sdk.close()
            self._sdk = None
