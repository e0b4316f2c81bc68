"""Stage logic with a scripted completer: every post gets rows, failures carry reasons, lineage is filled."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import pytest

from miko_assets.distill.config import stage_config
from miko_assets.distill.relations import RELATION_NAMES
from miko_assets.llm.continuation import ContinuationError, check_continuation
from miko_assets.llm.models import LLMRequest, LLMResponse
from miko_assets.stages.captions import KIND_NONE, KIND_OFFLINE, caption_rows
from miko_assets.stages.common import StageRun, Validator
from miko_assets.stages.intentions import intention_id, intention_rows
from miko_assets.stages.key_info import key_info_rows
from miko_assets.warehouse.lineage import UnknownIntention, intention_card
from miko_assets.warehouse.warehouse import Warehouse


class ScriptedCompleter:
    """Answers each request with the next scripted text; `None` is a failed call."""

    def __init__(self, answers: list[str | None]) -> None:
        self.answers = list(answers)
        self.requests: list[LLMRequest] = []

    def __call__(self, requests: Sequence[LLMRequest], validate: Validator | None = None) -> list[LLMResponse]:
        self.requests += requests
        responses = []
        for request in requests:
            answer = self.answers.pop(0)
            if answer is None:
                responses.append(LLMResponse(call_id=request.cache_key(), status="failed", error_kind="rate_limited",
                                             error="rate_limited: 429 after 5 attempts"))
            else:
                responses.append(LLMResponse(call_id=request.cache_key(), status="ok", text=answer))
        return responses


def _posts() -> pd.DataFrame:
    return pd.DataFrame([
        {"batch": "b-0000", "post_id": "t:1", "text": "love waiting for the bus in the rain", "image_sha256": "ab" * 32,
         "image_path": "/x/1.jpg", "metadata_json": "{}", "image_error": None},
        {"batch": "b-0000", "post_id": "t:2", "text": "my cat stole my seat", "image_sha256": None,
         "image_path": None, "metadata_json": json.dumps({"image_attributes": ["cat", "chair"]}), "image_error": None},
        {"batch": "b-0000", "post_id": "t:3", "text": "new shoes!", "image_sha256": None,
         "image_path": "/x/3.jpg", "metadata_json": "{}", "image_error": "image file not found: /x/3.jpg"},
    ])


def _run(stage: str, version: str | None = None) -> StageRun:
    env = {f"MIKO_{stage.upper()}_PROMPT_VERSION": version} if version else {}
    return StageRun.start(stage_config(stage, env), "run-1")


def test_captions_offline_path_says_what_it_is() -> None:
    from miko_assets.imaging.describe import OfflineImageDescription

    described: list[str] = []

    def describe(path: str, root: str | None) -> OfflineImageDescription:
        described.append(path)
        return OfflineImageDescription(source="pixels", tags=(), method="test-tagger")

    rows = caption_rows(_posts(), _run("captions"), ScriptedCompleter([]), describe).set_index("post_id")
    assert described == ["/x/1.jpg"]
    assert rows.loc["t:1", "description_kind"] == KIND_OFFLINE and rows.loc["t:1", "provider"] == "offline"
    assert rows.loc["t:1", "description"].startswith("[offline image analysis, not a caption]")
    assert "MMSD extract_all" in rows.loc["t:2", "description"]
    assert (rows.loc["t:3", "description_kind"], rows.loc["t:3", "status"]) == (KIND_NONE, "no_image")
    assert "not found" in rows.loc["t:3", "error"]


def test_key_info_and_intentions_record_every_outcome() -> None:
    posts = _posts()
    captions = pd.DataFrame([{"post_id": "t:1", "caption_id": "c1", "description": "a bus stop in the rain", "status": "ok"}])
    key_info = key_info_rows(posts, captions, _run("key_info", "v2"),
                             ScriptedCompleter(['{"concept": "bus", "action": "wait", "object": "bus", "emotion": "annoyed", "keywords": "rain"}',
                                                "Concept: cat\nEmotion: amused", None]))
    assert list(key_info["status"]) == ["ok", "ok", "failed"]
    assert key_info.loc[1, "emotion"] == "amused" and key_info.loc[1, "action"] is None
    assert "429" in key_info.loc[2, "error"]

    answer = json.dumps({name: f"do thing {i}" for i, name in enumerate(RELATION_NAMES) if name != "oWant"})
    completer = ScriptedCompleter([answer, "I cannot help with that.", None])
    rows = intention_rows(posts, captions, key_info, _run("intentions", "v2"), completer)
    assert len(rows) == 30 and rows.groupby("post_id").size().tolist() == [10, 10, 10]
    first = rows[rows["post_id"] == "t:1"].set_index("relation")
    assert first.loc["oWant", "status"] == "missing" and "oWant" in first.loc["oWant", "error"]
    assert first.loc["xWant", "full_text"] == "After posting this Tweet, the user wants to do thing 0"
    assert set(first["caption_id"]) == {"c1"} and first["key_info_id"].notna().all()
    assert set(rows[rows["post_id"] == "t:3"]["status"]) == {"failed"}
    assert rows["error"][rows["status"] != "ok"].notna().all()
    assert rows.loc[0, "intention_id"] == intention_id("t:1", "xWant")
    assert {"prompt_sha", "model", "llm_call_id", "code_version", "dagster_run_id", "input_hash"} <= set(rows.columns)
    assert rows["llm_call_id"].notna().all() and (rows["dagster_run_id"] == "run-1").all()
    # The caption reached the prompt; the post without a usable caption says so.
    assert "a bus stop in the rain" in completer.requests[0].messages[-1].content
    assert "no usable image" in completer.requests[1].messages[-1].content


class ContinuingCompleter(ScriptedCompleter):
    """Answers continuation requests like the runner: invalid continuations fail with the reason."""

    def __call__(self, requests: Sequence[LLMRequest], validate: Validator | None = None) -> list[LLMResponse]:
        responses = super().__call__(requests, validate)
        for index, (request, response) in enumerate(zip(requests, responses, strict=True)):
            assert request.continuation is not None and validate is None
            if response.status == "ok":
                try:
                    check_continuation(request.continuation, response.text or "")
                except ContinuationError as exc:
                    responses[index] = response.model_copy(update={"status": "failed", "error_kind": "invalid_output", "error": str(exc)})
        return responses


def test_per_relation_intentions_make_one_call_per_relation_with_its_own_lineage() -> None:
    posts = _posts().head(2)
    run = _run("intentions")
    assert run.prompt.per_prefix and run.config.prompt_version == "v3"
    answers = [f" thing number {i}." for i in range(10)]
    answers[1] = None  # a failed call: only oEffect of the first post fails
    answers[2] = " the user is."  # only the prefix's words again
    answers += [" share a small joy with friends."] * 10
    completer = ContinuingCompleter(answers)
    rows = intention_rows(posts, pd.DataFrame(), pd.DataFrame(), run, completer)
    assert len(completer.requests) == 20 and len(rows) == 20
    # Every relation's request continues its own prefix, post-major (the prompt's post part is shared).
    assert [r.continuation.prefix for r in completer.requests[:10]] == list(rows["prefix"][:10])
    assert all(r.messages[-1].content.rstrip().endswith(f"{r.continuation.prefix} ...") for r in completer.requests)
    assert rows["llm_call_id"].nunique() == 20  # which relation's call made which row
    first = rows[rows["post_id"] == "t:1"].set_index("relation")
    assert first.loc["xWant", "full_text"] == "After posting this Tweet, the user wants to thing number 0"
    assert first.loc["xWant", "status"] == "ok" and first.loc["xWant", "kept_prefix"]
    assert (first.loc["oEffect", "status"], first.loc["oEffect", "error"]) == ("failed", "rate_limited: 429 after 5 attempts")
    assert first.loc["xAttr", "status"] == "failed" and "only_prefix" in first.loc["xAttr", "error"]
    assert (rows[rows["post_id"] == "t:2"]["status"] == "ok").all()


def test_per_field_key_info_records_each_fields_call() -> None:
    posts = _posts().head(2)
    run = _run("key_info")
    assert run.prompt.per_prefix and run.config.prompt_version == "v3"
    answers = [" waiting for a bus.", " standing in the rain.", None, " annoyance.", " bus, rain, waiting."]
    answers += [None] * 5
    completer = ContinuingCompleter(answers)
    rows = key_info_rows(posts, pd.DataFrame(), run, completer)
    assert len(completer.requests) == 10
    first, second = rows.iloc[0], rows.iloc[1]
    assert (first["concept"], first["action"], first["object"], first["emotion"]) == (
        "waiting for a bus", "standing in the rain", None, "annoyance")
    assert first["status"] == "ok" and first["error"].startswith("object: rate_limited")
    call_ids = json.loads(first["field_call_ids"])
    assert list(call_ids) == ["concept", "action", "object", "emotion", "keywords"]
    assert call_ids["concept"] == first["llm_call_id"] == completer.requests[0].cache_key()
    assert second["status"] == "failed" and second["error"].count("rate_limited") == 5


def test_lineage_of_unknown_or_hostile_ids_is_a_clear_error(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    for bad in ("nope", "x' OR '1'='1", "'; DROP TABLE intentions; --"):
        with pytest.raises(UnknownIntention, match="no intention with id"):
            intention_card(wh, bad)
    assert wh.rows("SELECT count(*) FROM intentions") == [(0,)]


def test_miko_lineage_command_reports_unknown_ids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from miko_assets.cli import main

    Warehouse(tmp_path / "w.duckdb").ensure_schema()
    assert main(["--warehouse", str(tmp_path / "w.duckdb"), "lineage", "abc' --"]) == 2
    assert "no intention with id \"abc' --\"" in capsys.readouterr().err
