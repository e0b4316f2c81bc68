"""Core slots make processes take turns on each core."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from miko_assets.cpu_lock import core_count, core_slot, lock_path

HOLD = """
import sys, time
from pathlib import Path
from miko_assets.cpu_lock import core_slot
with core_slot(int(sys.argv[2]), Path(sys.argv[1])):
    print("holding", flush=True)
    time.sleep(1.0)
"""


def _holder(lock: Path, slot: int = 0) -> subprocess.Popen[str]:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), str(slot)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
    return holder


def test_a_second_process_waits_until_the_first_releases(tmp_path: Path) -> None:
    lock = tmp_path / "cores.lock"
    holder = _holder(lock)
    try:
        with core_slot(0, lock) as waited:
            assert holder.poll() is not None or waited > 0.5
        assert waited > 0.5
    finally:
        holder.wait(timeout=10)


def test_different_lock_files_do_not_wait(tmp_path: Path) -> None:
    holder = _holder(tmp_path / "one.lock")
    try:
        started = time.monotonic()
        with core_slot(0, tmp_path / "other.lock") as waited:
            assert waited < 0.5
        assert time.monotonic() - started < 0.5
    finally:
        holder.wait(timeout=10)


def test_the_same_slot_is_taken_on_the_core_it_wraps_to(tmp_path: Path) -> None:
    lock = tmp_path / "cores.lock"
    holder = _holder(lock, core_count())
    try:
        with core_slot(0, lock) as waited:
            assert holder.poll() is not None or waited > 0.5
    finally:
        holder.wait(timeout=10)


@pytest.mark.skipif(core_count() < 2, reason="one core: every slot is the same")
def test_another_core_slot_does_not_wait(tmp_path: Path) -> None:
    lock = tmp_path / "cores.lock"
    holder = _holder(lock, 0)
    try:
        with core_slot(1, lock) as waited:
            assert waited < 0.5 and holder.poll() is None
    finally:
        holder.wait(timeout=10)


def test_lock_path_comes_from_the_environment(tmp_path: Path) -> None:
    assert lock_path({"MIKO_EMBEDDED_LOCK": str(tmp_path / "x.lock")}) == tmp_path / "x.lock"
    assert lock_path({}).name.startswith("miko-embedded-model-")
