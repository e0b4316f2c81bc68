"""One spending cap held across processes through the warehouse (issue 15, item 3): real Dagster
runs of the distill job in two processes against a real OpenAI-compatible server, and grants
from several processes on the DuckDB file and on a DuckLake (SQLite and Postgres catalogs)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from miko_assets.devtools.answer_server import answer_server
from miko_assets.devtools.dagster_dev import REPO, prepare_workdir
from miko_assets.devtools.scale_rig import distill_env, ingest, write_posts
from miko_assets.warehouse.location import parse_location
from miko_assets.warehouse.warehouse import Warehouse
from miko_assets_tests.conftest import lake_catalog

pytestmark = pytest.mark.slow

# Runs distill_job for each partition in argv as runs of backfill `argv[1]`, under the cap in
# the file `argv[2]`. With `--calibrate P` it first runs partition P uncapped, outside the
# backfill, and writes 2.2 times what P cost as the cap; without, it waits for that file.
_RUNS = textwrap.dedent("""
    import json, os, sys, time
    from miko_assets.definitions import defs
    from miko_assets.instance import open_instance
    from miko_assets.warehouse.warehouse import Warehouse

    backfill, cap_file, *partitions = sys.argv[1:]
    job = defs.resolve_job_def("distill_job")
    with open_instance() as instance:
        if partitions[0] == "--calibrate":
            run = job.execute_in_process(partition_key=partitions[1], instance=instance)
            cost = Warehouse(os.environ["MIKO_WAREHOUSE"]).rows(
                "SELECT sum(cost_usd) FROM llm_calls WHERE dagster_run_id = ?", [run.run_id])[0][0]
            print(json.dumps({"partition_cost_usd": cost}), flush=True)
            with open(cap_file + ".tmp", "w") as out:
                out.write(repr(2.2 * cost))
            os.rename(cap_file + ".tmp", cap_file)
            partitions = partitions[2:]
        while not os.path.exists(cap_file):
            time.sleep(0.2)
        os.environ["MIKO_MAX_SPEND_USD"] = open(cap_file).read()
        for partition in partitions:
            run = job.execute_in_process(partition_key=partition, instance=instance, raise_on_error=False,
                                         tags={"dagster/backfill": backfill})
            remaining = [event.materialization.metadata["llm_budget_remaining_usd"].value
                         for event in run.get_asset_materialization_events()
                         if "llm_budget_remaining_usd" in event.materialization.metadata]
            print(json.dumps({"partition": partition, "run_id": run.run_id, "success": run.success,
                              "remaining": remaining}), flush=True)
""")


def test_the_runs_of_a_backfill_in_two_processes_share_one_cap(tmp_path: Path) -> None:
    """Four partitions, run two by two in two processes at once, under a cap of about two
    partitions' worth: the spend stays under the cap, and the calls that did not fit are
    recorded as `budget_exceeded` and never sent."""
    prepare_workdir(tmp_path)
    cap_file = tmp_path / "cap"
    with answer_server() as server:
        # One call per post per stage (the answer server writes the one-call answers); the
        # token limits let the server's whole answers through, as a real model's would be cut.
        env = distill_env(tmp_path, server.base_url, MIKO_LLM_CONCURRENCY="4",
                          MIKO_KEY_INFO_PROMPT_VERSION="v2", MIKO_INTENTIONS_PROMPT_VERSION="v2",
                          MIKO_KEY_INFO_MAX_TOKENS="200", MIKO_INTENTIONS_MAX_TOKENS="300")
        data, images = write_posts(tmp_path / "data", 30, image_share=0.0, seed=4, name="capped")
        calibration, *partitions = ingest(tmp_path, env, data, images, batch_size=6)
        assert len(partitions) == 4
        workers = [
            subprocess.Popen([sys.executable, "-c", _RUNS, "bf-1", str(cap_file), *args], cwd=tmp_path, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for args in (["--calibrate", calibration, *partitions[:2]], partitions[2:])
        ]
        try:
            outputs = [worker.communicate(timeout=600) for worker in workers]
        finally:
            for worker in workers:
                worker.kill()
        assert [w.returncode for w in workers] == [0, 0], [err[-3000:] for _, err in outputs]
        stats = server.stats()

    reports = [json.loads(line) for out, _ in outputs for line in out.splitlines() if line.startswith("{")]
    per_partition = reports[0]["partition_cost_usd"]
    runs = reports[1:]
    cap = float(cap_file.read_text())
    assert per_partition > 0 and len(runs) == 4 and all(r["success"] for r in runs)
    warehouse = Warehouse(tmp_path / "warehouse.duckdb")
    run_ids = [r["run_id"] for r in runs]
    spent, refused = warehouse.rows(
        "SELECT sum(cost_usd), count(*) FILTER (WHERE starts_with(error, 'budget_exceeded: ')) FROM llm_calls "
        "WHERE list_contains(?, dagster_run_id)", [run_ids])[0]
    assert spent <= cap, f"the backfill spent ${spent:.6f}, over its ${cap:.6f} cap"
    assert spent >= 1.2 * per_partition, "the cap is one budget for the backfill, not wasted"
    assert refused > 0
    not_made = warehouse.rows(
        "SELECT count(*) FROM (SELECT error, dagster_run_id FROM key_info UNION ALL "
        "SELECT error, dagster_run_id FROM intentions) WHERE contains(error, 'budget_exceeded') "
        "AND list_contains(?, dagster_run_id)", [run_ids])[0][0]
    assert not_made > 0, "the posts the budget did not cover are rows with the reason"
    assert stats["answered"] == warehouse.rows("SELECT count(*) FROM llm_calls WHERE attempts > 0")[0][0], (
        "no refused call reached the server")
    assert warehouse.rows("SELECT DISTINCT budget_name, status FROM llm_budget_leases WHERE budget_name LIKE "
                          "'backfill:%'") == [("backfill:bf-1", "closed")]
    leases_spent = warehouse.rows("SELECT sum(spent_usd) FROM llm_budget_leases WHERE budget_name = 'backfill:bf-1'")
    assert leases_spent[0][0] == pytest.approx(spent, abs=1e-9), "the budget's ledger holds what the calls cost"
    # A run reports what was left when it ended, other processes' open grants held back; the
    # last report is made once every lease has closed, so it shows exactly the cap less the spend.
    remaining = [value for r in runs for value in r["remaining"] if value is not None]
    assert remaining and all(0 <= value <= cap for value in remaining)
    assert pytest.approx(cap - spent, abs=1e-9) in remaining
    print(f"one partition ${per_partition:.6f}, cap ${cap:.6f}, spent ${spent:.6f}, {refused} calls refused")


# Asks each of 12 budgets (cap $0.1) for $0.06 in turn, so that processes started together
# compete for the last of each budget. Once imported it makes the file `argv[4]` and starts
# when the file `argv[3]` exists.
_GRANTS = textwrap.dedent("""
    import os, sys, time
    from miko_assets.llm.budget import BudgetLease
    from miko_assets.warehouse.location import parse_location
    from miko_assets.warehouse.warehouse import Warehouse

    url, data, go, ready = sys.argv[1:]
    warehouse = Warehouse(parse_location(url, data or None))
    open(ready, "w").close()
    while not os.path.exists(go):
        time.sleep(0.01)
    for budget in range(12):
        BudgetLease(warehouse, f"b{budget}", 0.1).resize(0.06, 0.0)
""")


@contextmanager
def _location(backend: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    data = str(tmp_path / "data")
    if backend == "file":
        yield str(tmp_path / "w.duckdb"), ""
    else:
        with lake_catalog(backend.removeprefix("ducklake-"), tmp_path) as url:
            yield url, data


@pytest.mark.parametrize("backend", ["file", "ducklake-sqlite", "ducklake-postgres"])
def test_grants_from_processes_at_once_never_exceed_the_cap(backend: str, tmp_path: Path) -> None:
    """On a Postgres-catalogued DuckLake two inserts into one table do not conflict: only
    updates of the lease rows make concurrent grants retry instead of both taking the rest."""
    go = tmp_path / "go"
    with _location(backend, tmp_path) as (url, data):
        Warehouse(parse_location(url, data or None)).ensure_schema()
        ready = [tmp_path / f"ready{n}" for n in range(3)]
        procs = [subprocess.Popen([sys.executable, "-c", _GRANTS, url, data, str(go), str(path)], cwd=REPO,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for path in ready]
        deadline = time.monotonic() + 120
        while not all(path.exists() for path in ready) and time.monotonic() < deadline:
            time.sleep(0.05)
        go.touch()
        outputs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0] * 3, [err[-3000:] for _, err in outputs]
        granted = Warehouse(parse_location(url, data or None)).rows(
            "SELECT budget_name, round(sum(granted_usd), 9) FROM llm_budget_leases GROUP BY 1 ORDER BY 1")
    assert sorted(granted) == sorted((f"b{budget}", 0.1) for budget in range(12))
