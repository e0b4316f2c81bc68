"""Answers that continue a prefix (`LLMRequest.continuation`): the continuation an answer holds,
and why one is unusable.

The runner validates every continuation answer with `check_continuation`: an answer that is
empty, only repeats its prefix or restates it gets one repair call, then fails with that
reason; it is never an `ok` answer.
"""

from __future__ import annotations

import re
from functools import cache

from miko_assets.llm.models import Continuation

_WORD = re.compile(r"[a-z0-9']+")
_LEADING_ELLIPSIS = re.compile(r"^(?:\.{3}|…)\s*")


class ContinuationError(ValueError):
    """An unusable continuation; `reason` is `empty`, `only_prefix` or `restates_prefix`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def continuation_text(prefix: str, answer: str | None) -> str:
    """The continuation an answer holds: its first line, without a restated prefix (servers
    without a grammar may write the whole sentence), a leading "..." or the closing period."""
    lines = (answer or "").strip().splitlines()
    text = lines[0].strip() if lines else ""
    while match := prefix_pattern(prefix).match(text):
        text = text[match.end() :].strip()
    return _LEADING_ELLIPSIS.sub("", text).rstrip(" .").strip()


def continuation_problem(prefix: str, continuation: str) -> str | None:
    """Why a continuation is unusable (`empty`, `only_prefix`, `restates_prefix`), else None."""
    words = _WORD.findall(continuation.lower())
    if not words:
        return "empty"
    if set(words) <= set(_WORD.findall(prefix.lower())):
        return "only_prefix"
    if restates_prefix(prefix, continuation):
        return "restates_prefix"
    return None


def restates_prefix(prefix: str, continuation: str) -> bool:
    """Whether the continuation opens with the prefix's first three words, or repeats its last
    two or more ("others will feel ..." after "After viewing this Tweet, others will")."""
    words = _WORD.findall(continuation.lower())
    prefix_words = _WORD.findall(prefix.lower())
    if len(prefix_words) >= 3 and words[:3] == prefix_words[:3]:
        return True
    longest = min(len(words), len(prefix_words))
    return any(words[:k] == prefix_words[-k:] for k in range(2, longest + 1))


def check_continuation(continuation: Continuation, answer: str) -> str:
    """The usable continuation in `answer`; raises `ContinuationError` with the reason."""
    text = continuation_text(continuation.prefix, answer)
    problem = continuation_problem(continuation.prefix, text)
    if problem:
        raise ContinuationError(
            problem, f"{answer[:200]!r} does not continue {continuation.prefix!r}"
        )
    return text


@cache
def prefix_pattern(prefix: str) -> re.Pattern[str]:
    """The prefix, case-insensitive, words separated by any whitespace and/or a comma."""
    words = [re.escape(w.rstrip(",")) for w in prefix.split()]
    return re.compile(r"(?:\s*,\s*|\s+)".join(words) + r"(?!\w)", re.IGNORECASE)
