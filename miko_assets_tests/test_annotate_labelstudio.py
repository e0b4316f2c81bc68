"""Label Studio round trip: tasks and configs out, a three-annotator export in, twice."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from miko_assets.annotate.labelstudio import (
    FROM_NAMES,
    AnnotationItem,
    build_tasks,
    import_export,
    labeling_config,
    local_files_url,
    plausible_intentions,
)
from miko_assets.annotate.models import intention_text_sha
from miko_assets.annotate.report import (
    human_agreement_table,
    human_consensus,
    latest_human_labels,
)

ITEMS = [
    AnnotationItem(
        intention_id=f"int-{key}",
        post_id=f"mmsd2:{n}",
        relation=relation,
        intention=f"After posting this Tweet, statement {key}.",
        post_text=f"post {n} text",
        image=f"/data/local-files/?d=images/{n}.jpg" if n != 3 else None,
    )
    for n, (key, relation) in enumerate(
        [("A", "xWant"), ("B", "xReact"), ("C", "Open"), ("D", "oEffect")], start=1
    )
]
STAGE1 = {
    "A": ["yes", "yes", "no"],
    "B": ["no", "no", "no"],
    "C": ["yes", "unsure", "no"],
    "D": ["yes"] * 3,
}
STAGE2 = {"A": [4, 5, 3], "D": [2, 2, 1]}


def _result(stage: str, label: object) -> dict:
    # the shape Label Studio writes for a Choices / Rating control
    if stage == "plausibility":
        value, kind = {"choices": [label]}, "choices"
    else:
        value, kind = {"rating": label}, "rating"
    return {
        "value": value,
        "id": f"r-{stage}-{label}",
        "from_name": FROM_NAMES[stage],
        "to_name": "intention",
        "type": kind,
        "origin": "manual",
    }


def _annotation(
    annotation_id: int,
    task_id: int,
    user: object,
    result: list,
    cancelled: bool = False,
) -> dict:
    return {
        "id": annotation_id,
        "completed_by": user,
        "result": result,
        "was_cancelled": cancelled,
        "ground_truth": False,
        "created_at": f"2025-03-0{annotation_id % 9 + 1}T10:00:00.000000Z",
        "updated_at": f"2025-03-0{annotation_id % 9 + 1}T10:05:00.000000Z",
        "draft_created_at": None,
        "lead_time": 12.5,
        "prediction": {},
        "result_count": 0,
        "unique_id": f"u-{annotation_id}",
        "import_id": None,
        "last_action": None,
        "task": task_id,
        "project": 7,
        "updated_by": user if isinstance(user, int) else None,
        "parent_prediction": None,
        "parent_annotation": None,
        "last_created_by": None,
    }


def _export(stage: str, labels: dict[str, list], first_id: int) -> list[dict]:
    """A Label Studio 'JSON' export of the tasks `build_tasks` wrote, annotated by users 1-3."""
    tasks = []
    by_key = {
        item.intention_id.removeprefix("int-"): task
        for item, task in zip(ITEMS, build_tasks(ITEMS))
    }
    annotation_id = first_id
    for task_id, (key, task_labels) in enumerate(labels.items(), start=first_id):
        annotations = []
        for user, label in enumerate(task_labels, start=1):
            annotations.append(
                _annotation(annotation_id, task_id, user, [_result(stage, label)])
            )
            annotation_id += 1
        # a fourth user skipped the task: exported with was_cancelled and no result
        annotations.append(_annotation(annotation_id, task_id, 4, [], cancelled=True))
        annotation_id += 1
        tasks.append(
            {
                "id": task_id,
                "annotations": annotations,
                "file_upload": "tasks.json",
                "drafts": [],
                "predictions": [],
                "data": by_key[key]["data"],
                "meta": {},
                "created_at": "2025-03-01T09:00:00.000000Z",
                "updated_at": "2025-03-01T11:00:00.000000Z",
                "inner_id": task_id,
                "total_annotations": len(task_labels),
                "cancelled_annotations": 1,
                "total_predictions": 0,
                "comment_count": 0,
                "unresolved_comment_count": 0,
                "last_comment_updated_at": None,
                "project": 7,
                "updated_by": 1,
                "comment_authors": [],
            }
        )
    return tasks


@pytest.fixture
def stage1_file(tmp_path: Path) -> Path:
    path = tmp_path / "project-7-at-2025-03-01.json"
    path.write_text(json.dumps(_export("plausibility", STAGE1, 1), indent=1))
    return path


def test_tasks_carry_what_annotators_and_import_need():
    tasks = build_tasks(ITEMS)
    assert tasks[0] == {
        "data": {
            "text": "post 1 text",
            "image": "/data/local-files/?d=images/1.jpg",
            "intention": "After posting this Tweet, statement A.",
            "relation": "xWant",
            "intention_id": "int-A",
            "post_id": "mmsd2:1",
        }
    }
    assert tasks[2]["data"]["image"] == ""


def test_labeling_configs_match_the_importer():
    stage1 = ET.fromstring(labeling_config("plausibility"))
    choices = stage1.find("Choices")
    assert choices.get("name") == FROM_NAMES["plausibility"]
    assert [c.get("value") for c in choices.findall("Choice")] == [
        "yes",
        "no",
        "unsure",
    ]
    text_names = {t.get("name") for t in stage1.findall("Text")}
    assert choices.get("toName") in text_names
    assert stage1.find("Image").get("value") == "$image"

    stage2 = ET.fromstring(labeling_config("typicality", with_image=False))
    rating = stage2.find("Rating")
    assert (
        rating.get("name") == FROM_NAMES["typicality"]
        and rating.get("maxRating") == "5"
    )
    assert stage2.find("Image") is None
    # every $variable the configs use is a key of the exported task data
    data_keys = set(build_tasks(ITEMS)[0]["data"])
    for element in [*stage1.iter(), *stage2.iter()]:
        value = element.get("value", "")
        if value.startswith("$"):
            assert value[1:] in data_keys


def test_three_annotators_imported_twice_are_stored_once(stage1_file: Path):
    first = import_export(stage1_file)
    second = import_export(stage1_file)
    assert (first.tasks, first.annotations, first.cancelled) == (4, 16, 4)
    assert first.skipped == []
    assert len(first.rows) == 12
    assert first.source_sha256 == second.source_sha256
    assert [r.annotation_key for r in first.rows] == [
        r.annotation_key for r in second.rows
    ]

    stored = pd.DataFrame(
        [r.model_dump() for r in first.rows + second.rows]
    ).drop_duplicates("annotation_key")
    assert len(stored) == 12
    assert set(stored["annotator"]) == {"1", "2", "3"}
    assert set(stored["source_sha256"]) == {first.source_sha256}

    consensus = human_consensus(stored, "plausibility").set_index("intention_id")[
        "consensus"
    ]
    assert consensus.to_dict() == {
        "int-A": "yes",
        "int-B": "no",
        "int-C": None,
        "int-D": "yes",
    }
    # each row names the text its annotator saw; stage 2 gets those (id, text) pairs
    text_of = {item.intention_id: item.intention for item in ITEMS}
    assert all(
        r.intention_text_sha == intention_text_sha(text_of[r.intention_id])
        for r in first.rows
    )
    assert plausible_intentions(stored) == {
        (i, intention_text_sha(text_of[i])) for i in ("int-A", "int-D")
    }

    overall = (
        human_agreement_table(stored)
        .set_index(["stage", "relation"])
        .loc[("plausibility", "ALL")]
    )
    # hand-computed: Fleiss P-bar = 7/12, P_e = 62/144 -> 11/41; Krippendorff 1 - 11 * 5 / 82
    assert overall["fleiss_kappa"] == pytest.approx(11 / 41)
    assert overall["krippendorff_alpha"] == pytest.approx(27 / 82)
    assert overall["n_items"] == 4 and overall["n_annotators"] == 3


def test_same_annotations_in_a_later_export_keep_their_keys(stage1_file: Path):
    later = json.loads(stage1_file.read_text())
    later[0]["updated_at"] = (
        "2025-04-01T00:00:00.000000Z"  # a task-level change: new file
    )
    rows_before = import_export(stage1_file).rows
    after = import_export(json.dumps(later).encode(), source_name="later.json")
    assert after.source_sha256 != import_export(stage1_file).source_sha256
    assert {r.annotation_key for r in after.rows} == {
        r.annotation_key for r in rows_before
    }


def test_a_revised_annotation_is_a_new_row_and_the_latest_counts(stage1_file: Path):
    original = import_export(stage1_file)
    revised = json.loads(stage1_file.read_text())
    # user 3 changes their "no" on task A to "yes" in Label Studio: same annotation id
    annotation = revised[0]["annotations"][2]
    annotation["result"] = [_result("plausibility", "yes")]
    annotation["updated_at"] = "2025-05-01T00:00:00.000000Z"
    again = import_export(json.dumps(revised).encode())
    new_keys = {r.annotation_key for r in again.rows} - {
        r.annotation_key for r in original.rows
    }
    assert len(new_keys) == 1
    stored = pd.DataFrame(
        [r.model_dump() for r in original.rows + again.rows]
    ).drop_duplicates("annotation_key")
    assert len(stored) == 13
    consensus = human_consensus(stored, "plausibility").set_index("intention_id")
    assert consensus.loc["int-A", "n_ratings"] == 3
    latest = latest_human_labels(stored)
    assert latest.query("intention_id == 'int-A' and annotator == '3'")[
        "label"
    ].tolist() == ["yes"]
    # A is now [3, 0, 0]: P-bar = 3/4, shares 7/12, 4/12, 1/12 -> P_e = 66/144 -> kappa 7/13
    table = human_agreement_table(stored).set_index(["stage", "relation"])
    assert table.loc[("plausibility", "ALL"), "fleiss_kappa"] == pytest.approx(7 / 13)


def test_stage2_ratings(tmp_path: Path):
    path = tmp_path / "stage2.json"
    path.write_text(json.dumps(_export("typicality", STAGE2, 100)))
    imported = import_export(path)
    assert {r.stage for r in imported.rows} == {"typicality"}
    assert sorted(r.label for r in imported.rows if r.intention_id == "int-A") == [
        "3",
        "4",
        "5",
    ]
    stored = pd.DataFrame([r.model_dump() for r in imported.rows])
    consensus = human_consensus(stored, "typicality").set_index("intention_id")[
        "consensus"
    ]
    assert consensus.to_dict() == {"int-A": "4", "int-D": "2"}  # lower medians


def test_unreadable_results_are_skipped_with_reasons():
    tasks = _export("plausibility", {"A": ["yes"]}, 1)
    annotation = tasks[0]["annotations"][0]
    annotation["completed_by"] = {
        "id": 9,
        "email": "ann@example.org",
        "first_name": "",
        "last_name": "",
    }
    annotation["result"] += [
        {
            "value": {"text": ["fine"]},
            "from_name": "comment",
            "to_name": "intention",
            "type": "textarea",
        },
        {**_result("plausibility", "yes"), "value": {"choices": ["yes", "no"]}},
        {**_result("plausibility", "maybe")},
    ]
    no_id = json.loads(json.dumps(tasks[0]))
    no_id["id"] = 2
    del no_id["data"]["intention_id"]
    no_text = json.loads(json.dumps(tasks[0]))
    no_text["id"] = 3
    no_text["data"]["intention"] = " "
    imported = import_export(json.dumps([tasks[0], no_id, no_text]).encode())
    assert [r.annotator for r in imported.rows] == ["ann@example.org"]
    assert len(imported.skipped) == 5
    assert any("unknown control 'comment'" in s for s in imported.skipped)
    assert any("one choice" in s for s in imported.skipped)
    assert any("'maybe'" in s for s in imported.skipped)
    assert any("no intention_id" in s for s in imported.skipped)
    assert any("task 3 " in s and "no intention text" in s for s in imported.skipped)


def test_other_export_formats_are_refused():
    json_min = [
        {
            "id": 1,
            "text": "post",
            "plausible": "yes",
            "annotator": 1,
            "annotation_id": 3,
        }
    ]
    with pytest.raises(ValueError, match="not a Label Studio JSON export"):
        import_export(json.dumps(json_min).encode())


def test_local_files_url(tmp_path: Path):
    image = tmp_path / "mmsd 2" / "img 1.jpg"
    image.parent.mkdir()
    image.touch()
    assert (
        local_files_url(image, tmp_path) == "/data/local-files/?d=mmsd%202/img%201.jpg"
    )
