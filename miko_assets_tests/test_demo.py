"""The README's first command, and the package as Dagster deployments install it: the wheel built
from this source, installed (not editable) into a fresh virtual environment, runs `miko demo` from
an empty folder on the embedded defaults; then the source tree's `miko demo` in a folder laid out
like the repository root runs again on the same warehouse, every answer from the call cache (so
the packaged prompts are exactly the repository's) and nothing ingested twice."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from miko_assets.demo import BATCH_STAGES, EXAMPLE_INTENTIONS
from miko_assets.devtools.dagster_dev import prepare_workdir
from miko_assets.distill.relations import RELATIONS
from miko_assets.stages.knowledge_base import intention_quality
from miko_assets.warehouse.warehouse import Warehouse
from miko_assets_tests.paths import REPO_ROOT

pytestmark = pytest.mark.slow

SAMPLE_POSTS = 24
# What the wheel is built from: the package (with its link to prompts/) and the project files.
SOURCES = ("pyproject.toml", "README.md", "miko_assets", "prompts")


def _run(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 1800) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    assert done.returncode == 0, f"{args}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _install_wheel(tmp_path: Path) -> Path:
    """Build the wheel from a copy of the sources and install it into a new venv; its bin folder."""
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        origin = REPO_ROOT / name
        if origin.is_dir():
            shutil.copytree(origin, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(origin, source / name)
    env = _without_project_path()
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
          str(source)], tmp_path, env)
    (wheel,) = (tmp_path / "dist").glob("miko-*.whl")
    # The project's heavy dependencies (torch, llama-cpp) come from the system site-packages.
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(tmp_path / "venv")], tmp_path, env)
    bin_dir = tmp_path / "venv" / "bin"
    _run([str(bin_dir / "python"), "-m", "pip", "install", "-q", str(wheel)], tmp_path, env)
    return bin_dir


def _without_project_path() -> dict[str, str]:
    """The environment with no PYTHONPATH (which points at this source tree), DAGSTER_HOME or
    MIKO_WAREHOUSE (the demo's instance and warehouse are its folder's)."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DAGSTER_HOME", "MIKO_WAREHOUSE")}


def _run_log_messages(home: Path, prefix: str) -> list[str]:
    """The messages starting with `prefix` in the logs of every run of the instance in `home`."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return [event.user_message for run in instance.get_runs() for event in instance.all_logs(run.run_id)
                if event.user_message.startswith(prefix)]


@pytest.mark.timeout(3600)  # a wheel build and two demo runs; several times longer on a busy machine
def test_the_wheel_runs_the_demo_from_an_empty_folder_and_the_source_tree_reuses_its_answers(tmp_path: Path) -> None:
    bin_dir = _install_wheel(tmp_path)
    workdir = tmp_path / "project"
    workdir.mkdir()
    env = _without_project_path()
    located = _run([str(bin_dir / "python"), "-c", "import miko_assets; print(miko_assets.__file__)"], workdir, env)
    assert located.stdout.strip().startswith(str(tmp_path / "venv")), located.stdout
    packaged = bin_dir.parent / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    assert (packaged / "miko_assets" / "prompts" / "stages.yaml").is_file()
    assert (packaged / "miko_assets" / "prompts" / "prices.yaml").is_file()

    first = _run([str(bin_dir / "miko"), "demo"], workdir, env)
    print(first.stdout)  # the story, with its times (shown by `pytest -rP`)
    warehouse = Warehouse(workdir / "warehouse.duckdb")
    assert f"ingested {SAMPLE_POSTS} new posts" in first.stdout
    batches = [b for (b,) in warehouse.rows("SELECT DISTINCT batch FROM ingested_posts ORDER BY 1")]
    assert batches == ["sample-sample-0000", "sample-sample-0001"]
    # The story: each stage with its counts and time, no Dagster event stream.
    for batch in batches:
        for stage in BATCH_STAGES:
            assert re.search(rf"^{stage} \[{batch}\] .* \d+\.\d s$", first.stdout, re.MULTILINE), first.stdout
    assert "FAILED" not in first.stdout and "DEBUG" not in first.stdout + first.stderr
    assert f"warehouse:        {workdir / 'warehouse.duckdb'}" in first.stdout
    assert "open the UI:      dagster dev -m miko_assets.definitions" in first.stdout
    (intention,) = re.findall(r"^how one was made: miko lineage (\S+)$", first.stdout, re.MULTILINE)
    assert warehouse.rows("SELECT status FROM intentions WHERE intention_id = ?", [intention]) == [("ok",)]
    shown = re.findall(r"^    (\w+): (.+)$", first.stdout.split("a few intentions it made:")[1], re.MULTILINE)
    assert len(shown) == EXAMPLE_INTENTIONS and len({relation for relation, _ in shown}) == EXAMPLE_INTENTIONS
    for relation, text in shown:
        made = warehouse.rows("SELECT count(*) FROM intentions WHERE relation = ? AND full_text = ?", [relation, text])
        assert made[0][0] >= 1 or text.endswith("…"), (relation, text)
    # Plain progress lines (stderr is not a terminal): stages done out of the total, rate and time left.
    assert re.search(r"^miko demo: 1/9 stages \(\d+\.\d/(s|min), about .+ left\)", first.stderr, re.MULTILINE), first.stderr

    # Every ingested row is a post or a rejection with a reason; every post has its ten relations.
    posts = warehouse.rows("SELECT count(*) FROM posts")[0][0]
    rejected = warehouse.rows("SELECT count(DISTINCT row_key) FROM rejected_posts WHERE rejected_part = 'post'")[0][0]
    assert posts + rejected == SAMPLE_POSTS and posts > 0
    assert warehouse.rows("SELECT count(*) FROM captions") == [(posts,)]
    assert warehouse.rows("SELECT count(*) FROM key_info") == [(posts,)]
    per_post = warehouse.rows("SELECT count(*), count(DISTINCT relation) FROM intentions GROUP BY post_id")
    assert len(per_post) == posts and set(per_post) == {(len(RELATIONS), len(RELATIONS))}
    # The quality floor (per-relation completion on the embedded model): at least 95% well-formed.
    assert "quality floor of the intentions" in first.stdout
    quality = intention_quality(warehouse).set_index("relation")
    assert quality.loc["ALL", "well_formed"] >= 0.95, quality
    # The long LLM steps told their progress in their runs' own logs (what the UI shows).
    told = _run_log_messages(workdir / ".dagster_home", "intentions: ")
    progress = r"intentions: \d+/\d+ calls \(\d+ from the cache, \d+ failed\), \d+\.\d\d calls/s.*"
    assert any(re.fullmatch(progress, message) for message in told), told[:5]
    calls = warehouse.rows("SELECT count(*) FROM llm_calls")[0][0]

    # The README's first command: the source tree's miko, in a folder laid out like the repository root.
    prepare_workdir(workdir)
    second = _run([sys.executable, "-m", "miko_assets.cli", "demo"], workdir, {**env, "PYTHONPATH": str(REPO_ROOT)})
    print(second.stdout)
    assert f"ingested 0 new posts ({SAMPLE_POSTS} already there)" in second.stdout
    assert warehouse.rows("SELECT count(*) FROM llm_calls") == [(calls,)]
    assert warehouse.rows("SELECT count(*) FROM posts") == [(posts,)]
