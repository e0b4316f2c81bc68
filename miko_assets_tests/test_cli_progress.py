"""Progress of long `miko` commands: plain lines (count, rate, time left) when the output is not a
terminal, a rich bar when it is; result lines go to stdout either way."""

from __future__ import annotations

import io

import pytest

from miko_assets.commands import progress as progress_module
from miko_assets.commands.progress import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_off_a_terminal_plain_lines_come_every_few_seconds_with_rate_and_time_left(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    clock, stream = Clock(), io.StringIO()
    monkeypatch.setattr(progress_module.time, "monotonic", clock)
    with progress("ingest posts.json", 100, "posts read", stream=stream) as shown:
        for _ in range(4):
            clock.now += 1
            shown.advance()
        assert stream.getvalue() == ""  # nothing in the first 5 s (a refused command shows only its error)
        clock.now += 1
        shown.advance()
        shown.note("a result line")
    assert stream.getvalue() == "ingest posts.json: 5/100 posts read (1.0/s, about 2 min left)\n"
    assert capsys.readouterr().out == "a result line\n"


def test_a_step_with_a_detail_has_its_line_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, stream = Clock(), io.StringIO()
    monkeypatch.setattr(progress_module.time, "monotonic", clock)
    with progress("export to kb", 4, "files", stream=stream) as shown:
        clock.now += 2
        shown.advance(detail="parquet")
    assert stream.getvalue() == "export to kb: 1/4 files (30.0/min, about 6 s left): parquet\n"


def test_on_a_terminal_a_bar_with_count_rate_and_time_left() -> None:
    stream = Terminal()
    with progress("collect", None, "batches", stream=stream) as shown:
        shown.expect(2)
        shown.advance(detail="batch_1")
        shown.advance(detail="batch_2")
    shown_text = stream.getvalue()
    assert "collect" in shown_text and "2/2" in shown_text and "batches" in shown_text and "batch_2" in shown_text
    assert "/s" in shown_text or "/min" in shown_text
