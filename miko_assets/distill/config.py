"""Which prompt version, provider, model and parameters each stage uses (`prompts/stages.yaml`).

Every value can be overridden per stage from the environment, e.g. `MIKO_INTENTIONS_MODEL`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from miko_assets.distill.prompts import (
    PromptError,
    PromptTemplate,
    load_prompt,
    prompts_dir,
    render,
)
from miko_assets.llm.models import GenerationParams, ImageInput, LLMRequest

STAGES_FILE = "stages.yaml"

# environment suffix -> (stage setting, generation parameter?)
_ENV_SETTINGS: dict[str, tuple[str, bool]] = {
    "PROVIDER": ("provider", False),
    "MODEL": ("model", False),
    "PROMPT_VERSION": ("prompt_version", False),
    "TEMPERATURE": ("temperature", True),
    "MAX_TOKENS": ("max_tokens", True),
    "TOP_P": ("top_p", True),
    "SEED": ("seed", True),
}


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

    def prompt(self) -> PromptTemplate:
        """The prompt template this configuration names."""
        return load_prompt(self.prompt_name, self.prompt_version, self.prompts_dir)


def stage_config(stage: str, env: Mapping[str, str] = os.environ) -> StageConfig:
    """Resolve a stage from the prompts folder's `stages.yaml`, then `MIKO_<STAGE>_*` overrides.

    An empty environment variable counts as unset.
    """
    directory = prompts_dir(env)
    path = directory / STAGES_FILE
    try:
        stages = _StagesFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise PromptError(f"cannot read stage configuration {path}: {exc}") from exc
    entry = stages.stages.get(stage)
    if entry is None:
        raise PromptError(f"unknown stage {stage!r}; {path} defines {', '.join(stages.stages)}")

    settings: dict[str, Any] = {
        "provider": entry.provider or stages.defaults.provider,
        "model": entry.model or stages.defaults.model,
        "prompt_version": entry.prompt_version,
    }
    params = dict(entry.params)
    used: list[str] = []
    for suffix, (key, is_param) in _ENV_SETTINGS.items():
        name = f"MIKO_{stage.upper()}_{suffix}"
        value = env.get(name)
        if value:
            (params if is_param else settings)[key] = value
            used.append(name)
    try:
        generation = GenerationParams.model_validate(params)
    except ValidationError as exc:
        raise PromptError(
            f"invalid generation parameters for stage {stage!r} "
            f"(from {path}, environment {', '.join(used) or 'none'}): {exc}"
        ) from exc
    return StageConfig(
        stage=stage, prompt_name=entry.prompt, params=generation, prompts_dir=directory, **settings
    )


def code_version(config: StageConfig, prompt: PromptTemplate) -> str:
    """The stage's code version: prompt name, version and sha prefix, provider, model, params hash.

    Any change to the template, the model or the parameters gives a different string.
    The provider is included too: the same model name can mean different weights elsewhere.
    """
    _check_prompt(config, prompt)
    return (
        f"{prompt.name}@{prompt.version}:{prompt.sha[:12]}"
        f"|{config.provider}/{config.model}|p{config.params.params_hash()}"
    )


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

    Images go with the user message. The schema is attached only to prompts whose output
    is `json`, so text-format versions (the paper's) are sent unconstrained.
    """
    _check_prompt(config, prompt)
    messages = render(prompt, **fields)
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
    )


def _check_prompt(config: StageConfig, prompt: PromptTemplate) -> None:
    if prompt.name != config.prompt_name:
        raise PromptError(
            f"stage {config.stage!r} uses prompt {config.prompt_name!r}, got {prompt.name!r}"
        )
