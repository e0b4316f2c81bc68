"""The quality floor of generated intentions, per relation: the share that is well-formed, the
share that is empty or failed, and the distinct-tail ratio.

Well-formed: a completion of 3 to 25 words, of letters and ordinary punctuation only, that does
not restate its prefix and is not a copy of the post. This is a floor, not a judgement of
plausibility: a well-formed intention can still be wrong (the judges and annotators say that).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import pandas as pd

from miko_assets.distill.relations import RELATION_NAMES
from miko_assets.llm.continuation import restates_prefix

MIN_WORDS, MAX_WORDS = 3, 25
# Letters (any script's letters are not "ordinary" here: the knowledge base is English), spaces
# and ordinary punctuation; digits, emoji, hashes, URLs and markup are not.
_ORDINARY = re.compile(r"^[A-Za-z][A-Za-z ,.;:!?'’\"()\-]*$")
_WORD = re.compile(r"[a-z']+")
# A completion this long that appears verbatim in the post is a copy of it.
_COPY_MIN_WORDS = 4
ALL = "ALL"
COLUMNS = ("relation", "rows", "well_formed", "empty_or_failed", "distinct_tail_ratio")


def malformation(prefix: str, completion: str | None, post_text: str) -> str | None:
    """Why a completion is not well-formed (`no_completion`, `too_short`, `too_long`,
    `unusual_characters`, `restates_prefix`, `copies_post`), or None when it is."""
    text = (completion or "").strip()
    if not text:
        return "no_completion"
    words = text.split()
    if len(words) < MIN_WORDS:
        return "too_short"
    if len(words) > MAX_WORDS:
        return "too_long"
    if not _ORDINARY.match(text):
        return "unusual_characters"
    if restates_prefix(prefix, text):
        return "restates_prefix"
    if _copies(text, post_text):
        return "copies_post"
    return None


def quality_floor(intentions: pd.DataFrame, post_texts: Mapping[str, str]) -> pd.DataFrame:
    """Per relation in MIKO's order, then `ALL`: rows, share well-formed, share empty or failed
    (any status but `ok`), distinct-tail ratio (distinct lower-cased completions over `ok` rows).

    `intentions` has the intentions table's `relation`, `prefix`, `completion`, `status` and
    `post_id` columns; `post_texts` maps post ids to their text.
    """
    if intentions.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    frame = intentions.assign(
        well_formed=[
            r.status == "ok" and malformation(r.prefix, r.completion, post_texts.get(r.post_id, "")) is None
            for r in intentions.itertuples()
        ],
        not_ok=intentions["status"] != "ok",
        tail=intentions["completion"].fillna("").str.strip().str.lower(),
    )
    groups = [(name, frame[frame["relation"] == name]) for name in RELATION_NAMES if (frame["relation"] == name).any()]
    return pd.DataFrame([_figures(name, rows) for name, rows in [*groups, (ALL, frame)]], columns=list(COLUMNS))


def format_quality_floor(table: pd.DataFrame) -> list[str]:
    """The quality floor as aligned text lines, ready to print."""
    lines = [f"{'relation':<9} {'rows':>5} {'well-formed':>11} {'empty/failed':>12} {'distinct tails':>14}"]
    for r in table.itertuples():
        lines.append(
            f"{r.relation:<9} {r.rows:>5} {r.well_formed:>11.0%} {r.empty_or_failed:>12.0%} {r.distinct_tail_ratio:>14.2f}"
        )
    return lines


def _figures(relation: str, rows: pd.DataFrame) -> dict[str, object]:
    ok = rows[~rows["not_ok"]]
    return {
        "relation": relation,
        "rows": len(rows),
        "well_formed": float(rows["well_formed"].mean()),
        "empty_or_failed": float(rows["not_ok"].mean()),
        "distinct_tail_ratio": ok["tail"].nunique() / len(ok) if len(ok) else 0.0,
    }


def _copies(completion: str, post_text: str) -> bool:
    tail = " ".join(_WORD.findall(completion.lower()))
    post = " ".join(_WORD.findall(post_text.lower()))
    if not tail or not post:
        return False
    return post in tail or (len(tail.split()) >= _COPY_MIN_WORDS and f" {tail} " in f" {post} ")
