"""OpenAI Chat Completions, also spoken by vLLM, Ollama, LM Studio and `llama_cpp.server`.

Two transports share the request rendering and reply parsing: the official `openai` SDK, and a
lean aiohttp client (one pooled session) whose per-request CPU cost is several times lower,
for high-concurrency runs against OpenAI-compatible servers.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any, Literal

import aiohttp
import openai
from pydantic import BaseModel, ConfigDict, SecretStr

from miko_assets.llm.endpoints import OPENAI_BASE_URL
from miko_assets.llm.models import ImageInput, LLMRequest, Message
from miko_assets.llm.provider_interface import (
    FINISH_CONTENT_FILTER,
    FINISH_LENGTH,
    FINISH_REFUSAL,
    FINISH_STOP,
    ProviderError,
    ProviderReply,
    error_body_message,
    error_from_status,
    redact,
    sdk_errors,
)

log = logging.getLogger(__name__)

_FINISH = {"length": FINISH_LENGTH, "content_filter": FINISH_CONTENT_FILTER}
# OpenAI's reasoning models (o1, o3, o4-mini, gpt-5 but not gpt-5-chat) reject `max_tokens` and
# any sampling parameter but the default: they take `max_completion_tokens` only.
_REASONING_MODEL = re.compile(r"^(o\d+|gpt-5(?!-chat))(-|$)")


class OpenAISettings(BaseModel):
    """Where and how to reach a Chat Completions endpoint (no `api_key` for local servers)."""

    model_config = ConfigDict(frozen=True)

    base_url: str = OPENAI_BASE_URL
    api_key: SecretStr | None = None
    transport: Literal["aiohttp", "sdk"] = "aiohttp"
    # `json_schema` response formats, or `json_object` (with the schema) for servers that only
    # know JSON mode; a server that rejects `json_schema` switches the provider to it.
    json_mode: Literal["json_schema", "json_object"] = "json_schema"


def chat_payload(request: LLMRequest, json_mode: str = "json_schema") -> dict[str, Any]:
    """The Chat Completions body for a request: images as data URLs, schema as `response_format`,
    a continuation as a stop at the end of the line."""
    payload: dict[str, Any] = {
        "model": request.model,
        "messages": [_chat_message(m) for m in request.messages],
    }
    if is_reasoning_model(request.model):
        payload["max_completion_tokens"] = request.params.max_tokens
    else:
        payload["temperature"] = request.params.temperature
        payload["max_tokens"] = request.params.max_tokens
        if request.params.top_p is not None:
            payload["top_p"] = request.params.top_p
        if request.params.top_k is not None:
            # Not an OpenAI parameter: vLLM and llama.cpp's server honour it, api.openai.com
            # rejects it (so leave top_k unset for OpenAI's own models).
            payload["top_k"] = request.params.top_k
    if request.continuation is not None:
        # The prompt shows the prefix; the answer is its continuation, one line.
        payload["stop"] = ["\n"]
    if request.params.seed is not None:
        payload["seed"] = request.params.seed
    if request.output_schema is not None:
        if json_mode == "json_object":
            payload["response_format"] = {"type": "json_object", "schema": request.output_schema}
        else:
            payload["response_format"] = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name or "answer",
                    "schema": request.output_schema,
                },
            }
    return payload


def is_reasoning_model(model: str) -> bool:
    """Whether `model` is an OpenAI reasoning model (sent `max_completion_tokens`, no sampling)."""
    return _REASONING_MODEL.match(model) is not None


def _chat_message(message: Message) -> dict[str, Any]:
    if not message.images:
        return {"role": message.role, "content": message.content}
    parts: list[dict[str, Any]] = [{"type": "text", "text": message.content}]
    parts.extend({"type": "image_url", "image_url": _image_url(i)} for i in message.images)
    return {"role": message.role, "content": parts}


def _image_url(image: ImageInput) -> dict[str, str]:
    url = {"url": f"data:{image.media_type};base64,{image.data_b64}"}
    return url if image.detail is None else {**url, "detail": image.detail}


def parse_chat_completion(body: Any) -> ProviderReply:
    """A Chat Completions body as a reply; a body of another shape is `malformed_response`."""
    try:
        choice = body["choices"][0]
        message = choice["message"]
        usage = body.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}
        text = message.get("content")
        finish = _FINISH.get(choice.get("finish_reason"), FINISH_STOP)
        if message.get("refusal"):
            text, finish = message["refusal"], FINISH_REFUSAL
        return ProviderReply(
            text=text,
            finish_reason=finish,
            tokens_in=usage.get("prompt_tokens") or 0,
            tokens_out=usage.get("completion_tokens") or 0,
            tokens_cached=details.get("cached_tokens") or 0,
            provider_request_id=body.get("id"),
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise ProviderError(
            "malformed_response",
            f"unexpected Chat Completions body ({type(exc).__name__})",
            retryable=True,
        ) from None


class OpenAIProvider:
    """The `openai` provider: Chat Completions through the SDK or the lean aiohttp transport."""

    def __init__(self, settings: OpenAISettings, name: str = "openai") -> None:
        self.name = name
        self.settings = settings
        self._secret = settings.api_key.get_secret_value() if settings.api_key else None
        self._sdk: openai.AsyncOpenAI | None = None
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._json_mode = settings.json_mode
        self._url = settings.base_url.rstrip("/") + "/chat/completions"
        self._headers = {"Content-Type": "application/json"}
        if self._secret:
            self._headers["Authorization"] = f"Bearer {self._secret}"

    @property
    def enforces_timeout(self) -> bool:
        """The aiohttp transport bounds each request's total time; the SDK's httpx timeout
        bounds each read, not the whole answer."""
        return self.settings.transport == "aiohttp"

    @property
    def json_mode(self) -> str:
        """The structured-output mode in use (`json_object` once a server refused `json_schema`)."""
        return self._json_mode

    def __repr__(self) -> str:
        return (
            f"OpenAIProvider(name={self.name!r}, base_url={self.settings.base_url!r}, "
            f"transport={self.settings.transport!r})"
        )

    async def send(self, request: LLMRequest, timeout_s: float) -> ProviderReply:
        try:
            body = await self._post(chat_payload(request, self._json_mode), timeout_s)
        except ProviderError as exc:
            if not (request.output_schema is not None and self._lacks_json_schema(exc)):
                raise
            # Servers such as llama_cpp.server reject `json_schema` but take a schema in JSON
            # mode: switch this provider to it for good and resend.
            log.info(
                "%s does not accept json_schema response formats; using json_object",
                self.settings.base_url,
            )
            self._json_mode = "json_object"
            body = await self._post(chat_payload(request, self._json_mode), timeout_s)
        return parse_chat_completion(body)

    def _lacks_json_schema(self, error: ProviderError) -> bool:
        return (
            self._json_mode == "json_schema"
            and error.status_code in (400, 422, 500)
            and "json_schema" in error.message
        )

    async def _post(self, payload: dict[str, Any], timeout_s: float) -> Any:
        if self.settings.transport == "sdk":
            return await self._post_sdk(payload, timeout_s)
        return await self._post_aiohttp(payload, timeout_s)

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._sdk is not None:
            await self._sdk.close()
            self._sdk = None

    # -- aiohttp --------------------------------------------------------------------------

    def _client_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            # No pool limit here: the runner bounds the calls in flight.
            connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(connector=connector, headers=self._headers)
            self._session_loop = loop
        return self._session

    async def _post_aiohttp(self, payload: dict[str, Any], timeout_s: float) -> Any:
        session = self._client_session()
        try:
            async with session.post(
                self._url, data=json.dumps(payload), timeout=aiohttp.ClientTimeout(total=timeout_s)
            ) as response:
                raw = await response.read()
                if response.status >= 400:
                    raise error_from_status(
                        response.status, self._error_message(raw), response.headers
                    )
        except TimeoutError:
            raise ProviderError(
                "timeout", f"no answer within {timeout_s:g}s", retryable=True
            ) from None
        except aiohttp.ClientError as exc:
            raise ProviderError(
                "connection", self._redact(f"{type(exc).__name__}: {exc}"), retryable=True
            ) from None
        try:
            return json.loads(raw)
        except ValueError:
            raise ProviderError(
                "malformed_response", "response body is not valid JSON", retryable=True
            ) from None

    def _error_message(self, raw: bytes) -> str:
        text = raw[:300].decode("utf-8", "replace")
        try:
            body = json.loads(raw)
        except ValueError:
            return self._redact(text)
        return self._redact(error_body_message(body, text))

    # -- official SDK ---------------------------------------------------------------------

    def _client(self) -> openai.AsyncOpenAI:
        if self._sdk is None:
            self._sdk = openai.AsyncOpenAI(
                # Local servers need no key, but the SDK insists on one.
                api_key=self._secret or "unused",
                base_url=self.settings.base_url,
                max_retries=0,  # the runner retries, honouring Retry-After
            )
        return self._sdk

    async def _post_sdk(self, payload: dict[str, Any], timeout_s: float) -> Any:
        with sdk_errors(openai, timeout_s, self._secret, "completion"):
            completion = await self._client().chat.completions.create(**payload, timeout=timeout_s)
        return completion.model_dump()

    def _redact(self, text: str) -> str:
        return redact(text, [self._secret])
