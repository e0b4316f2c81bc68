"""Parsing LLM judge answers for the two annotation stages; never raises on bad answers.

The judge prompts ask for one JSON object (`{"label": "yes"|"no"|"unsure", "reason": ...}`
for plausibility, `{"score": 1-5, "reason": ...}` for typicality); the schemas below are
what a provider with structured output is given. Small models still answer in prose, in a
code fence, or with other key names, so the parser also reads a labelled field
("Answer: yes", "Score: 4", "4/5") or a verdict that opens the answer. Anything else is a
failure with its reason, which is recorded rather than guessed at.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from miko_assets.annotate.models import Stage, normalize_label
from miko_assets.llm.validation import json_object

JudgeStatus = Literal["ok", "failed"]


class PlausibilityAnswer(BaseModel):
    """Structured answer of the stage-1 judge."""

    model_config = ConfigDict(extra="forbid")

    label: Literal["yes", "no", "unsure"]
    reason: str = Field(description="one short sentence")


class TypicalityAnswer(BaseModel):
    """Structured answer of the stage-2 judge."""

    model_config = ConfigDict(extra="forbid")

    score: Literal[1, 2, 3, 4, 5]
    reason: str = Field(description="one short sentence")


JUDGE_SCHEMAS: dict[Stage, dict[str, Any]] = {
    "plausibility": PlausibilityAnswer.model_json_schema(),
    "typicality": TypicalityAnswer.model_json_schema(),
}


class JudgeResult(BaseModel):
    """A parsed judgement: `label` is canonical ("yes"/"no"/"unsure" or "1".."5") when ok."""

    model_config = ConfigDict(frozen=True)

    stage: Stage
    status: JudgeStatus
    label: str | None = None
    reason: str | None = None
    failure: str | None = None


_LABEL_KEYS: dict[Stage, tuple[str, ...]] = {
    "plausibility": (
        "label",
        "plausible",
        "plausibility",
        "answer",
        "verdict",
        "judgement",
    ),
    "typicality": ("score", "typicality", "rating", "label", "answer"),
}
_REASON_KEYS = ("reason", "reasoning", "explanation", "rationale", "justification")
_VERDICT = r"(yes|no|unsure|not sure|uncertain)"


def parse_judge_answer(stage: Stage, text: str | None) -> JudgeResult:
    """Read one judge answer for `stage`: JSON first, then labelled or leading free text."""
    if text is None or not text.strip():
        return JudgeResult(stage=stage, status="failed", failure="empty answer")
    obj = json_object(text)
    if obj is not None:
        return _from_json(stage, obj)
    return _from_text(stage, text.strip())


def _from_json(stage: Stage, obj: dict[str, Any]) -> JudgeResult:
    lowered = {str(k).lower(): v for k, v in obj.items()}
    key = next((k for k in _LABEL_KEYS[stage] if k in lowered), None)
    if key is None:
        return JudgeResult(
            stage=stage,
            status="failed",
            failure=f"JSON has no {stage} field: {sorted(lowered)}",
        )
    reason = next(
        (str(lowered[k]).strip() for k in _REASON_KEYS if lowered.get(k)), None
    )
    return _result(stage, lowered[key], reason)


def _from_text(stage: Stage, text: str) -> JudgeResult:
    if stage == "plausibility":
        patterns = [
            rf"\b(?:label|answer|plausible|plausibility|verdict|judgement)\s*[:=]\s*\**\s*{_VERDICT}\b",
            rf"^[\s*#>\-\"']*{_VERDICT}\b",
        ]
    else:
        patterns = [
            r"\b(?:score|typicality|rating|answer)\s*[:=]\s*\**\s*(\d+(?:\.\d+)?)",
            r"\b(\d)\s*(?:/|out of)\s*5\b",
            r"^[\s*#>\-\"']*(\d+(?:\.\d+)?)\b",
        ]
    for pattern in patterns:
        match = re.search(pattern, text, re.IGNORECASE | re.MULTILINE)
        if match:
            return _result(stage, match.group(1), _text_reason(text, match.end()))
    return JudgeResult(
        stage=stage,
        status="failed",
        failure=f"no {stage} verdict found in: {text[:80]!r}",
    )


def _text_reason(text: str, verdict_end: int) -> str | None:
    labelled = re.search(
        r"\b(?:reason|because|explanation)\s*[:=]?\s*(.+)",
        text,
        re.IGNORECASE | re.DOTALL,
    )
    reason = labelled.group(1) if labelled else text[verdict_end:]
    reason = reason.strip().lstrip(".,;:-*) ").strip()
    return reason or None


def _result(stage: Stage, raw: Any, reason: str | None) -> JudgeResult:
    if stage == "typicality" and isinstance(raw, str):
        raw = raw.strip()
        raw = float(raw) if re.fullmatch(r"\d+(?:\.\d+)?", raw) else raw
    label = normalize_label(stage, raw)
    if label is None:
        scale = "yes / no / unsure" if stage == "plausibility" else "an integer 1-5"
        return JudgeResult(
            stage=stage,
            status="failed",
            reason=reason,
            failure=f"{raw!r} is not {scale}",
        )
    return JudgeResult(stage=stage, status="ok", label=label, reason=reason)
