"""Checking an answer and asking once more for an invalid one: validators, JSON extraction,
and the repair request."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, cast

from pydantic import BaseModel, ValidationError

from miko_assets.llm.models import LLMRequest, Message

Validator = type[BaseModel] | Callable[[str], Any]
"""A pydantic model the answer's JSON must match, or a callable that parses text or raises."""

INVALID_OUTPUT = "invalid_output"


def validate_answer(
    validator: Validator | None, expects_json: bool, text: str
) -> tuple[Any, str | None]:
    """Parse an answer: with a pydantic model its JSON, with a callable its result, with only a
    schema plain JSON; without any of them the text is the answer and `parsed` is `None`."""
    try:
        if isinstance(validator, type) and issubclass(validator, BaseModel):
            return validator.model_validate_json(json_candidate(text)), None
        if validator is not None:
            return cast("Callable[[str], Any]", validator)(text), None
        if expects_json:
            return json.loads(json_candidate(text)), None
        return None, None
    except ValidationError as exc:
        return None, "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'answer'}: {e['msg']}"
            for e in exc.errors()[:5]
        )
    except Exception as exc:  # noqa: BLE001  (any validator error means an unusable answer)
        return None, f"{type(exc).__name__}: {exc}"


def unfenced(text: str) -> str:
    """The body of the Markdown code fence an answer consists of (```json ... ```), else the
    answer; stripped either way."""
    stripped = text.strip()
    if stripped.startswith("```"):
        stripped = stripped.split("\n", 1)[-1].rsplit("```", 1)[0].strip()
    return stripped


def json_candidate(text: str) -> str:
    """The JSON inside an answer: a fenced block's body, or the outermost `{...}` amid prose
    (before or after it); an array only when the answer is one."""
    stripped = unfenced(text)
    start, end = stripped.find("{"), stripped.rfind("}")
    if stripped[:1] != "[" and 0 <= start < end:
        stripped = stripped[start : end + 1]
    return stripped


def json_object(text: str) -> dict[str, Any] | None:
    """The JSON object inside an answer (see `json_candidate`), or None if there is none."""
    try:
        found = json.loads(json_candidate(text))
    except json.JSONDecodeError:
        return None
    return found if isinstance(found, dict) else None


def parsed_json(parsed: Any) -> str | None:
    """A parsed answer as the JSON stored in `llm_calls.parsed_json` (`None` for none)."""
    if parsed is None:
        return None
    if isinstance(parsed, BaseModel):
        return parsed.model_dump_json()
    return json.dumps(parsed, ensure_ascii=False, default=str)


def repair_request(request: LLMRequest, answer: str, problem: str) -> LLMRequest:
    """The follow-up call for an invalid answer: the conversation, the answer, what is wrong."""
    if request.continuation is not None:
        wanted = "Continue the sentence in a few words of your own; do not repeat its beginning."
    elif request.output_schema is not None:
        wanted = "Reply with only a JSON object that matches the required schema."
    else:
        wanted = "Follow the required answer format exactly."
    instruction = f"Your previous answer could not be used: {problem[:1000]}\n{wanted}"
    return request.model_copy(
        update={
            "messages": (
                *request.messages,
                Message(role="assistant", content=answer),
                Message(role="user", content=instruction),
            )
        }
    )
