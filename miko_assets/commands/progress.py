"""Progress of long `miko` commands: a rich progress bar (count, rate, time left) on a terminal,
plain lines otherwise (logs, CI, pipes)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class Progress:
    """Counts `done` out of `total` units of one task; `note` prints a line above the bar."""

    def __init__(self, description: str, total: int | None, unit: str, stream: TextIO) -> None:
        self.description, self.total, self.unit, self.stream = description, total, unit, stream
        self.done = 0
        self.started = time.monotonic()
        self._bar = None
        self._task = None
        self._last_line = self.started

    def advance(self, units: int = 1, detail: str | None = None) -> None:
        self.done += units
        if self._bar is not None:
            self._bar.update(self._task, advance=units, detail=detail or "", rate=_per_time(self.rate()))
        elif detail is not None or time.monotonic() - self._last_line >= PLAIN_EVERY_S:
            self._plain(detail)

    def expect(self, total: int) -> None:
        """The total, once it is known."""
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def rate(self) -> float:
        """Units per second so far."""
        elapsed = time.monotonic() - self.started
        return self.done / elapsed if elapsed > 0 else 0.0

    def note(self, line: str) -> None:
        """A result line: above the bar on a terminal, else on stdout (the progress lines go to stderr)."""
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False)
        else:
            print(line, flush=True)

    def _plain(self, detail: str | None) -> None:
        self._last_line = time.monotonic()
        rate = self.rate()
        of = f"/{self.total}" if self.total else ""
        left = ""
        if self.total and rate > 0 and self.done < self.total:
            left = f", about {_duration((self.total - self.done) / rate)} left"
        tail = f": {detail}" if detail else ""
        print(f"{self.description}: {self.done}{of} {self.unit} ({_per_time(rate)}{left}){tail}",
              file=self.stream, flush=True)


# Without a terminal, a line at most this often (and at each step that has a detail).
PLAIN_EVERY_S = 5.0


@contextmanager
def progress(description: str, total: int | None, unit: str, stream: TextIO | None = None) -> Iterator[Progress]:
    """A progress display for one long task; a bar when `stream` (stderr) is a terminal."""
    stream = stream or sys.stderr
    tracker = Progress(description, total, unit, stream)
    if not stream.isatty():
        yield tracker
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.progress import Progress as Bar

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("left"),
               TimeRemainingColumn(), TextColumn("{task.fields[detail]}"))
    with Bar(*columns, console=Console(file=stream), transient=False) as bar:
        tracker._bar, tracker._task = bar, bar.add_task(description, total=total, detail="", rate="")
        yield tracker


def _per_time(rate: float) -> str:
    return f"{rate:.1f}/s" if rate >= 1 else f"{rate * 60:.1f}/min"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"
