"""How progress is shown: the bar on a terminal (one line redrawn in place,
log records written above it), plain lines in a log, the sensor's progress
messages on the wire."""

from __future__ import annotations

import io
import logging
import time

import pytest

from slimmer import progress
from slimmer.protocol import Progress, ProgressStep, message_line, parse_message_line


def test_figures_read_like_a_person_says_them() -> None:
    assert progress.describe(progress.WATCH, 23456, None) == "watching: 23,456 directories"
    assert (
        progress.describe(progress.COLLECT, 45_000_000, 100_000_000)
        == "collecting files: 45.0 MB of 100.0 MB (45%)"
    )
    assert progress.describe(progress.BUILD, 9, 8) == "building: 8 of 8 steps (100%)"  # clamped


def test_the_bar_is_one_line_redrawn_in_place() -> None:
    out = io.StringIO()
    bar = progress.LiveBar(out, fps=1000)
    bar.update(progress.COPY, 10_000_000, 40_000_000)
    time.sleep(0.002)
    bar.update(progress.COPY, 20_000_000, 40_000_000)
    text = out.getvalue()
    assert "\n" not in text
    draws = text.split("\r\x1b[K")[1:]
    assert draws[0].endswith("copying the files out: 10.0 MB of 40.0 MB (25%)")
    assert draws[1].startswith("[") and "(50%)" in draws[1]
    bar.finish(progress.COPY)
    assert out.getvalue().endswith("\r\x1b[K")  # cleared: the summary line follows


def test_log_records_go_above_the_bar() -> None:
    out = io.StringIO()
    bar = progress.LiveBar(out, fps=1000)
    bar.update(progress.WATCH, 1000, None)
    bar.interrupt(lambda: out.write("slim: a log record\n"))
    after = out.getvalue().split("slim: a log record\n", 1)[1]
    assert after.startswith("\r\x1b[K") and "watching: 1,000 directories" in after


def test_finishing_another_step_leaves_the_bar() -> None:
    out = io.StringIO()
    bar = progress.LiveBar(out, fps=1000)
    bar.update(progress.COPY, 1, 2)
    shown = out.getvalue()
    bar.finish(progress.COLLECT)  # a late end of the step before
    assert out.getvalue() == shown


def test_a_log_gets_a_line_when_a_step_lasts(caplog: pytest.LogCaptureFixture) -> None:
    lines = progress.PlainLines(first=0.05, every=0.05)
    with caplog.at_level(logging.INFO, logger="slimmer.progress"):
        lines.update(progress.COLLECT, 1, 10)  # too early: short steps stay quiet
        assert caplog.messages == []
        time.sleep(0.06)
        lines.update(progress.COLLECT, 5_000_000, 10_000_000)
        lines.update(progress.COLLECT, 6_000_000, 10_000_000)  # too soon after the last
        assert caplog.messages == ["collecting files: 5.0 MB of 10.0 MB (50%)"]
        time.sleep(0.06)
        lines.update(progress.COLLECT, 9_000_000, 10_000_000)
    assert caplog.messages[-1] == "collecting files: 9.0 MB of 10.0 MB (90%)"


def test_sensor_progress_lines_round_trip() -> None:
    message = Progress(ProgressStep.COLLECT, 123, 456)
    line = message_line(message)
    assert "\n" not in line  # one line: the host reads no empty app line after it
    assert parse_message_line(line) == message
    assert parse_message_line(message_line(Progress(ProgressStep.WATCH, 7))) == Progress(
        ProgressStep.WATCH, 7, None
    )
