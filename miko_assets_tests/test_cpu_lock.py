"""The machine-wide lock makes processes take turns on the cores."""

import subprocess
import sys
import time
from pathlib import Path

from miko_assets.cpu_lock import exclusive_cores, lock_path

HOLD = """
import sys, time
from pathlib import Path
from miko_assets.cpu_lock import exclusive_cores
with exclusive_cores(Path(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(1.0)
"""


def _holder(lock: Path) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    return holder


def test_a_second_process_waits_until_the_first_releases(tmp_path: Path) -> None:
    lock = tmp_path / "cores.lock"
    holder = _holder(lock)
    try:
        with exclusive_cores(lock) as waited:
            assert holder.poll() is not None or waited > 0.5
        assert waited > 0.5
    finally:
        holder.wait(timeout=10)


def test_different_lock_files_do_not_wait(tmp_path: Path) -> None:
    holder = _holder(tmp_path / "one.lock")
    try:
        started = time.monotonic()
        with exclusive_cores(tmp_path / "other.lock") as waited:
            assert waited < 0.5
        assert time.monotonic() - started < 0.5
    finally:
        holder.wait(timeout=10)


def test_lock_path_comes_from_the_environment(tmp_path: Path) -> None:
    assert lock_path({"MIKO_EMBEDDED_LOCK": str(tmp_path / "x.lock")}) == tmp_path / "x.lock"
    assert lock_path({}).name.startswith("miko-embedded-model-")
