"""Progress lines of an LLM batch: counts, cache hits, failures, rate and time left, at most every
few seconds or every tenth of the batch; retries and repairs as warnings."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from miko_assets.assets.distill import _generation_asset
from miko_assets.llm.progress import BatchProgress
from miko_assets.resources import LLMResource, WarehouseResource
from miko_assets.stages.versions import current_stage_specs
from miko_assets.warehouse.warehouse import Warehouse
from miko_assets.devtools.fake_llm_server import FakeLLMServer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_every_tenth_or_every_few_seconds_with_rate_and_time_left() -> None:
    clock, infos, warnings = Clock(), [], []
    progress = BatchProgress("intentions", infos.append, warnings.append, every_s=5, clock=clock)
    progress.start(total=100, cache_hits=20)
    assert infos == ["intentions: 100 calls, 20 from the cache, 80 to make"]
    for i in range(9):
        clock.now += 0.5
        progress.call_done(failed=i == 3)
    assert len(infos) == 1  # 9 calls are less than a tenth of 100, in 4.5 s
    clock.now += 0.5
    progress.call_done(failed=False)  # the tenth call: 30/100
    assert infos[-1] == "intentions: 30/100 calls (20 from the cache, 1 failed), 2.00 calls/s, about 35 s left"
    clock.now += 6  # a slow call: the line comes after 5 s, before the next tenth
    progress.call_done(failed=False)
    assert infos[-1].startswith("intentions: 31/100 calls") and len(infos) == 3
    progress.warning("call 1a2b: 429 rate limited; retry 1 in 2.0s")
    assert warnings == ["intentions: call 1a2b: 429 rate limited; retry 1 in 2.0s"]


def test_the_last_call_always_has_its_line() -> None:
    infos: list[str] = []
    progress = BatchProgress("captions", infos.append, infos.append, every_s=60, clock=Clock())
    progress.start(total=3, cache_hits=0)
    for _ in range(3):
        progress.call_done(failed=False)
    assert infos[-1].startswith("captions: 3/3 calls (0 from the cache, 0 failed)") and "left" not in infos[-1]


def test_a_dagster_run_log_tells_the_progress_retries_and_repairs_of_a_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = FakeLLMServer()
    url = fake.start_in_thread()
    try:
        for name, value in {"OPENAI_API_KEY": "sk-test", "MIKO_OPENAI_BASE_URL": f"{url}/v1",
                            "MIKO_INTENTIONS_PROVIDER": "openai", "MIKO_INTENTIONS_MODEL": "gpt-4o-mini",
                            "MIKO_INTENTIONS_PROMPT_VERSION": "v2"}.items():
            monkeypatch.setenv(name, value)
        warehouse = Warehouse(tmp_path / "w.duckdb")
        texts = ["Love Mondays script=fill", "Best train ever script=429,fill", "Sunny again script=bad,fill"]
        warehouse.append("posts", pd.DataFrame({"batch": "p1", "post_id": [f"t:{i}" for i in range(3)], "text": texts}))
        instance = dg.DagsterInstance.ephemeral()
        instance.add_dynamic_partitions("post_batches", ["p1"])
        asset = _generation_asset(current_stage_specs()["intentions"])
        result = dg.materialize([asset], partition_key="p1", instance=instance,
                                resources={"warehouse": WarehouseResource(path=str(warehouse.path)), "llm": LLMResource()})
        assert result.success
        logged = [(e.level, e.user_message) for e in instance.all_logs(result.run_id) if e.user_message.startswith("intentions: ")]
    finally:
        fake.stop()
    infos = [m for level, m in logged if level == logging.INFO]
    warnings = [m for level, m in logged if level == logging.WARNING]
    assert infos[0] == "intentions: 3 calls, 0 from the cache, 3 to make"
    assert infos[-1].startswith("intentions: 3/3 calls (0 from the cache, 0 failed), ") and "calls/s" in infos[-1]
    assert any("Retry-After" in w for w in warnings) and any("retry 1 in" in w for w in warnings)
    assert any("failed validation" in w and "one repair call" in w for w in warnings)
