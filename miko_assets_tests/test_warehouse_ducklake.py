"""The warehouse on DuckLake: the same `Warehouse` operations as on the file, on a real lake
(a SQLite catalog here; `test_cluster.py` and the Postgres tests below use a real Postgres),
conflicting writers retried, and settings that cannot work refused in one line."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from miko_assets.llm.cache import CallRecord, LLMCallCache
from miko_assets.stages.configuration import (
    ConfigRecord,
    code_location_configs,
    record_code_location,
    record_configs,
    recorded_configs,
)
from miko_assets.warehouse import warehouse as warehouse_module
from miko_assets.warehouse.location import WarehouseConfigError, parse_location, redact
from miko_assets.warehouse.warehouse import Warehouse
from miko_assets_tests.conftest import lake_catalog, lake_warehouse

REPO = Path(__file__).resolve().parents[1]


def _rejected(batch: str, n: int, reason: str = "r") -> pd.DataFrame:
    return pd.DataFrame(
        {"batch": [batch] * n, "row_key": [f"{batch}-{i}" for i in range(n)], "post_id": [f"p{i}" for i in range(n)],
         "rejected_part": ["post"] * n, "reason": [reason] * n}
    )


def _call(call_id: str, status: str, text: str | None = None) -> CallRecord:
    return CallRecord(call_id=call_id, provider="openai", model="m", request_json="{}", response_text=text,
                      status=status, error=None if status == "ok" else "server_error: 500", created_at=datetime(2026, 1, 1))


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    """One lake for the module (attaching costs about a second); each test uses its own keys."""
    yield lake_warehouse(tmp_path_factory.mktemp("lake"))


def test_partition_replace_keeps_history_on_a_lake(lake: Warehouse) -> None:
    assert lake.is_ducklake
    lake.replace_partition("captions", "a-0000", pd.DataFrame(
        {"batch": ["a-0000"] * 2, "post_id": ["p0", "p1"], "description": ["one", "two"], "status": ["ok", "ok"]}))
    lake.replace_partition("captions", "b-0000", pd.DataFrame(
        {"batch": ["b-0000"], "post_id": ["p2"], "description": ["three"], "status": ["ok"]}))
    lake.replace_partition("captions", "a-0000", pd.DataFrame(
        {"batch": ["a-0000"] * 2, "post_id": ["p0", "p1"], "description": ["uno", "dos"], "status": ["ok", "ok"]}),
        replaced_by_run="run-2")
    assert lake.rows("SELECT post_id, description FROM captions ORDER BY post_id") == [("p0", "uno"), ("p1", "dos"), ("p2", "three")]
    assert lake.rows("SELECT description, superseded_by_run FROM captions_history ORDER BY description") == [
        ("one", "run-2"), ("two", "run-2")]


def test_failed_replace_keeps_previous_rows_on_a_lake(lake: Warehouse) -> None:
    lake.replace_partition("rejected_posts", "f-0000", _rejected("f-0000", 3))
    with pytest.raises(ValueError, match="not_a_column"):
        lake.replace_partition("rejected_posts", "f-0000", _rejected("f-0000", 4).assign(not_a_column=1))
    assert lake.rows("SELECT count(*) FROM rejected_posts WHERE batch = 'f-0000'") == [(3,)]


def test_call_cache_upserts_without_keys(lake: Warehouse) -> None:
    """A lake has no primary key: a failed call is replaced, an ok one never, none is doubled."""
    cache = LLMCallCache(lake)
    cache.put_many([_call("c1", "failed"), _call("c2", "ok", "first")])
    cache.put_many([_call("c1", "ok", "retried"), _call("c2", "ok", "second"), _call("c3", "failed")])
    cache.put_many([_call("c3", "failed")])
    assert lake.rows("SELECT call_id, status, response_text FROM llm_calls ORDER BY call_id") == [
        ("c1", "ok", "retried"), ("c2", "ok", "first"), ("c3", "failed", None)]
    assert set(cache.get_many(["c1", "c2", "c3"])) == {"c1", "c2"}


def test_stage_configurations_are_recorded_and_replaced_on_both_backends(lake: Warehouse, tmp_path: Path) -> None:
    """A lake has no key for INSERT OR IGNORE/REPLACE: the first record of a code version stays,
    and the code location's configuration of an asset is replaced."""
    def record(version: str, model: str) -> ConfigRecord:
        return ConfigRecord(asset="intentions", code_version=version, provider="local",
                            model=model, prompt_name="intentions", prompt_version="v3", prompt_sha="sha", params={})

    for wh in (lake, Warehouse(tmp_path / "file.duckdb")):
        record_code_location(wh, [record("cv-config-1", "first")])
        record_configs(wh, [record("cv-config-1", "renamed")])
        record_code_location(wh, [record("cv-config-2", "second")])
        assert recorded_configs(wh, ["cv-config-1", "cv-config-2"])["cv-config-1"].model == "first"
        loaded = code_location_configs(wh)
        assert list(loaded) == ["intentions"] and loaded["intentions"][0].code_version == "cv-config-2"


def test_insert_new_keeps_the_first_row_of_a_key(lake: Warehouse, tmp_path: Path) -> None:
    """The same on both backends."""
    frame = pd.DataFrame({"prompt_sha": ["s1", "s2"], "prompt_name": ["a", "b"], "prompt_version": ["v1", "v1"],
                          "template_json": ["{}", "{}"], "registered_at": [datetime(2026, 1, 1)] * 2})
    for wh in (lake, Warehouse(tmp_path / "file.duckdb")):
        assert wh.insert_new("prompt_registry", frame) == 2
        assert wh.insert_new("prompt_registry", pd.concat([frame, frame.assign(prompt_sha="s3")])) == 1
        assert wh.rows("SELECT count(*), count(DISTINCT prompt_sha) FROM prompt_registry "
                       "WHERE prompt_sha IN ('s1', 's2', 's3')") == [(3, 3)]


_WRITER = textwrap.dedent("""
    import logging, sys
    import pandas as pd
    from miko_assets.warehouse.location import parse_location
    from miko_assets.warehouse.warehouse import Warehouse
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    url, data, worker = sys.argv[1:]
    wh = Warehouse(parse_location(url, data))
    batch = f"b{worker}"
    for round in range(3):
        frame = pd.DataFrame({"batch": [batch] * 20, "row_key": [f"{batch}-{i}" for i in range(20)],
                              "post_id": [f"p{i}" for i in range(20)], "rejected_part": ["post"] * 20,
                              "reason": [f"round {round}"] * 20})
        wh.replace_partitions(batch, {"rejected_posts": frame, "captions": frame[["batch", "post_id"]]})
""")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_concurrent_partition_replaces_conflict_and_are_retried(kind: str, tmp_path: Path) -> None:
    """Three processes replace their partitions of two tables three times each, at once: the
    conflicts DuckLake reports are retried, and every partition ends with exactly its last rows
    and history, never doubled or half-replaced."""
    with lake_catalog(kind, tmp_path) as url:
        data = str(tmp_path / "data")
        Warehouse(parse_location(url, data)).ensure_schema()
        procs = [subprocess.Popen([sys.executable, "-c", _WRITER, url, data, str(w)], cwd=REPO,
                                  stderr=subprocess.PIPE, text=True) for w in range(3)]
        logs = [p.communicate(timeout=300)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * 3, logs
        wh = Warehouse(parse_location(url, data))
        assert wh.rows("SELECT batch, count(*), count(DISTINCT row_key), min(reason), max(reason) FROM rejected_posts "
                       "GROUP BY batch ORDER BY batch") == [(f"b{w}", 20, 20, "round 2", "round 2") for w in range(3)]
        assert wh.rows("SELECT batch, count(*) FROM captions GROUP BY batch ORDER BY batch") == [
            (f"b{w}", 20) for w in range(3)]
        assert wh.rows("SELECT count(*) FROM captions_history") == [(3 * 2 * 20,)]
        assert "s3cret" not in "".join(logs)
    print(f"{kind}: conflicts retried: {sum(log.count('conflicted with another writer') for log in logs)}")


def test_bad_ducklake_urls_are_one_line_errors(tmp_path: Path) -> None:
    for value in ("ducklake:postgress:dbname=x", "ducklake:", "ducklake:sqlite:"):
        with pytest.raises(WarehouseConfigError, match=r"^MIKO_WAREHOUSE=.* is not a DuckLake URL") as err:
            parse_location(value, str(tmp_path))
        assert "\n" not in str(err.value)
    with pytest.raises(WarehouseConfigError, match="^MIKO_WAREHOUSE_DATA is not set"):
        parse_location("ducklake:sqlite:/tmp/x.sqlite", None)


def test_unwritable_data_path_is_refused_before_any_work(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    wh = Warehouse(parse_location(f"ducklake:sqlite:{tmp_path / 'c.sqlite'}", str(blocker / "data")))
    with pytest.raises(WarehouseConfigError, match=r"^MIKO_WAREHOUSE_DATA: cannot write to .*a_file/data") as err:
        wh.ensure_schema()
    assert "\n" not in str(err.value)


def test_missing_extension_package_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "duckdb_extension_ducklake", None)  # as if not installed
    with pytest.raises(WarehouseConfigError, match=r"extension 'ducklake' is missing: pip install 'duckdb-extension-ducklake==1\.5\.5'"):
        lake_warehouse(tmp_path, "fresh").ensure_schema()


def test_a_catalog_from_a_newer_miko_is_refused(tmp_path: Path) -> None:
    lake_warehouse(tmp_path).execute("UPDATE warehouse_info SET value = '99' WHERE key = 'schema_version'")
    warehouse_module._READY_LAKES.clear()
    with pytest.raises(WarehouseConfigError, match=r"^MIKO_WAREHOUSE: ducklake:sqlite:.* was made by miko .*schema 99.*knows schema 1"):
        lake_warehouse(tmp_path).ensure_schema()


def test_passwords_never_show(tmp_path: Path) -> None:
    location = parse_location("ducklake:postgres:dbname=m host=127.0.0.1 port=1 user=u password=s3cret", str(tmp_path))
    assert "s3cret" not in location.describe()
    assert redact("redis://:p4ss@host:6379/0 and password='a b' x") == "redis://:***@host:6379/0 and password=*** x"
    with pytest.raises(WarehouseConfigError) as err:  # nothing listens on port 1
        Warehouse(location).ensure_schema()
    message = str(err.value)
    assert message.startswith("MIKO_WAREHOUSE: cannot open the DuckLake") and "s3cret" not in message
    assert "\n" not in message


@pytest.mark.slow
def test_miko_check_names_each_unreachable_setting_in_one_line(tmp_path: Path) -> None:
    """Nothing listens on port 1: the catalog's Postgres, Dagster's Postgres and Redis are all
    unreachable, and each is one line naming its setting, with no password shown."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "deploy" / "cluster" / "dagster.yaml").read_text())
    env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": "1",
           "DAGSTER_PG_USER": "miko", "DAGSTER_PG_PASSWORD": "s3cret", "DAGSTER_PG_DB": "dagster",
           "CELERY_BROKER_URL": "redis://:s3cret@127.0.0.1:1/0", "CELERY_RESULT_BACKEND": "redis://127.0.0.1:1/1",
           "MIKO_WAREHOUSE": "ducklake:postgres:dbname=lake host=127.0.0.1 port=1 user=miko password=s3cret",
           "MIKO_WAREHOUSE_DATA": str(tmp_path / "data")}
    done = subprocess.run([sys.executable, "-m", "miko_assets.cli", "check"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and all(line.startswith("miko check: error: ") for line in lines), done.stdout
    assert "MIKO_WAREHOUSE: cannot open the DuckLake" in lines[0]
    assert "storage.postgres (DAGSTER_PG_HOST, DAGSTER_PG_PORT" in lines[1] and "Connection refused" in lines[1]
    assert "run_launcher.config.broker (CELERY_BROKER_URL): cannot reach redis://:***@127.0.0.1:1/0" in lines[2]
    assert "s3cret" not in done.stdout + done.stderr
