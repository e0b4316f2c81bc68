"""Helpers shared by the stage parsers: the parse error and lenient JSON extraction."""

from __future__ import annotations

import json
from typing import Any

from miko_assets.llm.validation import unfenced


class ParseError(ValueError):
    """An answer that yields nothing usable; `reason` is the short status stored with the row."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def extract_json(answer: str) -> Any | None:
    """The JSON value an answer consists of (optionally in a Markdown code fence), else None.

    Only answers that start with `{` or `[` (after the fence) count: JSON quoted in the
    middle of prose is the text format's business.
    """
    body = unfenced(answer)
    if not body.startswith(("{", "[")):
        return None
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return None


def json_string_or_text(value: str) -> str:
    """The string a value holds when it is a JSON string literal, else the value as is.

    A literal followed by `,` and anything (a truncated JSON answer: `"abc", "ke`) counts too.
    """
    candidate = value.strip()
    if not candidate.startswith('"'):
        return value
    try:
        decoded, end = json.JSONDecoder().raw_decode(candidate)
    except json.JSONDecodeError:
        return value
    rest = candidate[end:].strip()
    if isinstance(decoded, str) and (not rest or rest.startswith(",")):
        return decoded
    return value


def as_text(value: Any) -> str:
    """A JSON value as one line of text: lists joined with commas, null as empty."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(as_text(v) for v in value if v is not None)
    return str(value).strip()
