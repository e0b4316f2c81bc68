"""Which prompt version, provider, model, parameters and image settings each stage uses
(`prompts/stages.yaml`).

Every value can be overridden per stage from the environment, e.g. `MIKO_INTENTIONS_MODEL`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from miko_assets.config_files import PROMPTS_DIR_ENV, STAGES_FILE, prompts_dir
from miko_assets.distill.prompts import (
    PromptError,
    PromptTemplate,
    load_prompt,
    render,
)
from miko_assets.distill.stages import RENAMED_STAGES
from miko_assets.llm.endpoints import provider_endpoint
from miko_assets.llm.models import (
    DEFAULT_IMAGE_SIDE,
    Continuation,
    GenerationParams,
    ImageDetail,
    ImageInput,
    LLMRequest,
    canonical_json,
    sha256_text,
)

# A named configuration: `MIKO_CONFIG=paper` reads `profiles/paper.yaml` in the prompts folder
# (same format as `stages.yaml`) instead of `stages.yaml`.
CONFIG_ENV = "MIKO_CONFIG"
PROFILES_DIR = "profiles"
_PROFILE_NAME = re.compile(r"^[a-z0-9_-]+$")
# The providers whose API takes an image `detail`.
DETAIL_PROVIDERS = frozenset({"openai"})

_Group = Literal["stage", "params", "image"]
# environment suffix -> (setting, which group it belongs to)
_ENV_SETTINGS: dict[str, tuple[str, _Group]] = {
    "PROVIDER": ("provider", "stage"),
    "MODEL": ("model", "stage"),
    "PROMPT_VERSION": ("prompt_version", "stage"),
    "TEMPERATURE": ("temperature", "params"),
    "MAX_TOKENS": ("max_tokens", "params"),
    "TOP_P": ("top_p", "params"),
    "TOP_K": ("top_k", "params"),
    "SEED": ("seed", "params"),
    "IMAGE_MAX_SIDE": ("max_side", "image"),
    "IMAGE_DETAIL": ("detail", "image"),
}


class ImageSettings(BaseModel):
    """How a stage sends images: the longest side in pixels and, for OpenAI, the `detail`
    (none: the provider's default, `auto`; `MIKO_<STAGE>_IMAGE_DETAIL=none` clears a detail
    set in the file)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_side: int = Field(default=DEFAULT_IMAGE_SIDE, ge=32, le=8000)
    detail: ImageDetail | None = None

    @field_validator("detail", mode="before")
    @classmethod
    def _none_word(cls, value: object) -> object:
        return None if value == "none" else value

    def describe(self) -> str:
        """`1024 px` or `512 px, detail low`."""
        return f"{self.max_side} px" + (f", detail {self.detail}" if self.detail else "")


class _Defaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: str
    model: str


class _StageEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str
    prompt_version: str
    provider: str | None = None
    model: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    image: dict[str, Any] = Field(default_factory=dict)


class _StagesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    defaults: _Defaults
    stages: dict[str, _StageEntry]


class StageConfig(BaseModel):
    """The resolved configuration of one stage (file, then environment)."""

    model_config = ConfigDict(frozen=True)

    stage: str
    prompt_name: str
    prompt_version: str
    provider: str
    model: str
    params: GenerationParams
    prompts_dir: Path
    image: ImageSettings = ImageSettings()
    # Where an OpenAI-compatible provider sends calls (normalised), part of each cache key.
    endpoint: str | None = None

    def prompt(self) -> PromptTemplate:
        """The prompt template this configuration names."""
        return load_prompt(self.prompt_name, self.prompt_version, self.prompts_dir)


def stages_file(env: Mapping[str, str] = os.environ) -> Path:
    """The stage configuration in force: `profiles/$MIKO_CONFIG.yaml`, else `stages.yaml`."""
    directory = prompts_dir(env)
    name = env.get(CONFIG_ENV)
    if not name:
        return directory / STAGES_FILE
    path = directory / PROFILES_DIR / f"{name}.yaml"
    if not _PROFILE_NAME.match(name) or not path.is_file():
        known = sorted(p.stem for p in (directory / PROFILES_DIR).glob("*.yaml"))
        raise PromptError(f"{CONFIG_ENV}={name!r}: no such configuration; known: {', '.join(known) or 'none'}")
    return path


def stage_config(stage: str, env: Mapping[str, str] = os.environ) -> StageConfig:
    """Resolve a stage from the configuration in force (`stages_file`), then `MIKO_<STAGE>_*`
    overrides.

    An empty environment variable counts as unset.
    """
    directory = prompts_dir(env)
    path = stages_file(env)
    try:
        stages = _StagesFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise PromptError(f"cannot read stage configuration {path}: {exc}") from exc
    _refuse_old_name(stage, stages.stages, env, path)
    entry = stages.stages.get(stage)
    if entry is None:
        raise PromptError(f"unknown stage {stage!r}; {path} defines {', '.join(stages.stages)}")

    settings: dict[str, Any] = {
        "provider": entry.provider or stages.defaults.provider,
        "model": entry.model or stages.defaults.model,
        "prompt_version": entry.prompt_version,
    }
    groups: dict[_Group, dict[str, Any]] = {
        "stage": settings, "params": dict(entry.params), "image": dict(entry.image)
    }
    used = stage_env_overrides(stage, env)
    for suffix, (key, group) in _ENV_SETTINGS.items():
        value = used.get(f"MIKO_{stage.upper()}_{suffix}")
        if value:
            groups[group][key] = value
    source = f"from {path}, environment {', '.join(n for n in used if n != PROMPTS_DIR_ENV) or 'none'}"
    try:
        generation = GenerationParams.model_validate(groups["params"])
    except ValidationError as exc:
        raise PromptError(f"invalid generation parameters for stage {stage!r} ({source}): {exc}") from exc
    try:
        image = ImageSettings.model_validate(groups["image"])
    except ValidationError as exc:
        raise PromptError(f"invalid image settings for stage {stage!r} ({source}): {exc}") from exc
    if image.detail is not None and settings["provider"] not in DETAIL_PROVIDERS:
        raise PromptError(
            f"stage {stage!r} sets image detail {image.detail!r}, but provider "
            f"{settings['provider']!r} has no detail setting ({source}); set only max_side"
        )
    return StageConfig(
        stage=stage,
        prompt_name=entry.prompt,
        params=generation,
        prompts_dir=directory,
        image=image,
        endpoint=provider_endpoint(settings["provider"], env),
        **settings,
    )


def _refuse_old_name(stage: str, entries: Mapping[str, Any], env: Mapping[str, str], path: Path) -> None:
    old = RENAMED_STAGES.get(stage)
    if old is None:
        return
    old_prefix, new_prefix = f"MIKO_{old.upper()}_", f"MIKO_{stage.upper()}_"
    old_vars = [old_prefix + suffix for suffix in _ENV_SETTINGS if env.get(old_prefix + suffix)]
    if old_vars:
        new_vars = ", ".join(name.replace(old_prefix, new_prefix) for name in old_vars)
        raise PromptError(f"the stage {old!r} is now named {stage!r}: rename {', '.join(old_vars)} to {new_vars}")
    if old in entries and stage not in entries:
        raise PromptError(f"{path}: the stage {old!r} is now named {stage!r}: rename it there")


def stage_env_overrides(stage: str, env: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The `MIKO_<STAGE>_*` variables set in `env` (and the prompts folder), by name."""
    names = [f"MIKO_{stage.upper()}_{suffix}" for suffix in _ENV_SETTINGS] + [PROMPTS_DIR_ENV]
    return {name: env[name] for name in names if env.get(name)}


def code_version(config: StageConfig, prompt: PromptTemplate) -> str:
    """The stage's code version: prompt name, version and sha prefix, provider, model, params
    hash, and image settings hash unless they are the defaults.

    Any change to the template, the model, the parameters or the image settings gives a
    different string. The provider is included too: the same model name can mean different
    weights elsewhere. Default image settings add nothing, so versions made before image
    settings existed (which sent images the default way) still match.
    """
    _check_prompt(config, prompt)
    version = (
        f"{prompt.name}@{prompt.version}:{prompt.sha[:12]}"
        f"|{config.provider}/{config.model}|p{config.params.params_hash()}"
    )
    if config.image != ImageSettings():
        version += f"|i{sha256_text(canonical_json(config.image.model_dump()))[:8]}"
    return version


def build_request(
    config: StageConfig,
    prompt: PromptTemplate,
    fields: Mapping[str, str],
    *,
    images: tuple[ImageInput, ...] = (),
    output_schema: dict[str, Any] | None = None,
    schema_name: str | None = None,
) -> LLMRequest:
    """Render `prompt` with `fields` into a request for the stage's provider and model.

    Images go with the user message, at the stage's image detail. The schema is attached only
    to prompts whose output is `json`, so text-format versions (the paper's) are sent
    unconstrained.
    """
    _check_prompt(config, prompt)
    messages = render(prompt, **fields)
    if config.image.detail is not None:
        images = tuple(i.model_copy(update={"detail": config.image.detail}) for i in images)
    if images:
        messages = (*messages[:-1], messages[-1].model_copy(update={"images": images}))
    structured = prompt.output == "json" and output_schema is not None
    return LLMRequest(
        provider=config.provider,
        model=config.model,
        messages=messages,
        params=config.params,
        output_schema=output_schema if structured else None,
        schema_name=schema_name if structured else None,
        endpoint=config.endpoint,
    )


def build_continuation_request(
    config: StageConfig,
    prompt: PromptTemplate,
    fields: Mapping[str, str],
    prefix: str,
    *,
    min_words: int,
    max_words: int,
) -> LLMRequest:
    """The request of a `completion` prompt for one prefix: rendered with `fields` and
    `${prefix}`, the answer constrained to one clause of `min_words` to `max_words` continuing it."""
    if not prompt.per_prefix:
        raise PromptError(f"prompt {prompt.name} {prompt.version} is not a completion prompt")
    request = build_request(config, prompt, {**fields, "prefix": prefix})
    continuation = Continuation(prefix=prefix, min_words=min_words, max_words=max_words)
    return request.model_copy(update={"continuation": continuation})


def _check_prompt(config: StageConfig, prompt: PromptTemplate) -> None:
    if prompt.name != config.prompt_name:
        raise PromptError(
            f"stage {config.stage!r} uses prompt {config.prompt_name!r}, got {prompt.name!r}"
        )
