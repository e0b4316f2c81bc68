"""Start-up time of `miko` commands, against a bare Python interpreter measured in the same run.

Times `miko ingest --help` and `miko lineage <version id>` (the first intention version in the
warehouse, e.g. the one `miko demo` made) as fresh processes, each `--repeats` times, and
prints the median wall and CPU seconds and the ratio to `python -c pass`.

    python benchmarks/cli_startup.py [--warehouse warehouse.duckdb] [--repeats 5]
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from miko_assets.warehouse.location import default_warehouse_path
from miko_assets.warehouse.warehouse import Warehouse


def timed(command: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds (user + system, the child's) of one run of `command`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warehouse", default=default_warehouse_path())
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not args.warehouse.startswith("ducklake:") and not Path(args.warehouse).is_file():
        sys.exit(f"no warehouse at {args.warehouse}: run `miko demo` first, or pass --warehouse")
    rows = Warehouse(args.warehouse).rows("SELECT version_id FROM intentions ORDER BY version_id LIMIT 1")
    if not rows:
        sys.exit(f"{args.warehouse} has no intentions: run `miko demo` first, or pass --warehouse")
    miko = [sys.executable, "-m", "miko_assets.cli"]
    commands = {
        "python -c pass (baseline)": [sys.executable, "-c", "pass"],
        "miko ingest --help": [*miko, "ingest", "--help"],
        "miko lineage <version id>": [*miko, "--warehouse", args.warehouse, "lineage", rows[0][0]],
    }
    baseline = None
    for label, command in commands.items():
        runs = [timed(command) for _ in range(args.repeats)]
        wall = statistics.median(w for w, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        baseline = baseline or wall
        print(f"{label:<28} {wall:6.2f} s wall  {cpu:6.2f} s CPU  {wall / baseline:5.1f}x the bare interpreter", flush=True)


if __name__ == "__main__":
    main()
