"""A rehearsal of the paper's scale: N synthetic posts through captions, key info and intentions in
a real `dagster dev` backfill (one run per partition, the instance's run and pool limits), against
the MIKO answer server on 127.0.0.1 with a set latency and fault rate.

It reports wall time, requests/s, orchestration overhead per partition, peak memory, warehouse
size, failures by reason and the row integrity checks. With `--posts` below the paper's 137,287
it extrapolates the wall time linearly, and says so.

    python benchmarks/rehearsal.py --posts 20000 --batch-size 1000 --latency-ms 300 \
        --llm-concurrency 32 --fault-rate 0.02 --json-out artifacts/rehearsal.json

`--cluster` runs the same backfill three times in one go: on the DuckDB file with `dagster dev`
(the baseline), then on the cluster of deploy/cluster/ (DuckLake on Postgres, Celery on Redis,
each on 127.0.0.1) with one worker and with two, each worker taking `--max-runs` runs at once
and the `llm` pool sized to the workers; it reports posts/s of each and the ratios.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import yaml

from miko_assets.clock import utc_now
from miko_assets.devtools.answer_server import (
    AnswerServer,
    ServerOptions,
    answer_server,
)
from miko_assets.devtools.cluster import cluster_env, cluster_services, dagster_cluster
from miko_assets.devtools.dagster_dev import (
    dagster_dev,
    launch_backfill,
    prepare_workdir,
    wait_for_backfill,
)
from miko_assets.devtools.scale_rig import (
    DISTILL_ASSETS,
    backfill_runs,
    dagster_dev_pid,
    descendants,
    distill_env,
    failures_by_reason,
    ingest,
    integrity,
    overlapping_runs,
    rss_bytes,
    write_posts,
)
from miko_assets.warehouse.location import parse_location
from miko_assets.warehouse.warehouse import Warehouse

PAPER_POSTS = 137_287
LLM_STEPS = ("captions", "key_info", "intentions")


@dataclass
class MemorySampler:
    """Samples the resident memory of process trees once a second, from a daemon thread, and
    prints `progress()` once a minute."""

    roots: dict[str, int]
    progress: Callable[[], str]
    peaks: dict[str, int] = field(default_factory=dict)
    peak_process: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _loop(self) -> None:
        started = time.monotonic()
        for second in itertools.count(1):
            if self._stop.wait(1.0):
                return
            if second % 60 == 0:
                print(f"  {time.monotonic() - started:6.0f}s: {self.progress()}", flush=True)
            for name, root in self.roots.items():
                sizes = [rss_bytes(p) for p in descendants(root)]
                self.peaks[name] = max(self.peaks.get(name, 0), sum(sizes))
                self.peak_process = max(self.peak_process, *sizes, 0)


def _seconds(start: float | None, end: float | None) -> float | None:
    return end - start if start is not None and end is not None else None


def _overhead(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the successful partition runs: where a run's time goes from creation to end.

    Orchestration overhead = the worker's start (a process loading the code location) plus the
    run's wall time outside its steps and pool waits. Queue wait (behind the run limit) and pool
    wait (behind the `llm` pool limit) are waiting for capacity, reported apart.
    """
    rows = []
    for run in runs:
        if run["status"] != "SUCCESS" or run["launched"] is None or run["worker_started"] is None:
            continue
        in_steps = sum(_seconds(s["startTime"], s["endTime"]) or 0.0 for s in run["stepStats"])
        in_llm = sum(e.get("floatValue") or 0.0 for m in run["assetMaterializations"]
                     for e in m["metadataEntries"] if e["label"] == "llm_wall_s")
        wall = run["endTime"] - run["startTime"]
        worker_start = run["worker_started"] - run["launched"]
        rows.append({
            "queue_wait_s": run["launched"] - run["creationTime"],
            "worker_start_s": worker_start,
            "pool_wait_s": run["pool_wait_s"],
            "run_wall_s": wall,
            "in_steps_s": in_steps,
            "in_llm_batches_s": in_llm,
            "step_work_outside_llm_s": in_steps - in_llm,
            "orchestration_overhead_s": worker_start + wall - in_steps - run["pool_wait_s"],
        })
    if not rows:
        return {}
    means = {f"mean_{name}": round(statistics.fmean(r[name] for r in rows), 2) for name in rows[0]}
    return {"runs_measured": len(rows), **means}


def _progress(server: AnswerServer) -> str:
    stats = server.stats()
    return f"{stats['requests']} requests, {stats['stages']}"


def _set_limits(workdir: Path, max_runs: int, llm_pool: int) -> None:
    path = workdir / "dagster.yaml"
    config = yaml.safe_load(path.read_text())
    config["concurrency"]["runs"]["max_concurrent_runs"] = max_runs
    config["concurrency"]["pools"]["default_limit"] = llm_pool
    path.write_text(yaml.safe_dump(config, sort_keys=False))


def rehearse(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    prepare_workdir(workdir)
    _set_limits(workdir, args.max_runs, args.llm_pool)
    data, images = write_posts(workdir / "data", args.posts, args.image_share, args.seed, name="rehearsal")
    options = ServerOptions(latency_ms=args.latency_ms, jitter_ms=args.latency_ms / 2, fault_rate=args.fault_rate,
                            seed=args.seed, hang_s=args.timeout_s + 5)
    report: dict[str, Any] = {"started_at": utc_now().isoformat(timespec="seconds"),
                              "settings": {k: v for k, v in vars(args).items() if k not in ("json_out", "workdir")}}
    with answer_server(options) as server:
        env = distill_env(workdir, server.base_url, MIKO_LLM_CONCURRENCY=str(args.llm_concurrency),
                          MIKO_LLM_TIMEOUT_S=str(args.timeout_s))
        t0 = time.perf_counter()
        batches = ingest(workdir, env, data, images, args.batch_size)
        report["ingest_s"] = round(time.perf_counter() - t0, 1)
        print(f"ingested {args.posts} posts into {len(batches)} partitions in {report['ingest_s']}s", flush=True)
        with dagster_dev(workdir, env) as ui, MemorySampler(
            {"dagster": dagster_dev_pid(), "server": server.process.pid}, lambda: _progress(server)
        ) as memory:
            t0 = time.perf_counter()
            backfill = launch_backfill(ui, DISTILL_ASSETS, batches)
            status = wait_for_backfill(ui, backfill, timeout_s=args.max_hours * 3600)
            wall = time.perf_counter() - t0
            runs = backfill_runs(ui, backfill)
        stats = server.stats()

    warehouse = Warehouse(workdir / "warehouse.duckdb")
    calls = dict(warehouse.rows("SELECT stage, count(*) FROM llm_calls GROUP BY stage"))
    tokens = warehouse.rows("SELECT sum(tokens_in), sum(tokens_out), sum(cost_usd) FROM llm_calls")[0]
    tables = {t: int(warehouse.rows(f"SELECT count(*) FROM {t}")[0][0])
              for t in ("posts", "rejected_posts", "captions", "key_info", "intentions", "llm_calls")}
    scale = PAPER_POSTS / args.posts
    report.update({
        "posts": args.posts,
        "partitions": len(batches),
        "backfill_status": status,
        "runs_by_status": dict(Counter(r["status"] for r in runs)),
        "most_runs_at_once": overlapping_runs(runs),
        "backfill_wall_s": round(wall, 1),
        "server_requests": stats["requests"],
        "requests_per_s": round(stats["requests"] / wall, 1),
        "posts_per_s": round(args.posts / wall, 2),
        "llm_calls_by_stage": calls,
        "tokens_in": int(tokens[0] or 0),
        "tokens_out": int(tokens[1] or 0),
        "cost_usd_at_list_price": round(float(tokens[2] or 0.0), 2),
        "server_faults": stats["faults"],
        "answered_more_than_once": stats["answered_more_than_once"],
        "overhead_per_partition": _overhead(runs),
        # How much of the backfill the `llm` pool's slots spent running LLM steps.
        "llm_pool_busy_share": round(sum(
            _seconds(s["startTime"], s["endTime"]) or 0.0 for r in runs for s in r["stepStats"]
            if s["stepKey"] in LLM_STEPS) / (wall * args.llm_pool), 2),
        "peak_rss_mb": {name: round(b / 2**20) for name, b in memory.peaks.items()},
        "peak_single_process_rss_mb": round(memory.peak_process / 2**20),
        "warehouse_mb": round((workdir / "warehouse.duckdb").stat().st_size / 2**20, 1),
        "rows": tables,
        "failures_by_reason": failures_by_reason(warehouse),
        "integrity": integrity(warehouse),
        "extrapolation": {
            "factor": round(scale, 3),
            "note": "linear in posts: partitions are independent and the backfill runs at a steady state",
            "paper_scale_wall_h": round(wall * scale / 3600, 2),
            "paper_scale_requests": round(stats["requests"] * scale),
            "paper_scale_warehouse_gb": round((workdir / "warehouse.duckdb").stat().st_size * scale / 2**30, 2),
        } if args.posts != PAPER_POSTS else None,
    })
    return report


def rehearse_cluster(args: argparse.Namespace, workdir: Path, workers: int) -> dict[str, Any]:
    """The same backfill on `workers` Celery workers, a DuckLake on Postgres and Dagster on Postgres."""
    workdir.mkdir(parents=True)
    data, images = write_posts(workdir / "data", args.posts, args.image_share, args.seed, name="rehearsal")
    options = ServerOptions(latency_ms=args.latency_ms, jitter_ms=args.latency_ms / 2, fault_rate=args.fault_rate,
                            seed=args.seed, hang_s=args.timeout_s + 5)
    with cluster_services(workdir / "services") as services, answer_server(options) as server:
        base = distill_env(workdir, server.base_url, MIKO_LLM_CONCURRENCY=str(args.llm_concurrency),
                           MIKO_LLM_TIMEOUT_S=str(args.timeout_s))
        env = cluster_env(workdir, base, services)
        warehouse = Warehouse(parse_location(env["MIKO_WAREHOUSE"], env["MIKO_WAREHOUSE_DATA"]))
        slots = workers * args.max_runs
        with dagster_cluster(workdir, env, workers=workers, concurrency=args.max_runs, max_runs=slots,
                             llm_pool=slots) as cluster:
            t0 = time.perf_counter()  # ingest needs the cluster's instance for its partitions
            batches = ingest(workdir, env, data, images, args.batch_size, warehouse=warehouse)
            ingest_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            backfill = launch_backfill(cluster.ui, DISTILL_ASSETS, batches)
            status = wait_for_backfill(cluster.ui, backfill, timeout_s=args.max_hours * 3600)
            wall = time.perf_counter() - t0
            runs = backfill_runs(cluster.ui, backfill)
            by_worker = {name: len(tasks) for name, tasks in cluster.tasks_by_worker().items()}
        stats = server.stats()
        return {
            "workers": workers,
            "runs_at_once_per_worker": args.max_runs,
            "ingest_s": round(ingest_s, 1),
            "backfill_status": status,
            "runs_by_status": dict(Counter(r["status"] for r in runs)),
            "runs_by_worker": by_worker,
            "most_runs_at_once": overlapping_runs(runs),
            "backfill_wall_s": round(wall, 1),
            "posts_per_s": round(args.posts / wall, 2),
            "requests_per_s": round(stats["requests"] / wall, 1),
            "overhead_per_partition": _overhead(runs),
            "integrity": integrity(warehouse),
        }


def compare(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """The file baseline, then one and two Celery workers, on the same posts and answer server settings."""
    (workdir / "file").mkdir()
    file_run = rehearse(args, workdir / "file")
    one, two = (rehearse_cluster(args, workdir / f"cluster{n}", n) for n in (1, 2))
    return {
        "settings": file_run["settings"],
        "file": {k: file_run[k] for k in ("backfill_status", "backfill_wall_s", "posts_per_s", "requests_per_s",
                                           "most_runs_at_once", "overhead_per_partition", "integrity")},
        "cluster_1_worker": one,
        "cluster_2_workers": two,
        "two_workers_over_one": round(two["posts_per_s"] / one["posts_per_s"], 2),
        "one_worker_over_file": round(one["posts_per_s"] / file_run["posts_per_s"], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=PAPER_POSTS)
    parser.add_argument("--batch-size", type=int, default=1000, help="posts per partition (one run each)")
    parser.add_argument("--image-share", type=float, default=0.6, help="share of posts with an image")
    parser.add_argument("--latency-ms", type=float, default=300.0, help="server latency per answer (+-50%% jitter)")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="share of attempts that fail")
    parser.add_argument("--llm-concurrency", type=int, default=32, help="MIKO_LLM_CONCURRENCY: calls in flight per step")
    parser.add_argument("--timeout-s", type=float, default=10.0, help="MIKO_LLM_TIMEOUT_S")
    parser.add_argument("--max-runs", type=int, default=4, help="runs at once (dagster.yaml max_concurrent_runs)")
    parser.add_argument("--llm-pool", type=int, default=2, help="steps at once in pool llm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-hours", type=float, default=12.0)
    parser.add_argument("--workdir", type=Path, default=None, help="keep everything here (default: a temp dir)")
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--cluster", action="store_true",
                        help="compare the file with one and two Celery workers on a DuckLake (--max-runs per worker)")
    args = parser.parse_args()
    run = compare if args.cluster else rehearse
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=False)
        report = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="miko-rehearsal-") as tmp:
            report = run(args, Path(tmp))
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(text + "\n")


if __name__ == "__main__":
    main()
