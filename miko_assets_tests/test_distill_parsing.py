"""Answer parsing for the key-info and intentions stages, on real gpt-3.5 answers and variations."""

from __future__ import annotations

import json
from typing import Any

import pytest

from miko_assets.distill.caption import parse_caption
from miko_assets.distill.intentions import INTENTIONS_SCHEMA, ParsedIntention, parse_intentions
from miko_assets.distill.key_info import KEY_INFO_SCHEMA, KeyInfo, parse_key_info
from miko_assets.distill.parsing import ParseError
from miko_assets.distill.relations import RELATION_NAMES, RELATIONS
from miko_assets_tests.paths import MIKO_RELEASE as RELEASE



@pytest.fixture(scope="module")
def release() -> list[dict[str, Any]]:
    if not RELEASE.is_file():
        pytest.skip(f"shared data not found at {RELEASE}")
    return json.loads(RELEASE.read_text(encoding="utf-8"))


def _originals(post: dict[str, Any]) -> list[str | None]:
    """The post's ten original answers in relation order; None where the release has none."""
    return [post["intentions"].get(f"Intention {r.number}") for r in RELATIONS]


def _expected(original: str | None, prefix: str) -> tuple[str, str, bool]:
    """(status, completion, kept_prefix) derived directly from an original answer string."""
    if original is None:
        return "missing", "", False
    kept = original.lower().startswith(prefix.lower())
    completion = original[len(prefix) :].strip() if kept else original.strip()
    return ("ok" if completion else "empty"), completion, kept


def _observed(parsed: ParsedIntention) -> tuple[str, str, bool]:
    return parsed.status, parsed.completion, parsed.kept_prefix


def _reassemble(post: dict[str, Any], header: str = "Intention{n}: ") -> str:
    return "\n".join(
        header.format(n=r.number) + original
        for r, original in zip(RELATIONS, _originals(post), strict=True)
        if original is not None
    )


def test_release_answers_parse_back_exactly(release: list[dict[str, Any]]) -> None:
    assert len(release) == 700
    kept = present = 0
    statuses: dict[str, int] = {}
    for post in release:
        parsed = parse_intentions(_reassemble(post))
        assert [p.relation for p in parsed] == list(RELATION_NAMES)
        for relation, original, result in zip(RELATIONS, _originals(post), parsed, strict=True):
            expected = _expected(original, relation.prefix)
            assert _observed(result) == expected, (post["text"], relation.name, original)
            assert result.prefix == relation.prefix
            statuses[result.status] = statuses.get(result.status, 0) + 1
            present += original is not None
            kept += result.kept_prefix
    # Measured on the release: 13 posts have no Intention 10, one Intention 9 is empty, one
    # Intention 10 is the bare prefix, and 282 Intention 10s say "post(ed) this tweet".
    assert present == 6987
    assert kept == 6691
    assert statuses == {"ok": 6985, "empty": 2, "missing": 13}


def test_release_lowercase_tweet_keeps_prefix(release: list[dict[str, Any]]) -> None:
    lowercase = [
        original
        for post in release
        if (original := post["intentions"].get("Intention 10"))
        and original.startswith("The user posts this tweet because ")
    ]
    assert lowercase, "the release has Intention 10 answers with a lowercase 'tweet'"
    for original in lowercase:
        parsed = parse_intentions(f"Intention10: {original}")[9]
        assert parsed.kept_prefix
        assert parsed.completion == original[len("The user posts this tweet because ") :].strip()


@pytest.mark.parametrize(
    "header",
    ["Intention {n}: ", "**Intention {n}:** ", "**Intention {n}**: ", "{n}. ", "{n}) ",
     "- Intention {n} - ", "### Intention {n}\n", "Intention {n}:\n"],
)
def test_numbering_styles_give_the_same_result(
    release: list[dict[str, Any]], header: str
) -> None:
    for post in release[:150]:
        reference = parse_intentions(_reassemble(post))
        assert parse_intentions(_reassemble(post, header)) == reference, header


def test_release_as_json_gives_the_same_result(release: list[dict[str, Any]]) -> None:
    for post in release[:150]:
        reference = parse_intentions(_reassemble(post))
        by_relation = {
            r.name: o for r, o in zip(RELATIONS, _originals(post), strict=True) if o is not None
        }
        fenced = "```json\n" + json.dumps(by_relation, indent=2) + "\n```"
        assert parse_intentions(fenced) == reference
        by_number = {
            f"Intention {n}": o for n, o in enumerate(_originals(post), 1) if o is not None
        }
        assert parse_intentions(json.dumps(by_number)) == reference


def test_skipped_relations_are_missing_rows_not_dropped(release: list[dict[str, Any]]) -> None:
    post = release[0]
    lines = _reassemble(post).splitlines()
    answer = "\n".join(line for i, line in enumerate(lines) if i not in (1, 4, 9))
    parsed = parse_intentions(answer)
    assert len(parsed) == 10
    assert [p.relation for p in parsed if p.status == "missing"] == ["oEffect", "xReact", "Open"]
    assert all(p.completion == "" and not p.kept_prefix for p in parsed if p.status == "missing")
    assert sum(p.status == "ok" for p in parsed) == 7


def test_messy_answer() -> None:
    answer = (
        "Sure! Here are the intentions for this post:\n\n"
        "**Intention 1:** After posting this Tweet, the user wants to share\n"
        "their love with everyone.\n\n"
        "Intention 2: after viewing this tweet,others will smile\n"
        "Intention 3 (xAttr): The user posts this Tweet because the user is romantic\n"
        "4. express affection\n"
        "Intention5: After posting this Tweet, the user feels "
        "After posting this Tweet, the user feels happy\n"
        "Intention 6: ...\n"
        "Intention10: The user post this tweet because it is Monday.\n\n"
        "I hope these help!"
    )
    by_relation = {p.relation: p for p in parse_intentions(answer)}
    assert _observed(by_relation["xWant"]) == ("ok", "share their love with everyone.", True)
    assert _observed(by_relation["oEffect"]) == ("ok", "smile", True)
    assert _observed(by_relation["xAttr"]) == ("ok", "romantic", True)
    assert _observed(by_relation["xIntent"]) == ("ok", "express affection", False)
    assert _observed(by_relation["xReact"]) == ("ok", "happy", True)
    assert _observed(by_relation["oReact"]) == ("empty", "", False)
    assert by_relation["oWant"].status == "missing"
    assert by_relation["Open"].completion == "The user post this tweet because it is Monday."
    assert by_relation["xWant"].full_text == (
        "After posting this Tweet, the user wants to share their love with everyone."
    )
    assert by_relation["xIntent"].full_text == (
        "The user posts this Tweet because the user intended to express affection"
    )
    # a sentence of its own is not glued to the prefix
    assert by_relation["Open"].full_text == "The user post this tweet because it is Monday."
    assert by_relation["oReact"].full_text == ""


def test_items_on_one_line_and_unnumbered_lines() -> None:
    one_line = "Intention1: After posting this Tweet, the user wants to rest. Intention2: cry"
    parsed = parse_intentions(one_line)
    assert _observed(parsed[0]) == ("ok", "rest.", True)
    assert _observed(parsed[1]) == ("ok", "cry", False)

    unnumbered = (
        "The user posts this Tweet because the user is tired.\n"
        "- Before posting this Tweet, the user needs to wake up.\n"
        "Random chatter."
    )
    by_relation = {p.relation: p for p in parse_intentions(unnumbered)}
    assert _observed(by_relation["xAttr"]) == ("ok", "tired.", True)
    assert _observed(by_relation["xNeed"]) == ("ok", "wake up.", True)
    assert sum(p.status == "missing" for p in by_relation.values()) == 8


def test_relation_name_labels_and_truncated_json() -> None:
    labelled = "xWant: sleep\noEffect: After viewing this Tweet, others will laugh"
    parsed = parse_intentions(labelled)
    assert _observed(parsed[0]) == ("ok", "sleep", False)
    assert _observed(parsed[1]) == ("ok", "laugh", True)

    truncated = '{\n  "xWant": "rest at home",\n  "oEffect": "worry about \\"them\\"",\n  "xAt'
    parsed = parse_intentions(truncated)
    assert _observed(parsed[0]) == ("ok", "rest at home", False)
    assert _observed(parsed[1]) == ("ok", 'worry about "them"', False)
    assert all(p.status == "missing" for p in parsed[2:])


def test_json_wrapped_list_and_empty_answers() -> None:
    wrapped = json.dumps({"intentions": {"XWANT": "sleep", "open": ["it", "rains"]}})
    parsed = parse_intentions(wrapped)
    assert _observed(parsed[0]) == ("ok", "sleep", False)
    assert _observed(parsed[9]) == ("ok", "it, rains", False)

    as_list = json.dumps([f"item {i}" for i in range(12)])
    assert [p.completion for p in parse_intentions(as_list)] == [f"item {i}" for i in range(10)]

    for nothing in ("", None, "I'm sorry, I can't help with that.", "{}"):
        parsed = parse_intentions(nothing)
        assert len(parsed) == 10 and all(p.status == "missing" for p in parsed)


def test_intentions_schema_lists_the_ten_relations() -> None:
    assert INTENTIONS_SCHEMA["required"] == list(RELATION_NAMES)
    assert set(INTENTIONS_SCHEMA["properties"]) == set(RELATION_NAMES)
    assert RELATION_NAMES == (
        "xWant", "oEffect", "xAttr", "xIntent", "xReact",
        "oReact", "oWant", "xEffect", "xNeed", "Open",
    )


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            "Concept: love\nAction: greeting\nObject: partner\nEmotion: affection\n"
            "Keywords: good morning, sunshine",
            KeyInfo(concept="love", action="greeting", object="partner", emotion="affection",
                    keywords="good morning, sunshine"),
        ),
        (
            "Sure! Here is the key information:\n\n- **Concept:** Love\n- **Action**: greeting\n"
            "- **Objects:** none\n- **Emotion** - happy\n- **Key words:**\n  - morning\n"
            "  - sunshine\n\nLet me know if you need anything else!",
            KeyInfo(concept="Love", action="greeting", emotion="happy",
                    keywords="morning, sunshine"),
        ),
        (
            "concept : love; ACTION: greet | emotion: joy",
            KeyInfo(concept="love", action="greet", emotion="joy"),
        ),
        (
            "1. Concept: a long\nwrapped value\n2. Keywords: a, b",
            KeyInfo(concept="a long wrapped value", keywords="a, b"),
        ),
        ("Concept: love\nEmotion: N/A.", KeyInfo(concept="love")),
        (
            '```json\n{"Concept": "love", "keywords": ["a", "b"], "emotion": "", "extra": 1}\n```',
            KeyInfo(concept="love", keywords="a, b"),
        ),
        (
            '{"concept": "love", "action": "greet",\n "object',
            KeyInfo(concept="love", action="greet"),
        ),
    ],
)
def test_key_info_parsing(answer: str, expected: KeyInfo) -> None:
    assert parse_key_info(answer) == expected


@pytest.mark.parametrize("answer", ["", None, "I cannot answer that.", '{"foo": "bar"}'])
def test_key_info_without_fields_is_an_error(answer: str | None) -> None:
    with pytest.raises(ParseError) as error:
        parse_key_info(answer)
    assert error.value.reason == "no_fields"


def test_key_info_prompt_fields_and_schema() -> None:
    fields = KeyInfo(concept="love", keywords="a, b").prompt_fields()
    assert fields == {
        "concept": "love", "action": "none", "object": "none", "emotion": "none", "keywords": "a, b"
    }
    assert KEY_INFO_SCHEMA["required"] == ["concept", "action", "object", "emotion", "keywords"]
    assert KEY_INFO_SCHEMA["additionalProperties"] is False


def test_caption_parsing() -> None:
    assert parse_caption("  A cat on a sofa.\n") == "A cat on a sofa."
    for empty in ("", "  \n", None):
        with pytest.raises(ParseError) as error:
            parse_caption(empty)
        assert error.value.reason == "empty"
