"""The Dagster UI in headless Chromium: the asset graph shows the assets and a posts partition materializes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from miko_assets.devtools.dagster_dev import (
    dagster_dev,
    prepare_workdir,
    project_env,
)
from miko_assets.warehouse.warehouse import Warehouse
from miko_assets_tests.paths import REPO_ROOT

CHROMIUM = shutil.which("chromium")
ARTIFACTS = REPO_ROOT / "artifacts"
BATCH = "sample-sample-0000"
GROUPS = ("ingest", "distill", "knowledge_base", "annotate", "sarcasm")
ASSETS = (
    "posts", "captions", "key_info", "intentions", "prompt_registry", "knowledge_base", "annotation_tasks",
    "llm_annotations", "human_annotations", "annotation_agreement", "intention_benchmark",
    "sarcasm_dataset", "sarcasm_student",
)

pytestmark = pytest.mark.slow


@pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium is installed by scripts/bootstrap.sh")
def test_asset_graph_and_posts_materialization_in_browser(tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    prepare_workdir(tmp_path)
    env = project_env(tmp_path)
    ingest = subprocess.run(
        [sys.executable, "-m", "miko_assets.cli", "ingest", "jsonl",
         str(REPO_ROOT / "miko_assets/sample_data/posts.jsonl"), "--split", "sample", "--batch-size", "12",
         "--images", str(REPO_ROOT / "miko_assets/sample_data/images")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert ingest.returncode == 0, ingest.stderr
    assert BATCH in ingest.stdout

    ARTIFACTS.mkdir(exist_ok=True)
    with dagster_dev(tmp_path, env) as ui, sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"],
        )
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        page.goto(f"{ui.url}/asset-groups", wait_until="networkidle")
        skip = page.get_by_role("button", name="Skip")
        if skip.count():
            skip.click()
        for group in GROUPS:
            expect(page.get_by_text(group, exact=True).first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "ui_asset_graph.png"))

        page.goto(f"{ui.url}/locations/miko_assets/asset-groups/distill", wait_until="networkidle")
        for asset in ("captions", "key_info", "intentions"):
            expect(page.get_by_text(asset, exact=True).first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "ui_distill_group.png"))

        page.goto(f"{ui.url}/assets", wait_until="networkidle")
        for asset in ASSETS:
            expect(page.get_by_text(asset, exact=True).first).to_be_visible(timeout=30_000)

        # Launch the partition through the UI's own GraphQL endpoint, then watch the run page.
        run_id = ui.launch("distill_job", BATCH, ["posts"])
        assert ui.wait_for_run(run_id) == "SUCCESS"
        page.goto(f"{ui.url}/runs/{run_id}", wait_until="networkidle")
        expect(page.get_by_text("Success").first).to_be_visible(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "ui_posts_run.png"))
        browser.close()

    rows = Warehouse(tmp_path / "warehouse.duckdb").rows("SELECT count(*) FROM posts WHERE batch = ?", [BATCH])
    assert rows[0][0] == 12

    # Run history survives a restart of `dagster dev` (it lives in .dagster_home/, not a temp folder).
    with dagster_dev(tmp_path, env) as ui:
        runs = ui.graphql('{ runsOrError { ... on Runs { results { runId status } } } }')["runsOrError"]["results"]
        assert {"runId": run_id, "status": "SUCCESS"} in runs
