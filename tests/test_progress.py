"""Progress reporting: plain lines with count, rate and ETA when standard error is not a terminal."""

from __future__ import annotations

import inmaterio.progress as progress_module
from inmaterio.progress import progress_bar


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_plain_lines_count_rate_and_eta_from_this_session_only(capsys, monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(progress_module.time, "monotonic", clock)
    with progress_bar(total=100, description="training", unit="images", completed=50, log_every_s=30.0) as bar:
        clock.now += 10.0
        bar.advance(5)  # 10 s after the start: under the interval, no line
        assert capsys.readouterr().err == ""
        clock.now += 20.0
        bar.advance(10)  # 30 s: 15 images since the start (the 50 done before a resume do not count), 0.5 /s
        bar.set_description("training, epoch 2")
        clock.now += 10.0
        bar.advance(1)  # 10 s after the last line: none
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["training: 65/100 images (65%), 0.5 images/s, elapsed 0:00:30, ETA 0:01:10"]
    assert bar.line() == "training, epoch 2: 66/100 images (66%), 0.4 images/s, elapsed 0:00:40, ETA 0:01:25"


def test_short_loops_and_disabled_bars_write_nothing(capsys):
    with progress_bar(total=3, description="quick") as bar:  # the default interval: a minute
        for _ in range(3):
            bar.advance()
    with progress_bar(total=3, description="off", enabled=False, log_every_s=0.0) as bar:
        for _ in range(3):
            bar.advance()
    assert capsys.readouterr().err == ""


def test_no_rate_yet_gives_an_unknown_eta(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(progress_module.time, "monotonic", clock)
    with progress_bar(total=0, description="empty", log_every_s=0.0) as bar:
        assert bar.line() == "empty: 0/0 it, 0 it/s, elapsed 0:00:00, ETA unknown"
