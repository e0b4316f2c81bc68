"""A process killed mid-batch loses only the calls in flight: a re-run makes just the rest."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from miko_assets.devtools.fake_llm_server import FakeLLMServer
from miko_assets.llm.config import RunnerConfig
from miko_assets.llm.models import LLMRequest
from miko_assets.llm.provider_registry import ProviderRegistry
from miko_assets.llm.runner import LLMRunner
from miko_assets.warehouse.warehouse import Warehouse
from miko_assets_tests.conftest import Answer, make_provider, request
from miko_assets_tests.paths import REPO_ROOT

N = 60


def batch() -> list[LLMRequest]:
    return [request("openai", f"kill test {i}") for i in range(N)]


def runner(url: str, db: str) -> LLMRunner:
    config = RunnerConfig(concurrency=4, timeout_s=5, flush_interval_s=0.1)
    return LLMRunner(
        ProviderRegistry(env={}, providers=[make_provider("openai", url)]),
        Warehouse(db),
        config=config,
    )


def child(url: str, db: str) -> None:
    """What the killed process runs: the whole batch, slowly."""
    runner(url, db).run(batch(), Answer)


def test_killed_batch_resumes_with_only_the_missing_calls(tmp_path: Path) -> None:
    fake = FakeLLMServer(latency_ms=100)  # 4 at a time: the batch needs about 1.5 s
    url = fake.start_in_thread()
    db = str(tmp_path / "w.duckdb")
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from miko_assets_tests.test_llm_kill import child; child({url!r}, {db!r})",
            ],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        )
        deadline = time.monotonic() + 60
        while fake.requests < N // 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
        time.sleep(0.25)  # past a flush interval, so finished calls are stored
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        sent_before_kill = fake.requests
        stored = Warehouse(db).rows("SELECT count(*) FROM llm_calls WHERE status = 'ok'")[0][0]
        assert 0 < stored < N and sent_before_kill < N, (stored, sent_before_kill)
        # Lost: the calls in flight (4) and those finished since the last flush (the writer
        # flushes every 0.1 s, 4 calls' worth; allow 0.4 s of them for a loaded machine).
        assert sent_before_kill - stored <= 4 + 16

        result = runner(url, db).run(batch(), Answer)

        assert fake.requests - sent_before_kill == N - stored
        assert result.summary.cache_hits == stored and result.summary.calls_made == N - stored
        assert result.summary.succeeded == N
    finally:
        fake.stop()
