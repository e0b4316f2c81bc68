"""Key-information stage: the five MIKO fields (Concept, Action, Object, Emotion, Keywords)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from miko_assets.distill.caption import NO_CAPTION
from miko_assets.distill.config import StageConfig, build_continuation_request, build_request
from miko_assets.distill.parsing import ParseError, as_text, extract_json, json_string_or_text
from miko_assets.distill.prompts import PromptError, PromptTemplate
from miko_assets.llm.continuation import continuation_text
from miko_assets.llm.models import LLMRequest

KEY_INFO_FIELDS: tuple[str, ...] = ("concept", "action", "object", "emotion", "keywords")

# What the intentions prompt shows for a field the key-info answer did not have.
MISSING_FIELD = "none"
# The longest per-field answer, in words (the grammar on the embedded model).
FIELD_MAX_WORDS = 10

KEY_INFO_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {f: {"type": "string", "maxLength": 120} for f in KEY_INFO_FIELDS},
    "required": list(KEY_INFO_FIELDS),
    "additionalProperties": False,
}

# A field label at the start of a line or after `;`, `|`, `,` or `{`, with optional bullet,
# numbering, Markdown bold, plural and JSON quotes: "- **Concept:** ...", "2) Keywords - ...",
# "Concept: a; Action: b", "\"concept\": \"a\"," (a truncated JSON answer).
_LABEL = re.compile(
    r"(?:^|(?<=[;|{,]))[ \t]*(?:[-*•>]+[ \t]*|\d{1,2}[.)][ \t]*)?(?:\*\*|__)?[ \t]*"
    r"\"?(?P<field>concept|action|object|emotion|key[ \t]*word)s?\"?"
    r"[ \t]*(?:\*\*|__)?(?:[ \t]*[:：]|[ \t]+[-–](?=[ \t]))[ \t]*(?:\*\*|__)?",
    re.IGNORECASE | re.MULTILINE,
)
_BULLET = re.compile(r"^(?:[-*•]+|\d{1,2}[.)])[ \t]+")
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_EMPTY_VALUES = frozenset(
    {"", "none", "n/a", "na", "-", "null", "nothing", "unknown", "not mentioned", "not applicable"}
)


class KeyInfo(BaseModel):
    """The five key-information fields; any may be missing (None)."""

    model_config = ConfigDict(frozen=True)

    concept: str | None = None
    action: str | None = None
    object: str | None = None
    emotion: str | None = None
    keywords: str | None = None

    def prompt_fields(self) -> dict[str, str]:
        """The fields as template values, a missing one shown as `none`."""
        return {f: getattr(self, f) or MISSING_FIELD for f in KEY_INFO_FIELDS}


def build_key_info_request(
    config: StageConfig, prompt: PromptTemplate, text: str, caption: str | None
) -> LLMRequest:
    """The key-information request for one post (`caption` None when the post has none)."""
    return build_request(
        config,
        prompt,
        {"text": text, "caption": caption or NO_CAPTION},
        output_schema=KEY_INFO_SCHEMA,
        schema_name="key_info",
    )


def build_field_requests(
    config: StageConfig, prompt: PromptTemplate, text: str, caption: str | None
) -> tuple[LLMRequest, ...]:
    """The per-field requests of a `completion` prompt for one post, in `KEY_INFO_FIELDS`
    order: each continues the prompt's prefix for its field with a phrase of 1 to 10 words."""
    prefixes = prompt.prefixes or {}
    missing = [f for f in KEY_INFO_FIELDS if not prefixes.get(f)]
    if missing:
        raise PromptError(
            f"prompt {prompt.name} {prompt.version} needs a prefix for {', '.join(missing)}"
        )
    fields = {"text": text, "caption": caption or NO_CAPTION}
    return tuple(
        build_continuation_request(
            config, prompt, fields, prefixes[f], min_words=1, max_words=FIELD_MAX_WORDS
        )
        for f in KEY_INFO_FIELDS
    )


def key_info_requests(
    config: StageConfig, prompt: PromptTemplate, text: str, caption: str | None
) -> tuple[LLMRequest, ...]:
    """Every request for one post: five per-field ones, or the one call."""
    if prompt.per_prefix:
        return build_field_requests(config, prompt, text, caption)
    return (build_key_info_request(config, prompt, text, caption),)


def field_value(prefix: str, answer: str | None) -> str | None:
    """A field's value from its per-field answer (the continuation of the field's prefix)."""
    return _clean(continuation_text(prefix, answer))


def parse_key_info(answer: str | None) -> KeyInfo:
    """Parse `Field: value` lines or a JSON object into `KeyInfo`.

    Tolerates case, spacing, bullets, numbering, Markdown bold, plurals, fields on one line
    separated by `;`, `|` or `,`, values continued on following lines (bullet lists become
    comma-separated), chatter before the first field or after a blank line, and "none"/"N/A"
    values (None). Raises `ParseError('no_fields')` when no field is found.
    """
    text = answer or ""
    data = extract_json(text)
    values = _from_json(data) if isinstance(data, dict) else _from_lines(text)
    if not values:
        raise ParseError("no_fields", f"no key-information field in {text[:200]!r}")
    return KeyInfo(**{f: _clean(v) for f, v in values.items()})


def _from_json(data: dict[str, Any]) -> dict[str, str]:
    values: dict[str, str] = {}
    for key, value in data.items():
        field = _field_name(str(key))
        if field in KEY_INFO_FIELDS and field not in values:
            values[field] = as_text(value)
    return values


def _from_lines(text: str) -> dict[str, str]:
    labels = list(_LABEL.finditer(text))
    if not labels:
        return {}
    values: dict[str, str] = {}
    ends = [label.start() for label in labels[1:]] + [len(text)]
    for label, end in zip(labels, ends, strict=True):
        field = _field_name(label.group("field"))
        raw = text[label.end() : end]
        value = _join_lines(raw)
        if not values.get(field):
            values[field] = value
    return values


def _field_name(label: str) -> str:
    name = re.sub(r"[\s_]+", "", label.lower()).removesuffix("s")
    return "keywords" if name == "keyword" else name


def _join_lines(raw: str) -> str:
    """A value's lines as one line: up to the first paragraph break after some content."""
    paragraphs = [p for p in _PARAGRAPH_BREAK.split(raw) if p.strip()]
    lines = [ln.strip() for ln in (paragraphs[0] if paragraphs else "").splitlines() if ln.strip()]
    if len(lines) > 1 and all(_BULLET.match(ln) for ln in lines[1:]):
        return ", ".join(_BULLET.sub("", ln) for ln in lines if _BULLET.sub("", ln))
    return " ".join(lines)


def _clean(value: str) -> str | None:
    value = json_string_or_text(value.strip().strip(";|").strip().removesuffix("**").strip())
    value = value.strip().rstrip(",").strip()
    return None if value.lower().rstrip(".") in _EMPTY_VALUES else value
