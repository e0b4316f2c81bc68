"""One spending cap shared by runs and processes, kept in the warehouse (issue 15, item 3)."""

from __future__ import annotations

import threading
from pathlib import Path

import dagster as dg
import pytest

from miko_assets.devtools.fake_llm_server import FakeLLMServer
from miko_assets.llm.budget import BudgetLease
from miko_assets.llm.config import RunnerConfig
from miko_assets.llm.models import LLMRequest
from miko_assets.llm.provider_registry import ProviderRegistry
from miko_assets.llm.runner import LLMRunner
from miko_assets.resources import LLMResource
from miko_assets.warehouse.location import parse_location
from miko_assets.warehouse.warehouse import Warehouse
from miko_assets_tests.conftest import Answer, make_provider, request


def _runner(url: str, warehouse: Warehouse, cap: float, group: str | None, name: str | None = None) -> LLMRunner:
    config = RunnerConfig(max_spend_usd=cap, budget_name=name, concurrency=4, flush_interval_s=0.1, max_attempts=1)
    return LLMRunner(ProviderRegistry(env={}, providers=[make_provider("openai", url)]), warehouse,
                     config=config, budget_group=group)


def _requests(prefix: str, n: int) -> list[LLMRequest]:
    return [request("openai", f"{prefix} question {i}") for i in range(n)]


def test_runs_of_one_backfill_share_one_cap(server: tuple[FakeLLMServer, str], warehouse: Warehouse) -> None:
    fake, url = server
    # gpt-4o-mini: a call reserves about $0.00004 (its prompt and 50 output tokens) and costs
    # about $0.000008, so a partition of 20 calls costs about $0.00017: the cap allows about two.
    cap = 0.0004
    results = [
        _runner(url, warehouse, cap, "backfill:b1").run(_requests(f"partition {p}", 20), Answer, dagster_run_id=f"run-{p}")
        for p in range(4)
    ]
    spent = sum(r.summary.cost_usd for r in results)
    refused = sum(r.summary.failures_by_reason.get("budget_exceeded", 0) for r in results)
    assert cap / 2 < spent <= cap
    assert refused > 0 and fake.requests == 80 - refused, "refused calls are never sent"
    assert results[0].summary.failures_by_reason == {}, "the first partition fits whole"
    assert results[-1].summary.succeeded == 0, "the last partition finds the budget spent"
    assert [r.summary.budget_name for r in results] == ["backfill:b1"] * 4
    assert {r.summary.budget_cap_usd for r in results} == {cap}
    assert results[-1].summary.budget_remaining_usd == pytest.approx(cap - spent, abs=1e-9)
    assert warehouse.rows(
        "SELECT count(*) FROM llm_calls WHERE status = 'failed' AND starts_with(error, 'budget_exceeded: ') "
        "AND contains(error, 'budget ''backfill:b1''')"
    ) == [(refused,)]
    assert warehouse.rows("SELECT status, count(*), round(sum(spent_usd), 9) FROM llm_budget_leases GROUP BY 1") == [
        ("closed", 4, round(spent, 9))]

    # Another backfill has a budget of its own; a budget name set for the runs joins them.
    other = _runner(url, warehouse, cap, "backfill:b2").run(_requests("partition 3", 20), Answer, dagster_run_id="x")
    assert other.summary.budget_name == "backfill:b2" and other.summary.failures_by_reason == {}
    named = _runner(url, warehouse, cap, "backfill:b3", name="backfill:b1").run(_requests("later", 3), Answer)
    assert named.summary.budget_name == "backfill:b1" and named.summary.failures_by_reason == {"budget_exceeded": 3}


def test_a_run_outside_a_backfill_has_a_budget_of_its_own(server: tuple[FakeLLMServer, str], warehouse: Warehouse) -> None:
    _, url = server
    runner = _runner(url, warehouse, 0.0001, None)
    first = runner.run(_requests("step one", 20), Answer, dagster_run_id="solo")
    assert first.summary.budget_name == "run:solo" and first.summary.failures_by_reason.get("budget_exceeded")
    # A later step of the run spends from what is left; cached answers take nothing from it.
    later = runner.run(_requests("step two", 3), Answer, dagster_run_id="solo")
    assert later.summary.failures_by_reason == {"budget_exceeded": 3}
    cached = runner.run(_requests("step one", 20)[:2], Answer, dagster_run_id="solo")
    assert cached.summary.cache_hits == 2 and cached.summary.budget_name is None  # no call, no lease
    assert runner.run(_requests("step two", 3), Answer, dagster_run_id="another").summary.failures_by_reason == {}


def test_an_open_lease_holds_its_grant_until_it_closes(warehouse: Warehouse) -> None:
    """A batch whose worker died keeps what it was granted: never more than its calls in flight."""
    crashed = BudgetLease(warehouse, "b", 1.0)
    assert crashed.resize(0.6, 0.0) == pytest.approx(0.6)
    live = BudgetLease(warehouse, "b", 1.0)
    assert live.resize(0.7, 0.0) == pytest.approx(0.4)
    assert live.resize(0.05, 0.05) == pytest.approx(0.05), "a resize gives back what is not needed"
    crashed.close(0.1)
    assert live.resize(2.0, 0.05) == pytest.approx(0.9)
    assert live.remaining_usd() == pytest.approx(0.0)
    assert BudgetLease(warehouse, "c", 1.0).resize(0.3, 0.0) == pytest.approx(0.3), "budgets are separate"


@pytest.mark.parametrize("backend", ["file", "ducklake"])
def test_grants_from_threads_never_exceed_the_cap(backend: str, tmp_path: Path) -> None:
    warehouse = (Warehouse(tmp_path / "w.duckdb") if backend == "file"
                 else Warehouse(parse_location(f"ducklake:sqlite:{tmp_path / 'c.sqlite'}", str(tmp_path / "data"))))
    leases = [BudgetLease(warehouse, "shared", 1.0) for _ in range(4)]

    def grow(lease: BudgetLease) -> None:
        for _ in range(8):
            lease.resize(lease.granted_usd + 0.07, lease.granted_usd)

    threads = [threading.Thread(target=grow, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(lease.granted_usd for lease in leases) == pytest.approx(1.0)
    assert warehouse.rows("SELECT round(sum(granted_usd), 9) FROM llm_budget_leases") == [(1.0,)]


def test_the_runs_of_a_backfill_spend_from_the_backfills_budget() -> None:
    @dg.asset
    def budget_of_this_run(llm: LLMResource) -> str | None:
        return llm.runner(None).budget_group

    for tags, group in (({"dagster/backfill": "abc"}, "backfill:abc"), ({}, None)):
        result = dg.materialize([budget_of_this_run], resources={"llm": LLMResource()}, tags=tags)
        assert result.output_for_node("budget_of_this_run") == group
