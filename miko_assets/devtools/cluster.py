"""miko as `deploy/cluster/` lays it out across hosts, on one machine, for tests and benchmarks.

`cluster_services(folder)` starts Postgres (Dagster's instance storage and the DuckLake
catalog, two databases) and Redis (Celery broker and result backend), and yields the
environment every host would have. `dagster_cluster(workdir, env, workers)` then starts a code
server, the daemon, the webserver and `workers` `dagster-celery` workers (each standing for a
host) with `deploy/cluster/dagster.yaml`, all on 127.0.0.1, and stops them at the end.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from miko_assets.devtools.dagster_dev import DagsterUI
from miko_assets.devtools.servers import postgres_server, redis_server
from miko_assets.devtools.serving import free_port

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "cluster"
LOCATION = "miko_assets"
_RECEIVED = re.compile(r"Task execute_job\[([0-9a-f-]+)\] received")


@contextmanager
def cluster_services(folder: Path) -> Iterator[dict[str, str]]:
    """Postgres and Redis on 127.0.0.1; yields the settings of deploy/cluster/env.example."""
    with postgres_server(folder / "postgres") as pg, redis_server(folder / "redis") as redis:
        pg.create_database("dagster")
        pg.create_database("miko_lake")
        yield {
            "DAGSTER_PG_HOST": pg.host, "DAGSTER_PG_PORT": str(pg.port), "DAGSTER_PG_USER": pg.user,
            "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": "dagster",
            "CELERY_BROKER_URL": redis.url(0), "CELERY_RESULT_BACKEND": redis.url(1),
            "MIKO_WAREHOUSE": f"ducklake:postgres:{pg.dsn('miko_lake')}",
            "MIKO_WAREHOUSE_DATA": str(folder / "lake_data"),
        }


@dataclass
class Cluster:
    workdir: Path
    env: dict[str, str]
    ui: DagsterUI
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def worker_log(self, name: str) -> str:
        return (self.workdir / f"worker-{name}.log").read_text(errors="replace")

    def tasks_by_worker(self) -> dict[str, set[str]]:
        """The Celery task ids each worker received (from its log)."""
        return {name: set(_RECEIVED.findall(self.worker_log(name))) for name in self.workers}

    def worker_pids(self, name: str) -> list[int]:
        """The worker's processes: `dagster-celery`, the Celery main process and its pool."""
        from miko_assets.devtools.scale_rig import descendants

        return descendants(self.workers[name].pid)


def write_instance(home: Path, workdir: Path, code_port: int, max_runs: int | None = None,
                   llm_pool: int | None = None) -> None:
    """$DAGSTER_HOME with deploy/cluster/dagster.yaml (and other run and `llm` pool limits, if
    given), and a workspace pointing at the code server."""
    home.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    if max_runs is not None or llm_pool is not None:
        config = yaml.safe_load((home / "dagster.yaml").read_text())
        if max_runs is not None:
            config["concurrency"]["runs"]["max_concurrent_runs"] = max_runs
        if llm_pool is not None:
            config["concurrency"]["pools"]["default_limit"] = llm_pool
        (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    workspace = {"load_from": [{"grpc_server": {"host": "127.0.0.1", "port": code_port, "location_name": LOCATION}}]}
    (workdir / "workspace.yaml").write_text(yaml.safe_dump(workspace))


def cluster_env(workdir: Path, base: dict[str, str], services: dict[str, str]) -> dict[str, str]:
    """`base` (a project environment) with the services' settings and this cluster's DAGSTER_HOME."""
    return {**base, **services, "DAGSTER_HOME": str(workdir / "dagster_home")}


@contextmanager
def dagster_cluster(workdir: Path, env: dict[str, str], workers: int = 2, concurrency: int = 2,
                    max_runs: int | None = None, llm_pool: int | None = None,
                    timeout_s: float = 600) -> Iterator[Cluster]:
    """Code server, daemon, webserver and `workers` Celery workers (each running `concurrency`
    runs at once), as on separate hosts."""
    code_port, web_port = free_port(), free_port()
    write_instance(Path(env["DAGSTER_HOME"]), workdir, code_port, max_runs, llm_pool)
    bin_dir = Path(sys.executable).parent
    commands = {
        "code-server": [sys.executable, "-m", "dagster", "api", "grpc", "-h", "127.0.0.1", "-p", str(code_port),
                        "-m", "miko_assets.definitions", "--location-name", LOCATION],
        "daemon": [str(bin_dir / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        "webserver": [str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(web_port), "-w", "workspace.yaml"],
    }
    for n in range(workers):
        name = chr(ord("a") + n)
        commands[f"worker-{name}"] = [
            str(bin_dir / "dagster-celery"), "worker", "start", "-A", "dagster_celery.app", "-y",
            str(DEPLOY / "celery.yaml"), "-q", "dagster", "-n", f"worker-{name}", "-l", "INFO",
            "-i", "miko_assets.definitions",
            "--", f"--concurrency={concurrency}",
        ]
    with ExitStack() as stack:
        procs: dict[str, subprocess.Popen[bytes]] = {}
        for name, argv in commands.items():
            log = stack.enter_context(open(workdir / f"{name}.log", "wb"))
            procs[name] = subprocess.Popen(argv, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
            stack.callback(_stop, procs[name])
            if name == "code-server":  # the others load the code location from it
                _wait_for_port(code_port, procs[name], workdir / f"{name}.log", timeout_s)
        ui = DagsterUI(f"http://127.0.0.1:{web_port}")
        deadline = time.monotonic() + timeout_s
        while not ui.ready():
            for name, proc in procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited: {(workdir / f'{name}.log').read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError("the cluster's webserver did not load the code location")
            time.sleep(1)
        cluster = Cluster(workdir, env, ui, {k.removeprefix("worker-"): p for k, p in procs.items() if k.startswith("worker-")})
        for name in cluster.workers:  # a worker is ready once Celery says so
            _wait_for_log(workdir / f"worker-{name}.log", "ready.", procs[f"worker-{name}"], timeout_s)
        yield cluster


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while True:
        with suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the code server did not start: {log.read_text()[-3000:]}")
        time.sleep(0.5)


def _wait_for_log(log: Path, marker: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while marker not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{log.stem} did not start: {log.read_text()[-3000:]}")
        time.sleep(0.5)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, then SIGKILL what is left of it."""
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
