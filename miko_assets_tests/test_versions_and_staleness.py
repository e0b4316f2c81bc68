"""Every intention version addressable by its own id; stale partitions explained in words; one
configuration for `miko stale`, whatever the shell's environment; the backfill plan."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from miko_assets.distill.relations import RELATION_NAMES
from miko_assets.llm.models import LLMRequest, LLMResponse
from miko_assets.stages.common import StageRun, Validator
from miko_assets.stages.configuration import (
    active_configuration, config_record, record_code_location, record_configs,
)
from miko_assets.stages.intentions import intention_rows
from miko_assets.stages.knowledge_base import (
    export_knowledge_base, intention_quality, overall_statistics, relation_statistics,
)
from miko_assets.stages.staleness import backfill_plan, stale_backfill_plan, stale_report
from miko_assets.stages.versions import current_stage_specs
from miko_assets.warehouse.lineage import UnknownIntention, diff_markdown, intention_card, intention_diff
from miko_assets.warehouse.schema import INTENTIONS, SCHEMA
from miko_assets.warehouse.warehouse import Warehouse
from miko_assets_tests.conftest import HEAVY_MODULES, lake_warehouse, miko_imports

BATCH = "b-0000"
COOLER = {"MIKO_INTENTIONS_TEMPERATURE": "0.1"}


def _answering(tag: str):
    """A completer answering every post with ten intentions that start with `tag` (one JSON
    answer, or one continuation per relation)."""

    def complete(requests: Sequence[LLMRequest], validate: Validator | None = None) -> list[LLMResponse]:
        answer = json.dumps({name: f"{tag} thing {i}" for i, name in enumerate(RELATION_NAMES)})
        return [
            LLMResponse(call_id=r.cache_key(), status="ok",
                        text=f" {tag} thing {i % len(RELATION_NAMES)}." if r.continuation else answer)
            for i, r in enumerate(requests)
        ]

    return complete


def _posts() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    posts = pd.DataFrame([{"batch": BATCH, "post_id": "t:1", "text": "waiting for the bus in the rain"}])
    empty = pd.DataFrame(columns=["post_id", "caption_id", "description", "status"])
    return posts, empty, pd.DataFrame(columns=["post_id", "key_info_id", "status"])


def _materialize(wh: Warehouse, env: dict[str, str], run_id: str, tag: str) -> pd.DataFrame:
    """What the intentions asset does for one partition under the configuration `env` gives."""
    spec = current_stage_specs(env)["intentions"]
    record_configs(wh, [config_record(spec, env)])
    rows = intention_rows(*_posts(), StageRun.start(spec.config, run_id, spec.code_version), _answering(tag))
    wh.replace_partition("intentions", BATCH, rows, replaced_by_run=run_id, unchanged_key=("intention_id", "llm_call_id"))
    return rows


@pytest.fixture(params=["file", "lake"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Warehouse:
    """The same checks on the DuckDB file and on a DuckLake (SQLite catalog)."""
    return Warehouse(tmp_path / "w.duckdb") if request.param == "file" else lake_warehouse(tmp_path)


def test_every_version_has_its_own_id_and_a_card_saying_what_replaced_it(backend: Warehouse) -> None:
    wh = backend
    old = _materialize(wh, {}, "run-1", "warm")
    assert all(v.startswith(f"{i}.") for i, v in zip(old["intention_id"], old["version_id"]))
    assert old["version_id"].is_unique
    # The same generation made again keeps its version id and adds no history.
    again = _materialize(wh, {}, "run-1b", "warm")
    assert list(again["version_id"]) == list(old["version_id"])
    assert wh.rows("SELECT count(*) FROM intentions_history") == [(0,)]

    new = _materialize(wh, COOLER, "run-2", "cool")
    intention_id, old_version, new_version = old.loc[0, "intention_id"], old.loc[0, "version_id"], new.loc[0, "version_id"]
    assert old_version != new_version

    newest = intention_card(wh, intention_id)
    assert newest["version_id"] == new_version and newest["intention"]["version_state"] == "current"
    assert [v["version_id"] for v in newest["other_versions"]] == [old_version]

    card = intention_card(wh, old_version)
    assert card["version_id"] == old_version and card["intention"]["version_state"] == "history"
    assert card["intention"]["completion"] == "warm thing 0"
    assert card["generation"]["dagster_run_id"] == "run-1b" and card["generation"]["raw_answer"] is None  # no llm_calls row here
    assert card["superseded"]["superseded_by_run"] == "run-2"
    assert card["replaced_by"]["version_id"] == new_version
    assert card["replaced_by"]["why"] == ["temperature 0.3 → 0.1"]

    diff = intention_diff(wh, old_version)
    assert (diff["from"]["version_id"], diff["to"]["version_id"]) == (old_version, new_version)
    assert diff["why"] == ["temperature 0.3 → 0.1"]
    changed = {field for field, _, _ in diff["changes"]}
    assert {"intention.completion", "generation.code_version", "version_id"} <= changed
    assert "post.text" not in changed
    assert "temperature 0.3 → 0.1" in diff_markdown(diff)
    # An intention id alone compares its newest version with the one before.
    assert intention_diff(wh, intention_id)["from"]["version_id"] == old_version

    with pytest.raises(UnknownIntention, match=f"has no version '{intention_id}.nope'; its versions: {new_version}, {old_version}"):
        intention_card(wh, f"{intention_id}.nope")


def test_miko_lineage_by_version_and_diff(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from miko_assets.cli import main

    wh = Warehouse(tmp_path / "w.duckdb")
    old = _materialize(wh, {}, "run-1", "warm")
    _materialize(wh, COOLER, "run-2", "cool")
    old_version = old.loc[0, "version_id"]
    assert main(["--warehouse", str(wh.path), "lineage", old_version]) == 0
    out = capsys.readouterr().out
    assert f"version {old_version}" in out and "why: temperature 0.3 → 0.1" in out
    assert main(["--warehouse", str(wh.path), "lineage", old.loc[0, "intention_id"], "--diff"]) == 0
    out = capsys.readouterr().out
    assert "why: temperature 0.3 → 0.1" in out and "'warm thing 0' → 'cool thing 0'" in out


def test_miko_lineage_loads_neither_dagster_nor_the_llm_layer(tmp_path: Path) -> None:
    """It answers in well under a second from the command line only if it imports little."""
    wh = Warehouse(tmp_path / "w.duckdb")
    old = _materialize(wh, {}, "run-1", "warm")
    _materialize(wh, COOLER, "run-2", "cool")
    intention_id, old_version = old.loc[0, "intention_id"], old.loc[0, "version_id"]
    base = ["--warehouse", str(wh.path), "lineage"]
    codes, modules, printed = miko_imports(
        [[*base, intention_id], [*base, old_version, "--json"], [*base, intention_id, "--diff"]], tmp_path
    )
    assert codes == [0, 0, 0] and f'"version_id": "{old_version}"' in printed, printed
    assert not modules & {*HEAVY_MODULES, "miko_assets.llm.runner", "miko_assets.stages.versions"}


def test_rows_from_before_version_ids_get_one_when_the_column_is_added(tmp_path: Path) -> None:
    path = tmp_path / "old.duckdb"
    columns = [(n, t) for n, t in INTENTIONS.columns if n != "version_id"]
    with duckdb.connect(str(path)) as con:
        con.execute(f"CREATE SCHEMA {SCHEMA}")
        con.execute(f"CREATE TABLE {SCHEMA}.intentions ({', '.join(f'{n} {t}' for n, t in columns)})")
        con.execute(f"INSERT INTO {SCHEMA}.intentions (batch, intention_id, code_version, status) VALUES ('b', 'abc', 'v1', 'ok')")
    wh = Warehouse(path)
    (version,) = wh.rows("SELECT version_id FROM intentions")[0]
    assert version.startswith("abc.old") and intention_card(wh, version)["version_id"] == version


def test_stale_partitions_say_what_changed_in_words(backend: Warehouse) -> None:
    wh = backend
    _materialize(wh, {}, "run-1", "warm")
    current = config_record(current_stage_specs(COOLER)["intentions"], COOLER)
    [partition] = stale_report(wh, current)
    assert partition.batch == BATCH and partition.why == ("temperature 0.3 → 0.1",)
    assert "MIKO_INTENTIONS_TEMPERATURE=0.1" in current.overrides_in_words()
    # A code version nobody recorded is still explained by what its string shows.
    wh.execute("DELETE FROM stage_configs")
    [partition] = stale_report(wh, current)
    assert partition.why == (f"parameters (by hash: the old values were not recorded) {partition.made_by[0].split('|')[2]} → "
                             f"{current.code_version.split('|')[2]}",)


def test_miko_stale_judges_by_the_code_locations_configuration_whatever_the_shell_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from miko_assets.cli import main

    wh = Warehouse(tmp_path / "w.duckdb")
    _materialize(wh, {}, "run-1", "warm")
    for name in COOLER:
        monkeypatch.delenv(name, raising=False)
    # Before any code location recorded its configuration, the shell's own is used, and says so.
    assert main(["--warehouse", str(wh.path), "stale"]) == 0
    out = capsys.readouterr().out
    assert "this shell's prompts folder and environment" in out and BATCH not in out

    # `dagster dev` loaded the cooler configuration; this shell has no override.
    location = {asset: config_record(spec, COOLER) for asset, spec in current_stage_specs(COOLER).items()}
    record_code_location(wh, location.values())
    active = active_configuration(wh, current_stage_specs({}), {})
    assert active.records["intentions"].code_version == location["intentions"].code_version
    assert active.shell_differs == {"intentions": ["temperature 0.1 → 0.3"]}
    assert main(["--warehouse", str(wh.path), "stale"]) == 0
    out = capsys.readouterr().out
    assert "the code location (dagster dev) loaded" in out
    assert f"  {BATCH}: made by" in out and "what changed: temperature 0.3 → 0.1" in out
    assert "environment overrides: MIKO_INTENTIONS_TEMPERATURE=0.1" in out
    assert "this shell would use another configuration: temperature 0.1 → 0.3" in out
    assert main(["--warehouse", str(wh.path), "backfill", "--stale", "--dry-run"]) == 0
    assert f"intentions: 1 partition(s): {BATCH}" in capsys.readouterr().out
    # The same plan goes to the batch route (`--batch`), which prices the partitions' posts first:
    # these scripted rows have none, and it says so in one line (test_batch_backfill runs the route).
    assert main(["--warehouse", str(wh.path), "backfill", "--stale", "--batch", "--dry-run"]) == 2
    assert f"no posts in partitions {BATCH}: materialize `posts` first" in capsys.readouterr().err


def test_backfill_plan_takes_the_stale_partitions_and_the_same_partitions_downstream(tmp_path: Path) -> None:
    stale = {"captions": [], "key_info": ["p1"], "intentions": ["p2"]}
    assert backfill_plan(stale, ["captions", "key_info", "intentions"]) == {"key_info": ["p1"], "intentions": ["p1", "p2"]}
    assert backfill_plan(stale, ["intentions"]) == {"intentions": ["p2"]}
    assert backfill_plan(stale, ["key_info"]) == {"key_info": ["p1"], "intentions": ["p1"]}
    assert backfill_plan({"captions": ["p3"]}, ["captions"]) == {"captions": ["p3"], "key_info": ["p3"], "intentions": ["p3"]}
    with pytest.raises(ValueError, match="unknown asset posts"):
        stale_backfill_plan(Warehouse(tmp_path / "w.duckdb"), {}, ["posts"])


def test_lineage_job_fails_with_one_line_for_an_unknown_id_and_shows_the_card_in_its_output(tmp_path: Path) -> None:
    import dagster as dg

    from miko_assets.assets.knowledge_base import lineage_job
    from miko_assets.resources import WarehouseResource

    wh = Warehouse(tmp_path / "w.duckdb")
    rows = _materialize(wh, {}, "run-1", "warm")
    resources = {"warehouse": WarehouseResource(path=str(wh.path))}

    def run(asked: str) -> dg.ExecuteInProcessResult:
        return lineage_job.execute_in_process(
            run_config={"ops": {"intention_lineage": {"config": {"intention_id": asked}}}},
            resources=resources, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False,
        )

    failed = run("nope")
    assert not failed.success
    [failure] = [e for e in failed.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_failure_data.user_failure_data.description == "no intention with id 'nope' (current or history)"

    done = run(rows.loc[0, "version_id"])
    assert done.success
    [output] = [e for e in done.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT]
    metadata = output.step_output_data.metadata
    assert metadata["version_id"].value == rows.loc[0, "version_id"]
    assert metadata["intention"].value.endswith("warm thing 0")
    assert "## Generation" in metadata["lineage"].value


def test_the_knowledge_base_plot_draws_no_empty_panel() -> None:
    from miko_assets.stages.knowledge_base import plot_panels, plot_statistics

    stats = pd.DataFrame({"relation": list(RELATION_NAMES), "intentions": [3] * 10, "mean_words": [4.0] * 10,
                          "distinct_tail_ratio": [1.0] * 10, "prefix_adherence": [0.0] * 10})
    shown, omitted = plot_panels(stats)
    assert [c for c, _ in shown] == ["intentions", "mean_words", "distinct_tail_ratio"] and omitted == ["prefix adherence"]
    assert plot_statistics(stats).startswith(b"\x89PNG")



def test_one_backfill_of_exactly_the_planned_partitions_is_requested_in_the_instance(tmp_path: Path) -> None:
    import dagster as dg

    from miko_assets.assets.staleness import stale_backfill_job
    from miko_assets.backfills import launch_asset_backfill
    from miko_assets.definitions import defs
    from miko_assets.resources import WarehouseResource

    wh = Warehouse(tmp_path / "w.duckdb")
    _materialize(wh, COOLER, "run-1", "cool")  # stale for the code location's configuration (no override)
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        instance.add_dynamic_partitions("post_batches", [BATCH, "b-0001", "b-0002"])
        plan = {"key_info": ["b-0001"], "intentions": [BATCH, "b-0001"]}
        backfill_id = launch_asset_backfill(instance, defs, plan, title="stale partitions", tags={"miko/reason": "stale"})
        backfill = instance.get_backfill(backfill_id)
        assert backfill.status == dg._core.execution.backfill.BulkActionStatus.REQUESTED
        assert backfill.tags == {"miko/reason": "stale"}
        target = backfill.asset_backfill_data.target_subset
        requested = {(key.to_user_string(), partition) for key, partition in target.iterate_asset_partitions()}
        assert requested == {("key_info", "b-0001"), ("intentions", BATCH), ("intentions", "b-0001")}

        # The same action from the UI: the job sees the stale partitions under its own configuration.
        result = stale_backfill_job.execute_in_process(
            instance=instance, resources={"warehouse": WarehouseResource(path=str(wh.path))},
            run_config={"ops": {"launch_stale_backfill": {"config": {"assets": ["intentions"]}}}},
        )
        assert result.success
        [output] = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT]
        metadata = output.step_output_data.metadata
        assert metadata["partitions"].value == {"intentions": [BATCH]}
        launched = instance.get_backfill(metadata["backfill_id"].value)
        assert {(k.to_user_string(), p) for k, p in launched.asset_backfill_data.target_subset.iterate_asset_partitions()} == {
            ("intentions", BATCH)}


def test_cards_show_image_paths_relative_to_the_image_folder_given_at_ingest(tmp_path: Path) -> None:
    from miko_assets.ingest.batches import ingest_file
    from miko_assets.warehouse.lineage import card_markdown

    folder = tmp_path / "images"
    (folder / "a").mkdir(parents=True)
    (folder / "a" / "cup.jpg").write_bytes(b"not read here")
    data = tmp_path / "posts.jsonl"
    data.write_text(json.dumps({"id": "1", "text": "waiting for the bus in the rain", "image": "a/cup.jpg"}) + "\n")
    wh = Warehouse(tmp_path / "w.duckdb")
    ingest_file(wh, "jsonl", data, split="train", images_dir=folder)
    [(post_id, batch, image_path, root)] = wh.rows("SELECT post_id, batch, image_path, image_root FROM ingested_posts")
    assert image_path == str(folder / "a" / "cup.jpg") and root == str(folder)
    wh.append("posts", pd.DataFrame([{"batch": batch, "post_id": post_id, "text": "waiting", "image_path": image_path,
                                      "image_root": root}]))
    wh.append("intentions", pd.DataFrame([{"batch": batch, "post_id": post_id, "intention_id": "i1", "version_id": "i1.x", "status": "ok"}]))
    card = intention_card(wh, "i1")
    assert (card["post"]["image_path"], card["post"]["images_dir"]) == ("a/cup.jpg", str(folder))
    assert f"- image: a/cup.jpg in {folder}" in card_markdown(card)


def test_knowledge_base_statistics_and_export_are_the_same_on_a_lake_and_on_the_file(tmp_path: Path) -> None:
    made = {}
    for name, wh in (("file", Warehouse(tmp_path / "w.duckdb")), ("lake", lake_warehouse(tmp_path))):
        posts = _posts()[0].assign(dataset="t", split="test")
        wh.replace_partition("posts", BATCH, posts, replaced_by_run="run-0")
        _materialize(wh, {}, "run-1", "warm")
        _materialize(wh, COOLER, "run-2", "cool")
        paths = export_knowledge_base(wh, tmp_path / f"export-{name}")
        made[name] = {
            # Rounded: the two engines may sum floats in another order.
            "relations": relation_statistics(wh).round(9).to_dict("records"),
            "overall": overall_statistics(wh),
            "quality": intention_quality(wh).round(9).to_dict("records"),
            "stale": stale_report(wh, config_record(current_stage_specs({})["intentions"], {})),
            "tsv": paths["tsv"].read_text(),
            # All but the line saying when it was exported.
            "card": [line for line in paths["card"].read_text().splitlines() if not line.startswith("Exported ")],
            "jsonl": sorted(json.loads(line)["tail"] for line in paths["jsonl"].read_text().splitlines()),
        }
    assert made["file"]["overall"]["intentions"] == 10 and made["file"]["jsonl"][0].startswith("cool thing")
    assert [p.why for p in made["file"]["stale"]] == [("temperature 0.1 → 0.3",)]
    assert made["lake"] == made["file"]
