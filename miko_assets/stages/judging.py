"""LLM judges over sampled annotation tasks: plausibility for every task, typicality for the plausible."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from miko_assets.annotate.judges import JUDGE_SCHEMAS, JudgeResult, parse_judge_answer
from miko_assets.annotate.models import intention_text_sha
from miko_assets.annotate.stages import STAGES, Stage
from miko_assets.distill.caption import NO_CAPTION
from miko_assets.distill.config import StageConfig, build_request, code_version, stage_config
from miko_assets.missing import present
from miko_assets.stages.common import Completer, StageRun, content_hash, response_failure
from miko_assets.warehouse.schema import LLM_ANNOTATIONS

# annotation stage -> the distill stage (prompts/stages.yaml) configuring its judge
JUDGE_STAGES: dict[Stage, str] = {"plausibility": "judge_plausibility", "typicality": "judge_typicality"}


@dataclass(frozen=True)
class JudgeSpec:
    """Both judges' configurations and the code version of the `llm_annotations` asset."""

    configs: dict[Stage, StageConfig]

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> JudgeSpec:
        """From `prompts/stages.yaml` and the `MIKO_JUDGE_PLAUSIBILITY_*` / `MIKO_JUDGE_TYPICALITY_*` overrides."""
        return cls({stage: stage_config(JUDGE_STAGES[stage], env) for stage in STAGES})

    @property
    def code_version(self) -> str:
        return " + ".join(code_version(c, c.prompt()) for c in self.configs.values())


def judge_validator(stage: Stage) -> Callable[[str], JudgeResult]:
    """For the LLM layer: an answer with no readable verdict earns one repair call."""

    def validate(answer: str) -> JudgeResult:
        result = parse_judge_answer(stage, answer)
        if result.status != "ok":
            raise ValueError(result.failure)
        return result

    return validate


def judge_rows(tasks: pd.DataFrame, stage: Stage, run: StageRun, complete: Completer) -> pd.DataFrame:
    """One row per task: the judge's label and reason, or `failed` with the reason, and the sha of the text judged."""
    records = tasks.to_dict("records")
    fields = [
        {
            "text": present(task["post_text"]) or "",
            "caption": present(task["caption"]) or NO_CAPTION,
            "relation": task["relation"],
            "intention": task["intention"],
        }
        for task in records
    ]
    requests = [
        build_request(run.config, run.prompt, f, output_schema=JUDGE_SCHEMAS[stage], schema_name=JUDGE_STAGES[stage])
        for f in fields
    ]
    responses = complete(requests, judge_validator(stage)) if requests else []
    rows: list[dict[str, Any]] = []
    for task, f, response in zip(records, fields, responses, strict=True):
        result = parse_judge_answer(stage, response.text) if response.status == "ok" else None
        label = result.label if result is not None and result.status == "ok" else None
        error = response_failure(response) if result is None else result.failure
        rows.append({
            "batch": task["batch"],
            "intention_id": task["intention_id"],
            "intention_text_sha": intention_text_sha(task["intention"]),
            "post_id": task["post_id"],
            "relation": task["relation"],
            "stage": stage,
            "label": label,
            "reason": result.reason if result else None,
            **run.lineage(
                input_hash=content_hash(task["intention_id"], f), response=response,
                status="ok" if label else "failed", error=error,
            ),
        })
    return pd.DataFrame(rows, columns=LLM_ANNOTATIONS.column_names)


def judge_tasks(tasks: pd.DataFrame, runs: Mapping[Stage, StageRun], completers: Mapping[Stage, Completer]) -> pd.DataFrame:
    """Plausibility for every task, then typicality for the tasks the judge found plausible."""
    plausibility = judge_rows(tasks, "plausibility", runs["plausibility"], completers["plausibility"])
    plausible = plausibility.loc[(plausibility["status"] == "ok") & (plausibility["label"] == "yes"), "intention_id"]
    typicality = judge_rows(
        tasks[tasks["intention_id"].isin(plausible)], "typicality", runs["typicality"], completers["typicality"]
    )
    # An empty frame has no dtypes to contribute (pandas warns about concatenating one).
    return pd.concat([plausibility, typicality], ignore_index=True) if len(typicality) else plausibility
