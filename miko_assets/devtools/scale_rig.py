"""What the scale tests and `benchmarks/rehearsal.py` share: synthetic posts, the environment that
points every generation stage at the answer server, process trees, and integrity checks."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from PIL import Image

from miko_assets.devtools.dagster_dev import DagsterUI, project_env
from miko_assets.distill.stages import GENERATION_STAGES
from miko_assets.warehouse.warehouse import Warehouse

DISTILL_ASSETS = ["posts", *GENERATION_STAGES]
MODEL = "gpt-4o-mini"
_SUBJECTS = ("Monday", "the train", "my coffee", "this weather", "the exam", "our team", "the concert",
             "traffic", "the new phone", "my garden", "dinner", "the deadline", "the beach", "homework")
_VERDICTS = ("is just perfect", "made my day", "could not be worse", "again, love it", "is finally here",
             "broke my heart", "was amazing", "ruined everything", "is so relaxing", "never disappoints")
_TAGS = ("#blessed", "#not", "#mondaymood", "#fail", "#win", "#sarcasm", "#happy", "#tired", "", "")
IMAGE_POOL = 64
# What a failure that outlasted its retries may be recorded as, given the answer server's fault kinds.
FAULT_REASONS = {"rate_limited", "server_error", "timeout", "malformed_response", "invalid_output"}


def write_posts(folder: Path, n: int, image_share: float, seed: int = 0, name: str = "synth") -> tuple[Path, Path]:
    """A JSONL file of `n` distinct posts, `image_share` of them with one of a pool of small JPEGs.

    Returns (data file, images folder). Partition keys become `<name>-train-NNNN`.
    """
    rng = random.Random(seed)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for i in range(IMAGE_POOL):
        colour = tuple(rng.randrange(256) for _ in range(3))
        image = Image.new("RGB", (48 + i % 5 * 8, 40), colour)
        image.paste(tuple(255 - c for c in colour), (i % 16, 4, i % 16 + 16, 20))
        image.save(images / f"img{i:03d}.jpg", quality=85)
    data = folder / f"{name}.jsonl"
    with data.open("w", encoding="utf-8") as out:
        for i in range(n):
            record: dict[str, Any] = {
                "id": str(i),
                "text": f"{rng.choice(_SUBJECTS)} {rng.choice(_VERDICTS)} {rng.choice(_TAGS)} (post {i})".replace("  ", " "),
                "label": rng.randrange(2),
            }
            if rng.random() < image_share:
                record["image"] = f"img{rng.randrange(IMAGE_POOL):03d}.jpg"
            out.write(json.dumps(record) + "\n")
    return data, images


def distill_env(workdir: Path, base_url: str, **extra: str) -> dict[str, str]:
    """A project environment whose three generation stages call the OpenAI-compatible `base_url`."""
    stages = {f"MIKO_{stage.upper()}_{key}": value for stage in GENERATION_STAGES
              for key, value in (("PROVIDER", "openai"), ("MODEL", MODEL))}
    return project_env(workdir, MIKO_OPENAI_BASE_URL=base_url, MIKO_OPENAI_TRANSPORT="aiohttp",
                       OPENAI_API_KEY="", **stages, **extra)


def miko(workdir: Path, env: dict[str, str], *args: str, timeout_s: float = 1800) -> subprocess.CompletedProcess[str]:
    """Run a `miko` command in `workdir` (its instance and warehouse)."""
    return subprocess.run([sys.executable, "-m", "miko_assets.cli", *args], cwd=workdir, env=env, check=False,
                          capture_output=True, text=True, timeout=timeout_s)


def ingest(workdir: Path, env: dict[str, str], data: Path, images: Path, batch_size: int,
           warehouse: Warehouse | None = None) -> list[str]:
    """`miko ingest jsonl` the file into partitions of `batch_size`; returns the file's partition keys
    (read from `warehouse`, by default the workdir's file)."""
    done = miko(workdir, env, "ingest", "jsonl", str(data), "--split", "train", "--images", str(images),
                "--batch-size", str(batch_size))
    if done.returncode != 0:
        raise RuntimeError(f"miko ingest failed: {done.stderr[-3000:]}")
    warehouse = warehouse or Warehouse(workdir / "warehouse.duckdb")
    return [b for (b,) in warehouse.rows(
        "SELECT DISTINCT batch FROM ingested_posts WHERE starts_with(batch, ?) ORDER BY batch", [f"{data.stem}-"])]


# -- process trees (Linux /proc) -----------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


def dagster_dev_pid() -> int:
    """The `dagster dev` process this process started (see `dagster_dev.dagster_dev`)."""
    for pid in descendants(os.getpid())[1:]:
        try:
            argv = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"dagster" in argv and b"dev" in argv:
            return pid
    raise LookupError("no dagster dev process below this one")


def run_worker_pids(dev_pid: int) -> list[int]:
    """The run worker processes below `dagster dev`: the code server starts each run in a
    `multiprocessing` spawn child."""
    found = []
    for pid in descendants(dev_pid)[1:]:
        try:
            argv = (Path("/proc") / str(pid) / "cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in argv:
            found.append(pid)
    return found


def rss_bytes(pid: int) -> int:
    """Resident memory of one process (0 once it is gone)."""
    try:
        return int((Path("/proc") / str(pid) / "statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, IndexError, ValueError):
        return 0


def kill_tree(pid: int) -> int:
    """SIGKILL `pid` and its descendants at once (as a crashed machine would stop them).

    `pid` leads its process group (`dagster dev` runs in its own session), so one `killpg`
    reaches every process at the same instant, even one being spawned; returns how many died.
    """
    pids = descendants(pid)
    os.killpg(pid, signal.SIGKILL)
    for target in pids:
        try:
            os.kill(target, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    while any(Path(f"/proc/{p}").exists() and rss_bytes(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return len(pids)


# -- Dagster runs ---------------------------------------------------------------------------

_RUNS = """
query($filter: RunsFilter!, $cursor: String) { runsOrError(filter: $filter, cursor: $cursor, limit: 200) {
  ... on Runs { results {
    runId status creationTime startTime endTime
    stepStats { stepKey status startTime endTime }
    eventConnection { events { __typename ... on MessageEvent { timestamp stepKey message } } }
    assetMaterializations { metadataEntries { label ... on FloatMetadataEntry { floatValue } } }
  } }
} }
"""


def backfill_runs(ui: DagsterUI, backfill_id: str) -> list[dict[str, Any]]:
    """Every run of a backfill with its timings, step stats and materialization metadata, plus
    `launched` / `worker_started` (when it was dequeued, when its worker had loaded the code) and
    `pool_wait_s` (how long its steps waited for a pool slot)."""
    runs: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(10_000):
        page = ui.graphql(_RUNS, {"filter": {"tags": [{"key": "dagster/backfill", "value": backfill_id}]},
                                  "cursor": cursor})["runsOrError"]["results"]
        for run in page:
            events = run.pop("eventConnection")["events"]
            seen = {e["__typename"]: int(e["timestamp"]) / 1000 for e in events
                    if e["__typename"] in ("RunStartingEvent", "RunStartEvent")}
            run["launched"], run["worker_started"] = seen.get("RunStartingEvent"), seen.get("RunStartEvent")
            run["pool_wait_s"] = _pool_wait_s(events)
        runs.extend(page)
        if len(page) < 200:
            break
        cursor = page[-1]["runId"]
    return runs


def _pool_wait_s(events: list[dict[str, Any]]) -> float:
    """Seconds between each step's first "blocked by limit for pool" event and its start."""
    blocked: dict[str, float] = {}
    waited = 0.0
    for event in events:
        step, at = event.get("stepKey"), int(event.get("timestamp") or 0) / 1000
        if event["__typename"] == "EngineEvent" and "blocked by limit for pool" in (event.get("message") or ""):
            blocked.setdefault(step, at)
        elif event["__typename"] == "ExecutionStepStartEvent" and step in blocked:
            waited += at - blocked.pop(step)
    return waited


def overlapping_runs(runs: list[dict[str, Any]]) -> int:
    """The largest number of these runs that were executing at the same moment."""
    edges = sorted([(r["startTime"], 1) for r in runs if r["startTime"]]
                   + [(r["endTime"], -1) for r in runs if r["startTime"] and r["endTime"]])
    peak = current = 0
    for _, step in edges:
        current += step
        peak = max(peak, current)
    return peak


# -- integrity -------------------------------------------------------------------------------


def integrity(warehouse: Warehouse) -> dict[str, int]:
    """Counts that must be zero when every accepted post has one caption, one key-info row and ten
    intentions (and nothing else): posts missing from a stage, duplicated rows, orphan rows."""
    checks = {
        "posts_without_caption": "SELECT count(*) FROM posts p ANTI JOIN captions c USING (batch, post_id)",
        "posts_without_key_info": "SELECT count(*) FROM posts p ANTI JOIN key_info k USING (batch, post_id)",
        "posts_without_ten_intentions": "SELECT count(*) FROM posts p LEFT JOIN (SELECT post_id, count(*) n, "
        "count(DISTINCT relation) r FROM intentions GROUP BY post_id) i USING (post_id) "
        "WHERE coalesce(i.n, 0) <> 10 OR i.r <> 10",
        "duplicate_captions": "SELECT count(*) - count(DISTINCT post_id) FROM captions",
        "duplicate_key_info": "SELECT count(*) - count(DISTINCT post_id) FROM key_info",
        "duplicate_intentions": "SELECT count(*) - count(DISTINCT (post_id, relation)) FROM intentions",
        "orphan_intentions": "SELECT count(*) FROM intentions i ANTI JOIN posts p USING (batch, post_id)",
        "ingested_rows_not_in_posts_or_rejected": "SELECT count(*) FROM ingested_posts g ANTI JOIN posts p "
        "USING (batch, post_id) WHERE g.row_key NOT IN (SELECT row_key FROM rejected_posts)",
    }
    return {name: int(warehouse.rows(sql)[0][0]) for name, sql in checks.items()}


def failures_by_reason(warehouse: Warehouse) -> dict[str, dict[str, int]]:
    """Failed rows of each generation table, and failed LLM calls, by the reason their error starts with."""
    found: dict[str, dict[str, int]] = {}
    for table in ("captions", "key_info", "intentions", "llm_calls"):
        rows = warehouse.rows(
            f"SELECT coalesce(split_part(error, ':', 1), 'no reason'), count(*) FROM {table} "
            "WHERE status = 'failed' GROUP BY 1 ORDER BY 2 DESC"
        )
        if rows:
            found[table] = {reason: int(n) for reason, n in rows}
    return found
