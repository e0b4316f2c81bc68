"""The annotation issue end to end: Dagster assets over a real warehouse and instance, the `miko
annotate` commands, the embedded model as judge and as benchmark generator.

The batch is two posts of MIKO's release, ingested with the real loader; their intentions are the
release's own (inserted as `ok` rows), so the release's accept bits are human labels for them.
"""

from __future__ import annotations

import hashlib
import json
import math
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from miko_assets.annotate.benchmark_metrics import BERTSCORE_F1, BLEU1, BLEU2, ROUGE_L, default_bertscore
from miko_assets.annotate.labelstudio import FROM_NAMES
from miko_assets.annotate.miko_release import read_release
from miko_assets.annotate.models import intention_text_sha
from miko_assets.annotate.report import human_agreement_table, human_consensus
from miko_assets.assets.annotate import (
    annotation_agreement,
    annotation_tasks_asset,
    human_annotations,
    intention_benchmark_asset,
    llm_annotations_asset,
)
from miko_assets.assets.posts import posts
from miko_assets.cli import main as miko
from miko_assets.distill.config import stage_config
from miko_assets.distill.relations import RELATION_NAMES, RELATIONS_BY_NAME
from miko_assets.ingest.batches import ingest_file
from miko_assets.instance import open_instance
from miko_assets.llm.models import LLMRequest, LLMResponse
from miko_assets.partitions import register_batches
from miko_assets.resources import LLMResource, WarehouseResource
from miko_assets.stages.annotation import SamplingConfig, read_human_annotations, read_tasks
from miko_assets.stages.benchmark import BenchmarkConfig, Generator, benchmark_posts, score_generations
from miko_assets.stages.common import StageRun, Validator
from miko_assets.stages.human_annotations import import_file
from miko_assets.stages.intentions import intention_id
from miko_assets.stages.judging import JudgeSpec, judge_tasks
from miko_assets.warehouse.schema import INTENTIONS
from miko_assets.warehouse.warehouse import Warehouse
from miko_assets_tests.label_studio_rig import label_studio
from miko_assets_tests.paths import SHARED_DATA

RELEASE = SHARED_DATA / "miko_release" / "train.json"
RELATIONS = ("xWant", "oEffect", "xReact", "Open")
SAMPLING = SamplingConfig(share=0.5, seed=7)  # one of the two intentions per relation: 4 tasks
# per exported task, in export order: three annotators' stage-1 labels (as in the hand-computed
# case of test_annotate_labelstudio: Fleiss 11/41, Krippendorff 27/82)
STAGE1 = [["yes", "yes", "no"], ["no", "no", "no"], ["yes", "unsure", "no"], ["yes", "yes", "yes"]]
STAGE1_MAJORITY = ["yes", "no", None, "yes"]


@dataclass
class Project:
    root: Path
    warehouse: Warehouse
    batch: str
    release_slice: Path

    @property
    def resources(self) -> dict:
        return {"warehouse": WarehouseResource(path=str(self.warehouse.path)), "llm": LLMResource()}

    def cli(self, *args: str) -> None:
        assert miko(["--warehouse", str(self.warehouse.path), *args]) == 0

    def materialize(self, assets: list, partition: str | None = None) -> dg.ExecuteInProcessResult:
        with open_instance() as instance:  # the instance `miko` commands record their imports in
            result = dg.materialize(assets, partition_key=partition, instance=instance, resources=self.resources)
        assert result.success
        return result


def _intention_rows(release_slice: Path, batch: str) -> pd.DataFrame:
    now = datetime(2025, 1, 1)
    rows = [
        {
            "batch": batch, "post_id": item.post_id, "intention_id": intention_id(item.post_id, item.relation),
            "relation": item.relation, "relation_index": RELATIONS_BY_NAME[item.relation].number,
            "prefix": RELATIONS_BY_NAME[item.relation].prefix, "completion": item.intention,
            "full_text": item.intention, "kept_prefix": True, "provider": "miko-release",
            "model": "released", "code_version": "miko-release", "created_at": now, "status": "ok",
        }
        for item in read_release(release_slice).intentions
        if item.relation in RELATIONS
    ]
    return pd.DataFrame(rows).reindex(columns=INTENTIONS.column_names)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    release_slice = tmp_path / "miko_release" / "train.json"
    release_slice.parent.mkdir()
    release_slice.write_text(json.dumps(json.loads(RELEASE.read_text())[:2]))
    warehouse = Warehouse(tmp_path / "warehouse.duckdb")
    (batch,) = ingest_file(warehouse, "miko_release", release_slice).new_batches
    project = Project(tmp_path, warehouse, batch, release_slice)
    with open_instance() as instance:
        register_batches(instance, warehouse)
    project.materialize([posts], batch)
    warehouse.replace_partition("intentions", batch, _intention_rows(release_slice, batch))
    return project


def _labelstudio_export(tasks: list[dict], labels: list[list[str]]) -> list[dict]:
    """What Label Studio's JSON export holds after users 1-3 annotated the imported tasks."""
    exported, annotation_id = [], 100
    for task_id, (task, task_labels) in enumerate(zip(tasks, labels, strict=True), start=1):
        annotations = []
        for user, label in enumerate(task_labels, start=1):
            annotation_id += 1
            annotations.append({
                "id": annotation_id, "completed_by": user, "was_cancelled": False, "ground_truth": False,
                "result": [{
                    "value": {"choices": [label]}, "id": f"r{annotation_id}", "from_name": FROM_NAMES["plausibility"],
                    "to_name": "intention", "type": "choices", "origin": "manual",
                }],
                "created_at": "2025-03-01T10:00:00.000000Z", "updated_at": "2025-03-01T10:05:00.000000Z",
                "lead_time": 9.1, "task": task_id, "project": 3,
            })
        exported.append({
            "id": task_id, "data": task["data"], "annotations": annotations, "predictions": [], "drafts": [],
            "meta": {}, "project": 3, "total_annotations": len(annotations), "cancelled_annotations": 0,
            "created_at": "2025-03-01T09:00:00.000000Z", "updated_at": "2025-03-01T10:05:00.000000Z",
        })
    return exported


def _judge_saying_no(requests: Sequence[LLMRequest], validate: Validator | None = None) -> list[LLMResponse]:
    """A completer whose judge finds every intention implausible."""
    answer = '{"label": "no", "reason": "fake"}'
    return [LLMResponse(call_id=f"fake-{i}", status="ok", text=answer) for i in range(len(requests))]


def _import_materializations() -> list[dg.AssetMaterialization]:
    with open_instance() as instance:
        records = instance.fetch_materializations(dg.AssetKey("human_annotations"), limit=20, ascending=True).records
    return [r.asset_materialization for r in records]


def test_label_studio_round_trip_three_annotators_imported_twice(project: Project) -> None:
    project.materialize([annotation_tasks_asset(SAMPLING)], project.batch)
    tasks = project.warehouse.query("SELECT * FROM annotation_tasks ORDER BY intention_id")
    assert sorted(tasks["relation"]) == sorted(RELATIONS)
    assert tasks["post_text"].notna().all() and (tasks["share"] == 0.5).all()

    out = project.root / "labelstudio"
    project.cli("annotate", "export", "--batch", project.batch, "--out", str(out))
    exported = json.loads((out / "plausibility-tasks.json").read_text())
    assert [t["data"]["intention_id"] for t in exported] == list(tasks["intention_id"])
    assert ET.fromstring((out / "plausibility-config.xml").read_text()).find("Choices").get("name") == "plausible"

    export_file = project.root / "project-3-at-2025-03-01.json"
    export_file.write_bytes(json.dumps(_labelstudio_export(exported, STAGE1)).encode())
    project.cli("annotate", "import", str(export_file))
    project.cli("annotate", "import", str(export_file))

    wh = project.warehouse
    assert wh.rows("SELECT count(*), count(DISTINCT annotator) FROM human_annotations") == [(12, 3)]
    assert wh.rows("SELECT rows_read, rows_added FROM annotation_imports ORDER BY imported_at") == [(12, 12), (12, 0)]
    sha = hashlib.sha256(export_file.read_bytes()).hexdigest()
    recorded = _import_materializations()
    assert [m.metadata["rows_added"].value for m in recorded] == [12, 0]
    assert all(m.metadata["source_sha256"].value == sha for m in recorded)
    assert recorded[-1].metadata["source_path"].value == str(export_file.resolve())

    human = read_human_annotations(wh)
    majority = human_consensus(human, "plausibility").set_index("intention_id")["consensus"]
    assert [majority[i] for i in tasks["intention_id"]] == STAGE1_MAJORITY
    overall = human_agreement_table(human).set_index(["stage", "relation"]).loc[("plausibility", "ALL")]
    assert overall["fleiss_kappa"] == pytest.approx(11 / 41)
    assert overall["krippendorff_alpha"] == pytest.approx(27 / 82)

    # stage 2: only the intentions the human majority found plausible
    project.cli("annotate", "export", "--stage", "typicality", "--out", str(out))
    stage2 = json.loads((out / "typicality-tasks.json").read_text())
    plausible = [i for i, m in zip(tasks["intention_id"], STAGE1_MAJORITY) if m == "yes"]
    assert [t["data"]["intention_id"] for t in stage2] == plausible
    assert ET.fromstring((out / "typicality-config.xml").read_text()).find("Rating").get("maxRating") == "5"

    # the last plausible task is regenerated: its labels are about the old text, so stage 2 leaves
    # it out and a judge of the new text is not compared with them
    regenerated = plausible[-1]
    wh.execute("UPDATE annotation_tasks SET intention = 'PersonX wants anew.' WHERE intention_id = ?", [regenerated])
    project.cli("annotate", "export", "--stage", "typicality", "--out", str(out))
    stage2 = json.loads((out / "typicality-tasks.json").read_text())
    assert [t["data"]["intention_id"] for t in stage2] == plausible[:-1]
    spec = JudgeSpec.from_env()
    judged = judge_tasks(
        read_tasks(wh), {s: StageRun.start(c, None) for s, c in spec.configs.items()},
        {s: _judge_saying_no for s in spec.configs},
    )
    wh.replace_partition("llm_annotations", project.batch, judged)
    # rows stored before the text sha existed get it when their file is read again
    wh.execute("UPDATE human_annotations SET intention_text_sha = NULL")

    # the asset reads the known files again (nothing new) and the report stores its tables
    result = project.materialize([human_annotations, annotation_agreement])
    assert result.asset_materializations_for_node("human_annotations")[0].metadata["rows_added"].value == 0
    assert wh.rows("SELECT count(*) FROM human_annotations WHERE intention_text_sha IS NULL") == [(0,)]
    # judged and compared: the first task (majority yes) and the second (no); the third is tied
    judge_vs_human = wh.rows(
        "SELECT n, n_failed, tp, fp, fn, tn FROM annotation_agreement_judges "
        "WHERE stage = 'plausibility' AND relation = 'ALL'"
    )
    assert judge_vs_human == [(2, 0, 0, 0, 1, 1)]
    stored = wh.rows(
        "SELECT fleiss_kappa, krippendorff_alpha FROM annotation_agreement_humans "
        "WHERE stage = 'plausibility' AND relation = 'ALL'"
    )
    assert stored == [(pytest.approx(11 / 41), pytest.approx(27 / 82))]
    plot = result.asset_materializations_for_node("annotation_agreement")[0].metadata["plot"].value
    assert plot.startswith("![") and "data:image/png;base64," in plot


def test_miko_release_import_matches_a_direct_count(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    wh_path = str(tmp_path / "warehouse.duckdb")
    assert miko(["--warehouse", wh_path, "annotate", "import-miko-release", str(RELEASE)]) == 0
    assert miko(["--warehouse", wh_path, "annotate", "import-miko-release", str(RELEASE)]) == 0  # adds nothing

    total, accepted = Counter(), Counter()
    for record in json.loads(RELEASE.read_text()):
        for number, (relation, label) in enumerate(zip(RELATION_NAMES, record["intention_labels"]), start=1):
            if (record["intentions"].get(f"Intention {number}") or "").strip():
                total[relation] += 1
                accepted[relation] += label
    stored = Warehouse(wh_path).rows(
        "SELECT relation, count(*), count(*) FILTER (WHERE label = 'accept') FROM human_annotations "
        "WHERE annotator LIKE 'miko-release%' AND stage = 'plausibility' GROUP BY relation"
    )
    assert {r: (n, a) for r, n, a in stored} == {r: (total[r], accepted[r]) for r in RELATION_NAMES}
    recorded = _import_materializations()
    assert [m.metadata["rows_added"].value for m in recorded] == [sum(total.values()), 0]
    assert recorded[0].metadata["source_sha256"].value == hashlib.sha256(RELEASE.read_bytes()).hexdigest()


@pytest.mark.slow
def test_embedded_model_judges_a_batch_and_agreement_uses_the_imported_labels(project: Project) -> None:
    import_file(project.warehouse, "miko_release", project.release_slice)
    spec = JudgeSpec.from_env()
    result = project.materialize([annotation_tasks_asset(SAMPLING), llm_annotations_asset(spec)], project.batch)
    assert result.asset_materializations_for_node("llm_annotations")[0].metadata["tasks"].value == 4

    wh = project.warehouse
    tasks = set(wh.query("SELECT intention_id FROM annotation_tasks")["intention_id"])
    judged = wh.query("SELECT * FROM llm_annotations ORDER BY intention_id, stage")
    plausibility = judged[judged["stage"] == "plausibility"]
    assert set(plausibility["intention_id"]) == tasks and len(plausibility) == len(tasks)
    for row in judged.to_dict("records"):
        if row["status"] == "ok":
            assert row["label"] in ({"yes", "no", "unsure"} if row["stage"] == "plausibility" else set("12345"))
        else:
            assert row["status"] == "failed" and row["error"]
        assert row["llm_call_id"] and row["dagster_run_id"] and row["code_version"] == spec.code_version
        config = spec.configs[row["stage"]]
        assert (row["provider"], row["model"], row["prompt_version"]) == (config.provider, config.model, config.prompt_version)
        assert row["prompt_sha"] == config.prompt().sha
    task_texts = wh.rows("SELECT intention_id, intention FROM annotation_tasks")
    text_sha = {i: intention_text_sha(text) for i, text in task_texts}
    assert [text_sha[i] for i in judged["intention_id"]] == list(judged["intention_text_sha"])
    said_yes = set(plausibility.loc[plausibility["label"] == "yes", "intention_id"])
    assert set(judged.loc[judged["stage"] == "typicality", "intention_id"]) == said_yes
    calls = set(wh.query("SELECT call_id FROM llm_calls WHERE stage LIKE 'judge_%'")["call_id"])
    assert set(judged["llm_call_id"]) <= calls

    report = project.materialize([annotation_agreement])
    judge = spec.configs["plausibility"]
    overall = wh.query(
        "SELECT * FROM annotation_agreement_judges WHERE stage = 'plausibility' AND relation = 'ALL'"
    ).iloc[0]
    assert overall["judge_model"] == f"{judge.provider}/{judge.model}"
    assert overall["n"] + overall["n_failed"] == len(tasks)  # every task has a release label
    assert 0 <= overall["accuracy"] <= 1 or overall["n"] == 0
    assert "judge_agreement" in report.asset_materializations_for_node("annotation_agreement")[0].metadata


@pytest.mark.slow
def test_benchmark_runs_the_embedded_generator_on_a_slice(project: Project) -> None:
    generator = Generator(stage_config("intentions"))
    config = BenchmarkConfig(release_path=RELEASE, posts=2, generators=(generator,))
    result = project.materialize([intention_benchmark_asset(config)])
    metadata = result.asset_materializations_for_node("intention_benchmark")[0].metadata
    assert metadata["posts"].value == 2 and metadata["plot"].value.startswith("![")

    wh = project.warehouse
    n_references = sum(len(p.references) for p in benchmark_posts(RELEASE, 2))
    items = wh.query("SELECT * FROM benchmark_items")
    assert len(items) == n_references
    assert items["llm_call_id"].notna().all()
    assert (items["status"].eq("ok") | items["error"].notna()).all()
    overall = wh.query("SELECT * FROM benchmark_results WHERE relation = 'ALL'")
    assert len(overall) == 1 and overall.loc[0, "rank"] == 1
    assert overall.loc[0, "generator"] == generator.name
    assert overall.loc[0, "prompt_sha"] == generator.config.prompt().sha
    for column in ("bleu1", "bleu2", "rouge_l", "bertscore_f1"):
        assert 0 <= overall.loc[0, column] <= 1
    assert overall.loc[0, "bertscore_model"] == "all-MiniLM-L6-v2 (layer 6)"
    assert (items["bertscore_model"] == "all-MiniLM-L6-v2 (layer 6)").all()


def test_release_intentions_scored_against_themselves_are_perfect() -> None:
    generator = Generator(stage_config("intentions"))
    rows = [
        {**generator.columns(), "post_id": post.post_id, "relation": relation, "hypothesis": references[0],
         "references_json": json.dumps(list(references)), "llm_call_id": None, "status": "ok", "error": None}
        for post in benchmark_posts(RELEASE, 5)
        for relation, references in post.references.items()
    ]
    scores = score_generations(pd.DataFrame(rows), default_bertscore(), None)
    (board,) = scores.leaderboard.to_dict("records")
    assert board["n_items"] == len(rows) and board["n_relations"] == 10
    for metric in (BLEU1, BLEU2, ROUGE_L):
        assert board[metric] == pytest.approx(1.0)
    assert board[BERTSCORE_F1] == pytest.approx(1.0, abs=1e-5)
    assert not any(math.isnan(v) for v in scores.results["bertscore_f1"])


@pytest.mark.slow
def test_a_real_label_studio_round_trip_with_three_annotators(project: Project) -> None:
    """miko's tasks and labelling config into a running Label Studio through its SDK, three users'
    choices submitted there, Label Studio's own JSON export back through `miko annotate import`."""
    project.materialize([annotation_tasks_asset(SAMPLING)], project.batch)
    out = project.root / "labelstudio"
    project.cli("annotate", "export", "--batch", project.batch, "--out", str(out))
    exported = json.loads((out / "plausibility-tasks.json").read_text())
    labels = {t["data"]["intention_id"]: task_labels for t, task_labels in zip(exported, STAGE1, strict=True)}
    export_file = project.root / "label-studio-export.json"

    (project.root / "ls-data").mkdir()
    with label_studio(project.root / "ls-data") as server:
        made = server.run_client({
            "title": "miko plausibility", "config": (out / "plausibility-config.xml").read_text(),
            "tasks": exported, "from_name": FROM_NAMES["plausibility"],
            "annotators": ["ann1@miko.test", "ann2@miko.test", "ann3@miko.test"], "labels": labels,
            "export_path": str(export_file),
        })
    assert made["annotations"] == 12

    project.cli("annotate", "import", str(export_file))
    wh = project.warehouse
    assert wh.rows("SELECT count(*), count(DISTINCT annotator) FROM human_annotations") == [(12, 3)]
    assert {a for (a,) in wh.rows("SELECT DISTINCT annotator FROM human_annotations")} == {str(u) for u in made["users"]}
    project.materialize([human_annotations, annotation_agreement])
    majority = human_consensus(read_human_annotations(wh), "plausibility").set_index("intention_id")["consensus"]
    assert [majority[t["data"]["intention_id"]] for t in exported] == STAGE1_MAJORITY
    stored = wh.rows(
        "SELECT fleiss_kappa, krippendorff_alpha FROM annotation_agreement_humans "
        "WHERE stage = 'plausibility' AND relation = 'ALL'"
    )
    assert stored == [(pytest.approx(11 / 41), pytest.approx(27 / 82))]
