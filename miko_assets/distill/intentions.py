"""Intentions stage: one call per post parsed into ten intentions, or one call per relation
(a `completion` prompt), each answer continuing its relation's prefix."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from miko_assets.distill.caption import NO_CAPTION
from miko_assets.distill.config import StageConfig, build_continuation_request, build_request
from miko_assets.distill.key_info import KeyInfo
from miko_assets.distill.parsing import as_text, extract_json, json_string_or_text
from miko_assets.distill.prompts import PromptTemplate
from miko_assets.distill.relations import RELATIONS, Relation
from miko_assets.llm.continuation import continuation_text, prefix_pattern
from miko_assets.llm.models import LLMRequest

IntentionStatus = Literal["ok", "missing", "empty"]

# The length of one per-relation continuation, in words (the grammar on the embedded model).
CLAUSE_MIN_WORDS, CLAUSE_MAX_WORDS = 3, 16

INTENTIONS_SCHEMA: dict[str, Any] = {
    "type": "object",
    # maxLength keeps small grammar-constrained models from running on inside one string.
    "properties": {
        r.name: {"type": "string", "description": r.prefix, "maxLength": 200} for r in RELATIONS
    },
    "required": [r.name for r in RELATIONS],
    "additionalProperties": False,
}

_RELATION_ALTERNATION = "|".join(r.name for r in RELATIONS)
# One answer item's header: "Intention1:", "Intention 1 (xWant):", "**Intention 1:**", "1.",
# "3)", "### Intention 3", "- xWant:", "\"xWant\":" (a truncated JSON answer), each optionally
# followed by a relation label. Group `rest` is the text after the header.
_HEADER = re.compile(
    rf"""
    ^[ \t]*(?:[-*•>]+[ \t]*)?(?:\#{{1,6}}[ \t]*)?(?:\*\*|__)?[ \t]*
    (?:
        intention[ \t]*\#?[ \t]*(?P<intention>\d{{1,2}})
      | (?P<bare>\d{{1,2}})(?=[ \t]*(?:\*\*|__)?[ \t]*(?:[):]|\.(?:[ \t]|$)))
      | "?(?P<relation>{_RELATION_ALTERNATION})"?(?=[ \t]*(?:\*\*|__)?[ \t]*[:：])
    )
    (?:[ \t]*[(\[][ \t]*(?:{_RELATION_ALTERNATION})[ \t]*[)\]])?
    [ \t]*(?:\*\*|__)?[ \t]*
    (?:[:：.)\-–][ \t]*)?
    (?:\*\*|__)?
    (?:[ \t]*(?:{_RELATION_ALTERNATION})[ \t]*[:：])?
    [ \t]*(?P<rest>.*)$
    """,
    re.IGNORECASE | re.VERBOSE,
)
# Items run together on one line: break before each "IntentionN:" that follows other text.
_INLINE_HEADER = re.compile(r"[ \t]+(?=intention[ \t]*\d{1,2}[ \t]*[:：])", re.IGNORECASE)
_JSON_KEY = re.compile(r"^(?:intention[ \t_]*)?(\d{1,2})$", re.IGNORECASE)
_LEADING_ELLIPSIS = re.compile(r"^(?:\.{3}|…)[ \t]*")
_WORD = re.compile(r"\w")


class ParsedIntention(BaseModel):
    """One relation's intention as parsed from an answer.

    `completion` is the text after the prefix when the answer kept the prefix
    (`kept_prefix`), else the whole answer for that relation. `status` is `ok`, `missing`
    (the answer had no item for the relation) or `empty` (an item with no content).
    """

    model_config = ConfigDict(frozen=True)

    relation: str
    prefix: str
    completion: str
    kept_prefix: bool
    status: IntentionStatus

    @property
    def full_text(self) -> str:
        """The intention as one sentence: prefix + completion.

        An answer that dropped the prefix but wrote its own sentence with the same opening
        ("The user post this tweet because ...") is already a sentence and is returned as is.
        """
        if not self.completion:
            return ""
        if not self.kept_prefix and _restates_prefix(self.prefix, self.completion):
            return self.completion
        return f"{self.prefix} {self.completion}"


def build_intentions_request(
    config: StageConfig,
    prompt: PromptTemplate,
    text: str,
    caption: str | None,
    key_info: KeyInfo | None,
) -> LLMRequest:
    """The one-call intentions request for one post; a missing caption or key info is shown
    as such."""
    return build_request(
        config,
        prompt,
        _post_fields(text, caption, key_info),
        output_schema=INTENTIONS_SCHEMA,
        schema_name="intentions",
    )


def build_relation_requests(
    config: StageConfig,
    prompt: PromptTemplate,
    text: str,
    caption: str | None,
    key_info: KeyInfo | None,
) -> tuple[LLMRequest, ...]:
    """The per-relation requests of a `completion` prompt for one post, in relation order:
    each continues its relation's prefix with one clause of 3 to 16 words."""
    fields = _post_fields(text, caption, key_info)
    return tuple(
        build_continuation_request(
            config, prompt, fields, r.prefix, min_words=CLAUSE_MIN_WORDS, max_words=CLAUSE_MAX_WORDS
        )
        for r in RELATIONS
    )


def intentions_requests(
    config: StageConfig,
    prompt: PromptTemplate,
    text: str,
    caption: str | None,
    key_info: KeyInfo | None,
) -> tuple[LLMRequest, ...]:
    """Every request for one post: ten per-relation ones, or the one call."""
    if prompt.per_prefix:
        return build_relation_requests(config, prompt, text, caption, key_info)
    return (build_intentions_request(config, prompt, text, caption, key_info),)


def relation_intention(relation: Relation, answer: str | None) -> ParsedIntention:
    """The intention of one per-relation answer (the continuation of the relation's prefix)."""
    completion = continuation_text(relation.prefix, answer)
    return ParsedIntention(
        relation=relation.name,
        prefix=relation.prefix,
        completion=completion,
        kept_prefix=True,
        status="ok" if _WORD.search(completion) else "empty",
    )


def _post_fields(text: str, caption: str | None, key_info: KeyInfo | None) -> dict[str, str]:
    return {"text": text, "caption": caption or NO_CAPTION, **(key_info or KeyInfo()).prompt_fields()}


def parse_intentions(answer: str | None) -> tuple[ParsedIntention, ...]:
    """Parse an answer into exactly ten intentions, in relation order; never raises.

    Accepts numbered items in many styles (`Intention1:`, `Intention 1:`, `1.`,
    `**Intention 1:**`, relation names), items spanning several lines, chatter around them,
    and a JSON object keyed by relation name or intention number (or a list of ten strings).
    An item may repeat its prefix (matched case- and spacing-insensitively) or omit it.
    Relations the answer lacks come back with status `missing`.
    """
    text = answer or ""
    data = extract_json(text)
    items = _from_json(data) if data is not None else _from_lines(text)
    return tuple(_parse_item(r, items.get(r.number)) for r in RELATIONS)


def split_prefix(relation: Relation, text: str) -> tuple[str, bool]:
    """`(completion, kept_prefix)` of one relation's answer text.

    A prefix the model wrote twice is removed twice, and a leading "..." (the model echoing
    the prompt's placeholder) is dropped from the completion.
    """
    text = text.strip()
    match = prefix_pattern(relation.prefix).match(text)
    if not match:
        return text, False
    completion = text[match.end() :].strip()
    while repeated := prefix_pattern(relation.prefix).match(completion):
        completion = completion[repeated.end() :].strip()
    return _LEADING_ELLIPSIS.sub("", completion), True


def _parse_item(relation: Relation, raw: str | None) -> ParsedIntention:
    if raw is None:
        return ParsedIntention(
            relation=relation.name,
            prefix=relation.prefix,
            completion="",
            kept_prefix=False,
            status="missing",
        )
    completion, kept = split_prefix(relation, raw)
    if not _WORD.search(completion):
        completion = ""
    return ParsedIntention(
        relation=relation.name,
        prefix=relation.prefix,
        completion=completion,
        kept_prefix=kept,
        status="ok" if completion else "empty",
    )


def _from_lines(text: str) -> dict[int, str]:
    """Numbered items by relation number; without any header, lines matched by prefix."""
    items: dict[int, list[str]] = {}
    current: int | None = None
    saw_header = False
    for line in _INLINE_HEADER.sub("\n", text).splitlines():
        header = _HEADER.match(line)
        number = _header_number(header) if header else None
        if header and number is not None:
            saw_header = True
            # A repeated number (the model restarting its list) only fills a still-empty item.
            current = number if not items.get(number) else None
            if current is not None:
                rest = header.group("rest").strip()
                items[current] = [rest] if rest else []
        elif current is not None:
            if line.strip():
                items[current].append(line.strip())
            elif items[current]:
                current = None  # a blank line after some content ends the item
    if not saw_header:
        return _by_prefix(text)
    return {n: _clean(" ".join(parts)) for n, parts in items.items()}


def _by_prefix(text: str) -> dict[int, str]:
    """Unnumbered answers: each line goes to the free relation whose prefix it starts with."""
    longest_first = sorted(RELATIONS, key=lambda r: len(r.prefix), reverse=True)
    items: dict[int, str] = {}
    for line in text.splitlines():
        line = _clean(_strip_bullet(line))
        for relation in longest_first:
            if relation.number not in items and prefix_pattern(relation.prefix).match(line):
                items[relation.number] = line
                break
    return items


def _from_json(data: Any) -> dict[int, str]:
    if isinstance(data, list):
        return {i: as_text(v) for i, v in enumerate(data[: len(RELATIONS)], start=1)}
    if not isinstance(data, dict):
        return {}
    items: dict[int, str] = {}
    for key, value in data.items():
        number = _json_key_number(str(key))
        if number is not None and number not in items:
            items[number] = as_text(value)
    if not items and len(data) == 1:
        # a wrapper such as {"intentions": {...}}
        return _from_json(next(iter(data.values())))
    return items


def _header_number(header: re.Match[str]) -> int | None:
    if header.group("relation"):
        return _relation_number(header.group("relation"))
    number = int(header.group("intention") or header.group("bare"))
    return number if 1 <= number <= len(RELATIONS) else None


def _json_key_number(key: str) -> int | None:
    key = key.strip()
    numbered = _JSON_KEY.match(key)
    if numbered:
        number = int(numbered.group(1))
        return number if 1 <= number <= len(RELATIONS) else None
    return _relation_number(key)


def _relation_number(name: str) -> int | None:
    return next((r.number for r in RELATIONS if r.name.lower() == name.lower()), None)


def _clean(text: str) -> str:
    """One item's text without wrapping Markdown bold or JSON string quoting."""
    text = text.strip()
    if text.startswith("**") and text.endswith("**") and len(text) >= 4:
        text = text[2:-2]
    elif text.endswith("**") and "**" not in text[:-2]:
        text = text[:-2]  # the closing half of a bold header, e.g. "**Intention 1: ...**"
    return json_string_or_text(text).strip()


def _strip_bullet(line: str) -> str:
    return re.sub(r"^[ \t]*(?:[-*•>]+|\d{1,2}[.)])[ \t]+", "", line)


def _restates_prefix(prefix: str, completion: str) -> bool:
    opening = prefix.split()[:2]
    return [w.lower() for w in completion.split()[:2]] == [w.lower() for w in opening]
