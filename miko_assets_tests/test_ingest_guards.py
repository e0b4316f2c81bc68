"""Ingestion is idempotent by content, refuses structurally wrong files, and two ingests at once
(on the file and on a DuckLake) add each post once and both report truthfully (issue 15, item 2)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from miko_assets.assets.posts import posts
from miko_assets.cli import main
from miko_assets.devtools.dagster_dev import prepare_workdir, project_env
from miko_assets.ingest.batches import IngestRefused, ingest_file
from miko_assets.partitions import register_batches
from miko_assets.resources import WarehouseResource
from miko_assets.warehouse.location import parse_location
from miko_assets.warehouse.warehouse import Warehouse
from miko_assets_tests.conftest import lake_catalog
from miko_assets_tests.paths import SHARED_DATA

MMSD_TEST = SHARED_DATA / "mmsd" / "valid2_sample.txt"


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def test_the_same_posts_under_another_split_are_reported_not_added(tmp_path: Path) -> None:
    data = tmp_path / "test2.txt"
    shutil.copy(MMSD_TEST, data)
    wh = Warehouse(tmp_path / "w.duckdb")
    first = ingest_file(wh, "mmsd", data)
    assert first.rows_added == first.rows_read > 0

    again = ingest_file(wh, "mmsd", data, split="TEST2")
    assert again.rows_added == 0 and again.new_batches == []
    assert again.rows_in_other_splits == first.rows_read and again.other_splits == ["test"]
    assert wh.rows("SELECT count(*) FROM ingested_posts") == [(first.rows_read,)]

    copy = ingest_file(wh, "mmsd", data, split="TEST2", second_copy=True)
    assert copy.rows_added == first.rows_read and copy.new_batches == ["mmsd-test2-0000"]
    assert ingest_file(wh, "mmsd", data, split="TEST2", second_copy=True).rows_added == 0


def test_rows_ingested_before_content_keys_are_recognised(tmp_path: Path) -> None:
    wh = Warehouse(tmp_path / "w.duckdb")
    data = _jsonl(tmp_path / "p.jsonl", [{"id": "1", "text": "same"}, {"id": "1", "text": "same"}])
    ingest_file(wh, "jsonl", data, split="a")
    wh.execute("UPDATE ingested_posts SET content_key = NULL")
    result = ingest_file(wh, "jsonl", data, split="b")
    assert result.rows_in_other_splits == 2 and result.rows_added == 0


@pytest.mark.parametrize(
    ("format_name", "content", "reason"),
    [
        ("jsonl", "", "is empty"),
        ("csv", "\n  \n", "is empty"),
        ("csv", "id,body\n1,hello\n2,world\n", "no row of .* has usable text"),
        ("csv", '[{"image_id": "1", "text": "a", "label": 0}]', "read no posts"),
        ("jsonl", '{"id": 1, "body": "x"}\nnot json\n', "no row of .* has usable text"),
        ("twitter2015", '{"id": 1, "text": "x"}\n', "not a twitter2015 file"),
        ("mmsd2", "id,text\n1,hello\n", "not a mmsd2 file"),
    ],
)
def test_structurally_wrong_files_are_refused(
    tmp_path: Path, format_name: str, content: str, reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "data.txt"
    path.write_text(content, encoding="utf-8")
    wh = Warehouse(tmp_path / "w.duckdb")
    with pytest.raises(IngestRefused, match=reason):
        ingest_file(wh, format_name, path)
    assert wh.rows("SELECT count(*) FROM ingested_posts") == [(0,)]

    code = main(["--warehouse", str(tmp_path / "w.duckdb"), "ingest", format_name, str(path)])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_broken_rows_are_set_aside_with_reasons_and_the_good_ones_ingested(tmp_path: Path) -> None:
    lines = [json.dumps({"id": str(i), "text": f"good post {i}"}) for i in range(5)]
    lines += ["{not json", '{"id": "x", "body": "no text field"}', "[1, 2]"]
    data = tmp_path / "mixed.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    wh = Warehouse(tmp_path / "w.duckdb")
    result = ingest_file(wh, "jsonl", data, split="train")
    assert result.rows_read == 8 and result.rows_set_aside == 3
    assert sum(result.set_aside_reasons.values()) == 3
    assert any("not valid JSON" in r for r in result.set_aside_reasons)

    (batch,) = result.new_batches
    with dg.instance_for_test() as instance:
        register_batches(instance, wh)
        assert dg.materialize([posts], partition_key=batch, instance=instance,
                              resources={"warehouse": WarehouseResource(path=str(wh.path))}).success
    assert wh.rows("SELECT count(*) FROM posts") == [(5,)]
    assert wh.rows("SELECT count(*) FROM rejected_posts WHERE rejected_part = 'post'") == [(3,)]


def test_cli_prints_the_set_aside_rows_and_only_its_own_partitions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    prepare_workdir(tmp_path)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    data = tmp_path / "mixed.jsonl"
    data.write_text('{"id": "1", "text": "fine"}\n{broken\n', encoding="utf-8")
    assert main(["--warehouse", str(tmp_path / "w.duckdb"), "ingest", "jsonl", str(data)]) == 0
    out = capsys.readouterr().out
    assert "1 of the added rows were set aside" in out and "not valid JSON" in out
    assert out.strip().endswith("new partitions: mixed-all-0000")


def test_two_ingests_at_once_wait_for_each_other_and_report_truthfully(tmp_path: Path) -> None:
    prepare_workdir(tmp_path)
    env = project_env(tmp_path)
    data = _jsonl(tmp_path / "posts.jsonl", [{"id": str(i), "text": f"post number {i}"} for i in range(3000)])
    command = [sys.executable, "-m", "miko_assets.cli", "ingest", "jsonl", str(data), "--batch-size", "500"]
    procs = [subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    _assert_one_added_all(procs, posts=3000, batches=6)
    wh = Warehouse(tmp_path / "warehouse.duckdb")
    assert wh.rows("SELECT count(*), count(DISTINCT row_key) FROM ingested_posts") == [(3000, 3000)]


_OPEN_AT_ONCE = """
import os, sys, time
from miko_assets.instance import open_instance
ready, go = sys.argv[1:3]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.005)
with open_instance() as instance:
    print(len(instance.get_runs()))
"""


def test_commands_opening_a_new_instance_at_once_all_get_it(tmp_path: Path) -> None:
    """Two `miko` commands started together in a fresh project both create the instance's
    SQLite tables unless they take turns; each must get a working instance."""
    prepare_workdir(tmp_path)
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", _OPEN_AT_ONCE, str(tmp_path / f"ready{n}"), str(go)], cwd=tmp_path,
                         env=project_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(4)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{n}").exists() for n in range(4)) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outcomes = [(p.wait(120), p.communicate()) for p in procs]
    assert [(code, out.strip()) for code, (out, _) in outcomes] == [(0, "0")] * 4, [err for _, (_, err) in outcomes]


# `miko <arguments>` started when the test creates the file `go`, so that two start together.
_AT_ONCE = """
import os, sys, time
from miko_assets.cli import main
ready, go = sys.argv[1:3]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.005)
sys.exit(main(sys.argv[3:]))
"""


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.slow)])
def test_two_ingests_at_once_into_a_ducklake_add_each_post_once(kind: str, tmp_path: Path) -> None:
    """On a DuckLake two transactions that only insert never conflict: the ingest ledger's
    update makes the later of two ingests started together run again and find the other's posts."""
    prepare_workdir(tmp_path)
    data = _jsonl(tmp_path / "posts.jsonl", [{"id": str(i), "text": f"post number {i}"} for i in range(600)])
    with lake_catalog(kind, tmp_path) as url:
        lake = str(tmp_path / "lake")
        env = project_env(tmp_path, MIKO_WAREHOUSE_DATA=lake)
        env["MIKO_WAREHOUSE"] = url
        Warehouse(parse_location(url, lake)).ensure_schema()
        go = tmp_path / "go"
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _AT_ONCE, str(tmp_path / f"ready{n}"), str(go),
                 "ingest", "jsonl", str(data), "--batch-size", "200"],
                cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for n in range(2)
        ]
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"ready{n}").exists() for n in range(2)) and time.monotonic() < deadline:
            time.sleep(0.05)
        go.touch()
        _assert_one_added_all(procs, posts=600, batches=3)
        wh = Warehouse(parse_location(url, lake))
        assert wh.rows("SELECT count(*), count(DISTINCT row_key) FROM ingested_posts") == [(600, 600)]
        assert wh.rows("SELECT ingests FROM ingest_ledger") == [(2,)]


def _assert_one_added_all(procs: list[subprocess.Popen], *, posts: int, batches: int) -> None:
    """Both `miko ingest` processes exit 0; one reports adding every post in `batches` new
    partitions, the other adding none and no partitions."""
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
    partitions = [out.strip().splitlines()[-1] for out, _ in outputs]
    expected = "new partitions: " + ", ".join(f"posts-all-{i:04d}" for i in range(batches))
    assert sorted(partitions) == sorted([expected, "new partitions: none"])
    added = sorted(int(out.split(": ")[1].split(" added")[0]) for out, _ in outputs)
    assert added == [0, posts]
