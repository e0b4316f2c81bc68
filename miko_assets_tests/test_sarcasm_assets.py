"""The sarcasm assets through a real Dagster instance and DuckDB file: one batch distilled for real
with the embedded model, a second batch with posts only, the dataset of both, the students on the
first, and the refusal when a partition the student needs is missing."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from miko_assets.assets.posts import posts
from miko_assets.assets.sarcasm import sarcasm_dataset, sarcasm_student
from miko_assets.definitions import batch_assets, distill_job, sarcasm_student_job
from miko_assets.ingest.batches import ingest_file
from miko_assets.partitions import register_batches
from miko_assets.resources import LLMResource, WarehouseResource
from miko_assets.sarcasm.dataset import INTENT_ID_COLUMNS
from miko_assets.sarcasm.students import student_variants
from miko_assets.stages.versions import current_stage_specs
from miko_assets.warehouse.warehouse import Warehouse

pytestmark = pytest.mark.slow

DISTILLED, POSTS_ONLY = "tiny-train-0000", "tiny-test-0000"
TRAIN_POSTS: list[dict[str, object]] = [
    {"id": "a", "text": "Oh great, my train is late again. Best Monday ever.", "label": 1},
    {"id": "b", "text": "Finished my first 10k run today, so proud!", "label": 0},
    {"id": "c", "text": "Love it when the wifi dies right before my deadline.", "label": 1},
    {"id": "d", "text": "Grandma's garden is full of tomatoes this year.", "label": 0},
]
TEST_POSTS: list[dict[str, object]] = [
    {"id": "e", "text": "Wow, another meeting that could have been an email.", "label": 1},
    {"id": "f", "text": "The sunset over the lake was beautiful tonight.", "label": 0},
    {"id": "g", "text": "No label on this one."},
]


@dataclass(frozen=True)
class Setup:
    instance: dg.DagsterInstance
    warehouse: Warehouse
    defs: dg.Definitions
    dataset_metadata: dict[str, Mapping[str, dg.MetadataValue]]


def _ingest(warehouse: Warehouse, folder: Path, split: str, rows: list[dict[str, object]]) -> None:
    path = folder / f"tiny_{split}.jsonl"
    path.write_text("".join(json.dumps({**r, "dataset": "tiny"}) + "\n" for r in rows))
    ingest_file(warehouse, "jsonl", path, split=split)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("sarcasm")
    warehouse = Warehouse(folder / "w.duckdb")
    _ingest(warehouse, folder, "train", TRAIN_POSTS)
    _ingest(warehouse, folder, "test", TEST_POSTS)
    resources = {"warehouse": WarehouseResource(path=str(warehouse.path)), "llm": LLMResource()}
    defs = dg.Definitions(
        assets=[*batch_assets, sarcasm_dataset, sarcasm_student],
        jobs=[distill_job, sarcasm_student_job],
        resources=resources,
    )
    with dg.instance_for_test() as instance:
        assert register_batches(instance, warehouse) == [POSTS_ONLY, DISTILLED]
        # The one real distillation (embedded model, default configuration); the other batch gets posts only.
        assert defs.resolve_job_def("distill_job").execute_in_process(partition_key=DISTILLED, instance=instance).success
        assert dg.materialize([posts], partition_key=POSTS_ONLY, instance=instance, resources=resources).success
        metadata = {}
        for batch in (DISTILLED, POSTS_ONLY):
            result = dg.materialize([sarcasm_dataset], partition_key=batch, instance=instance, resources=resources)
            assert result.success
            metadata[batch] = result.asset_materializations_for_node("sarcasm_dataset")[0].metadata
        yield Setup(instance, warehouse, defs, metadata)


def _run_student(setup: Setup, **config: object) -> dg.ExecuteInProcessResult:
    return setup.defs.resolve_job_def("sarcasm_student_job").execute_in_process(
        instance=setup.instance,
        run_config={"ops": {"sarcasm_student": {"config": config}}},
        raise_on_error=False,
    )


def test_dataset_rows_carry_lineage_and_mark_posts_without_intentions(setup: Setup) -> None:
    wh = setup.warehouse
    distilled = wh.query("SELECT * FROM sarcasm_dataset WHERE batch = ? ORDER BY post_id", [DISTILLED])
    assert distilled["post_id"].tolist() == [f"tiny:{x}" for x in "abcd"]
    assert distilled["label"].tolist() == [1, 0, 1, 0]
    ok = dict(wh.rows("SELECT post_id, count(*) FROM intentions WHERE status = 'ok' GROUP BY post_id"))
    assert ok, "the embedded model produced no usable intention at all"
    for row in distilled.to_dict("records"):
        assert row["n_intentions"] == ok.get(row["post_id"], 0)
        assert row["has_intentions"] == (row["post_id"] in ok)
    # Every intention id and call id in the dataset names a row of the intentions and llm_calls tables.
    ids = {v for c in INTENT_ID_COLUMNS for v in distilled[c].dropna()}
    assert ids and ids <= {i for (i,) in wh.rows("SELECT intention_id FROM intentions")}
    # Per-relation prompts make one call a relation: a post's calls are listed comma-separated.
    calls = {call for joined in distilled["teacher_llm_call_id"].dropna() for call in joined.split(",")}
    assert calls and calls <= {c for (c,) in wh.rows("SELECT call_id FROM llm_calls WHERE stage = 'intentions'")}
    intentions = current_stage_specs()["intentions"].config
    key_info = current_stage_specs()["key_info"].config
    with_intentions = distilled[distilled["has_intentions"]]
    assert set(with_intentions["teacher_model"]) == {f"{intentions.provider}/{intentions.model}"}
    # The key information's prompt made an input of the intentions: it is named beside theirs.
    assert set(with_intentions["teacher_prompt_version"]) == {
        ",".join(sorted(f"{c.prompt_name}@{c.prompt_version}" for c in (intentions, key_info)))
    }
    assert set(with_intentions["teacher_prompt_sha"]) == {intentions.prompt().sha}

    posts_only = wh.query("SELECT * FROM sarcasm_dataset WHERE batch = ? ORDER BY post_id", [POSTS_ONLY])
    assert posts_only["post_id"].tolist() == ["tiny:e", "tiny:f"]
    assert not posts_only["has_intentions"].any() and (posts_only["n_intentions"] == 0).all()
    metadata = setup.dataset_metadata[POSTS_ONLY]
    assert metadata["unlabelled_posts_skipped"].value == 1
    assert metadata["posts_without_intentions"].value == 2
    assert metadata["post_ids_without_intentions"].value == "tiny:e, tiny:f"


def test_student_refuses_while_a_partition_lacks_upstream_stages(setup: Setup) -> None:
    before = setup.warehouse.rows("SELECT count(*) FROM sarcasm_results")
    result = _run_student(setup)  # default: every partition of the labelled dataset `tiny`
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    refusal = failure.step_failure_data.user_failure_data
    assert refusal is not None and refusal.description is not None
    message = refusal.description
    assert message.startswith("sarcasm_student refuses to train: 1 of its 2 required partitions")
    for stage in ("captions", "key_info", "intentions"):
        assert f"  {stage}: 1 missing: {POSTS_ONLY}\n" in message
    assert "posts:" not in message and "sarcasm_dataset:" not in message
    assert setup.warehouse.rows("SELECT count(*) FROM sarcasm_results") == before


def test_all_student_variants_on_the_distilled_batch(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # Four posts: a seeded half/half split leaves one post of each class on each side.
    result = _run_student(setup, batches=[DISTILLED], test_size=0.5, min_per_class=1, n_resamples=200)
    assert result.success
    rows = setup.warehouse.query("SELECT * FROM sarcasm_results WHERE run_id = ?", [result.run_id])
    names = [v.name for v in student_variants()]
    for student in ("tfidf", "minilm"):
        assert rows.loc[rows["student"] == student, "variant"].tolist() == names
    assert rows["student"].tolist().count("majority") == 1
    assert set(rows["batches"]) == {DISTILLED} and set(rows["dataset"]) == {"tiny"}
    assert (rows["n_train"] == 2).all() and (rows["n_test"] == 2).all()
    assert rows["split_method"].str.startswith("seeded stratified 50%/50% split (seed 0)").all()
    assert rows["macro_f1"].between(0, 1).all()
    full = rows[(rows["student"] == "tfidf") & (rows["variant"] == "text+intentions+caption+key_info")].iloc[0]
    assert full["empty_fields"] == "caption"  # no images: the captions stage had nothing to describe

    intentions = current_stage_specs()["intentions"].config
    key_info = current_stage_specs()["key_info"].config
    assert set(rows["teacher_model"]) == {f"{intentions.provider}/{intentions.model}"}
    assert set(rows["teacher_prompt_versions"]) == {
        ",".join(sorted(f"{c.prompt_name}@{c.prompt_version}" for c in (intentions, key_info)))
    }
    assert set(rows["teacher_prompt_shas"]) == {intentions.prompt().sha}

    metadata = result.asset_materializations_for_node("sarcasm_student")[0].metadata
    assert metadata["run_id"].value == result.run_id
    assert "| tiny | minilm | text+intentions-Open |" in str(metadata["results"].value)
    assert str(metadata["plot"].value).startswith("![sarcasm students](data:image/png;base64,iVBOR")
