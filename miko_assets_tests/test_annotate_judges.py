"""Parsing judge answers: JSON, prose, and recorded failures instead of exceptions."""

from __future__ import annotations

import pytest

from miko_assets.annotate.judges import (
    JUDGE_SCHEMAS,
    PlausibilityAnswer,
    TypicalityAnswer,
    parse_judge_answer,
)


@pytest.mark.parametrize(
    ("answer", "label", "reason"),
    [
        (
            '{"label": "yes", "reason": "Sharing love fits the post."}',
            "yes",
            "Sharing love fits the post.",
        ),
        ('```json\n{"label": "No", "reason": "unrelated"}\n```', "no", "unrelated"),
        (
            'Sure! {"plausible": true, "explanation": "fits"} Hope this helps.',
            "yes",
            "fits",
        ),
        ('{"answer": "not sure", "reason": ""}', "unsure", None),
        (
            "Yes. The user clearly greets someone they love.",
            "yes",
            "The user clearly greets someone they love.",
        ),
        (
            "**No** - there is no hint of anger in the post",
            "no",
            "there is no hint of anger in the post",
        ),
        (
            "Answer: unsure\nReason: the image is not described.",
            "unsure",
            "the image is not described.",
        ),
        ("I think the statement is plausible.\nVerdict: yes", "yes", None),
    ],
)
def test_plausibility_answers(answer, label, reason):
    result = parse_judge_answer("plausibility", answer)
    assert result.status == "ok", result.failure
    assert result.label == label
    assert result.reason == reason


@pytest.mark.parametrize(
    ("answer", "label"),
    [
        ('{"score": 4, "reason": "typical"}', "4"),
        ('{"score": "5", "reason": "very typical"}', "5"),
        ('{"rating": 2.0, "reason": "a stretch"}', "2"),
        ("Score: 3\nReason: one of several readings", "3"),
        ("I would rate it 4/5 because most people would say so.", "4"),
        ("1 - only in unusual circumstances", "1"),
    ],
)
def test_typicality_answers(answer, label):
    result = parse_judge_answer("typicality", answer)
    assert result.status == "ok", result.failure
    assert result.label == label


@pytest.mark.parametrize(
    ("stage", "answer", "failure"),
    [
        ("plausibility", None, "empty answer"),
        ("plausibility", "   ", "empty answer"),
        (
            "plausibility",
            '{"label": "maybe", "reason": "x"}',
            "'maybe' is not yes / no / unsure",
        ),
        ("plausibility", '{"reason": "x"}', "JSON has no plausibility field"),
        (
            "plausibility",
            "The statement describes the user's feelings.",
            "no plausibility verdict",
        ),
        ("plausibility", '{"label": "yes", "reason": ', "no plausibility verdict"),
        ("typicality", '{"score": 7, "reason": "x"}', "7 is not an integer 1-5"),
        ("typicality", '{"score": 3.5, "reason": "x"}', "3.5 is not an integer 1-5"),
        ("typicality", '{"score": true}', "True is not an integer 1-5"),
        ("typicality", "Score: 0", "0.0 is not an integer 1-5"),
        ("typicality", "quite typical", "no typicality verdict"),
        ("typicality", "[4]", "no typicality verdict"),
    ],
)
def test_malformed_answers_are_recorded_failures(stage, answer, failure):
    result = parse_judge_answer(stage, answer)
    assert result.status == "failed"
    assert result.label is None
    assert failure in result.failure


def test_schemas_describe_the_answers_the_prompts_ask_for():
    plausibility = JUDGE_SCHEMAS["plausibility"]
    assert plausibility["required"] == ["label", "reason"]
    assert plausibility["properties"]["label"]["enum"] == ["yes", "no", "unsure"]
    assert plausibility["additionalProperties"] is False
    typicality = JUDGE_SCHEMAS["typicality"]
    assert typicality["properties"]["score"]["enum"] == [1, 2, 3, 4, 5]
    # anything valid under the schema parses
    for answer, model in [
        (PlausibilityAnswer(label="no", reason="r"), "plausibility"),
        (TypicalityAnswer(score=2, reason="r"), "typicality"),
    ]:
        assert parse_judge_answer(model, answer.model_dump_json()).status == "ok"
