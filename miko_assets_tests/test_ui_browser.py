"""The Dagster UI in headless Chromium: the asset graph shows the assets and a posts partition materializes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from miko_assets_tests.dagster_dev import REPO, dagster_dev, prepare_workdir, project_env

CHROMIUM = shutil.which("chromium")
ARTIFACTS = REPO / "artifacts"

pytestmark = pytest.mark.slow


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1600,1000", "--virtual-time-budget=20000",
    ]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is installed by scripts/bootstrap.sh")
def test_asset_graph_and_posts_materialization_in_browser(tmp_path: Path) -> None:
    prepare_workdir(tmp_path)
    env = project_env(tmp_path)
    ingest = subprocess.run(
        [sys.executable, "-m", "miko_assets.cli", "ingest", "jsonl",
         str(REPO / "miko_assets/sample_data/posts.jsonl"), "--split", "sample", "--batch-size", "12",
         "--images", str(REPO / "miko_assets/sample_data/images")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert ingest.returncode == 0, ingest.stderr
    assert "sample-sample-0000" in ingest.stdout

    with dagster_dev(tmp_path, env) as ui:
        dom = _chromium("--dump-dom", f"{ui.url}/asset-groups", profile=tmp_path / "profile1").stdout
        assert "posts" in dom, dom[-2000:]

        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "ui_asset_graph.png"
        _chromium(f"--screenshot={shot}", f"{ui.url}/asset-groups", profile=tmp_path / "profile2")
        assert shot.exists() and shot.stat().st_size > 10_000

        run_id = ui.launch("distill_job", "sample-sample-0000", ["posts"])
        assert ui.wait_for_run(run_id) == "SUCCESS"

    from miko_assets.warehouse.warehouse import Warehouse

    rows = Warehouse(tmp_path / "warehouse.duckdb").rows(
        "SELECT count(*) FROM posts WHERE batch = 'sample-sample-0000'"
    )
    assert rows[0][0] > 0
