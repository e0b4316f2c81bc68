"""What the generation stages share: the completer they call and the lineage every row carries."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import pandas as pd

from miko_assets.clock import utc_now
from miko_assets.distill.config import StageConfig, code_version
from miko_assets.distill.prompts import PromptTemplate
from miko_assets.llm.models import LLMRequest, LLMResponse, canonical_json, sha256_text
from miko_assets.llm.progress import BatchProgress
from miko_assets.missing import present

if TYPE_CHECKING:  # stages hand requests to a runner; loading one (and its SDKs) is the caller's
    from miko_assets.llm.runner import LLMRunner, RunSummary

Validator = Callable[[str], Any]


class Completer(Protocol):
    """Runs requests through the LLM layer; one response per request, in order, never raising."""

    def __call__(self, requests: Sequence[LLMRequest], validate: Validator | None = None) -> list[LLMResponse]: ...


class RunLog(Protocol):
    """Where a stage tells its progress: a Dagster run's `context.log`, or any logger."""

    def info(self, msg: str) -> None: ...

    def warning(self, msg: str) -> None: ...


def runner_completer(
    runner: LLMRunner, run_id: str | None, stage: str, summaries: list[RunSummary], log: RunLog | None = None
) -> Completer:
    """A completer that runs each batch through `runner` under `stage`, keeping each batch's summary
    and, with a `log`, telling each batch's progress, retries and repairs there."""

    def complete(requests: Sequence[LLMRequest], validate: Validator | None = None) -> list[LLMResponse]:
        progress = BatchProgress(stage, log.info, log.warning) if log is not None else None
        result = runner.run(requests, validate, dagster_run_id=run_id, stage=stage, progress=progress)
        summaries.append(result.summary)
        return result.responses

    return complete


@dataclass(frozen=True)
class StageRun:
    """What every row written by one materialization of a stage shares."""

    config: StageConfig
    prompt: PromptTemplate
    code_version: str
    run_id: str | None
    created_at: datetime

    @classmethod
    def start(cls, config: StageConfig, run_id: str | None, version: str | None = None) -> "StageRun":
        prompt = config.prompt()
        return cls(
            config=config,
            prompt=prompt,
            code_version=version or code_version(config, prompt),
            run_id=run_id,
            created_at=utc_now(),
        )

    def lineage(
        self,
        *,
        input_hash: str,
        response: LLMResponse | None,
        status: str,
        error: str | None = None,
        generator: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """Lineage columns; `generator` = (provider, model) for rows not made by the stage's LLM."""
        provider, model = generator or (self.config.provider, self.config.model)
        from_prompt = generator is None
        return {
            "prompt_name": self.prompt.name if from_prompt else None,
            "prompt_version": self.prompt.version if from_prompt else None,
            "prompt_sha": self.prompt.sha if from_prompt else None,
            "model": model,
            "provider": provider,
            "params_hash": self.config.params.params_hash() if from_prompt else None,
            "input_hash": input_hash,
            "llm_call_id": response.call_id if response else None,
            "code_version": self.code_version,
            "dagster_run_id": self.run_id,
            "created_at": self.created_at,
            "status": status,
            "error": error,
        }


def response_failure(response: LLMResponse) -> str:
    return response.error or response.error_kind or "the call failed without a reason"


def content_hash(*parts: Any) -> str:
    return sha256_text(canonical_json(list(parts)))[:16]


# Columns that differ between two runs writing the same content.
RUN_COLUMNS = frozenset({"dagster_run_id", "created_at"})


def data_version(rows: pd.DataFrame) -> str:
    """A version of a partition's content: the hash of its rows (in any order), leaving out
    the run id and the time written, so a re-run that writes the same content gets the same one."""
    columns = sorted(c for c in rows.columns if c not in RUN_COLUMNS)
    records = sorted(
        json.dumps([present(v) for v in record], ensure_ascii=False, default=str)
        for record in rows[columns].itertuples(index=False, name=None)
    )
    return sha256_text(canonical_json([columns, records]))[:24]


def json_object(value: Any) -> dict[str, Any]:
    """A JSON column value (string, dict or missing) as a dict."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str) and value:
        loaded = json.loads(value)
        return loaded if isinstance(loaded, dict) else {}
    return {}
