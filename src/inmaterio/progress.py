"""Progress bars for long loops (acquisition, training), with rate and ETA.

A thin wrapper around :mod:`rich.progress`. The bar is drawn only when asked
for *and* standard error is a terminal. When standard error is a file or a pipe
(a run under ``nohup``, a batch job's log), the same handle writes one plain
line at most every ``log_every_s`` seconds (60 by default), with the same
count, rate, elapsed time and ETA; a loop shorter than that writes nothing, so
short runs and tests stay clean::

    with progress_bar(total=n_points, description="measuring", unit="pts") as bar:
        for batch in batches:
            ...
            bar.advance(len(batch))
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["ProgressBar", "progress_bar"]


#: Seconds between two plain progress lines when standard error is not a terminal.
LOG_EVERY_S = 60.0


def _clock(seconds: float) -> str:
    """``h:mm:ss`` of a duration in seconds."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ProgressBar:
    """Handle of one running bar: a rich bar (``progress``), plain lines every ``log_every_s`` seconds
    (``progress`` None, ``log_every_s`` set), or a no-op (both None)."""

    def __init__(
        self,
        progress: Progress | None,
        total: float,
        completed: float,
        description: str,
        unit: str,
        *,
        log_every_s: float | None = None,
    ) -> None:
        self._progress = progress
        self._unit = unit
        self._task = None
        self._log_every_s = log_every_s
        self._total, self._done, self._first = float(total), float(completed), float(completed)
        self._description = description
        self._start = self._last_line = time.monotonic()
        if progress is not None:
            self._task = progress.add_task(description, total=total, completed=completed, rate="")

    def advance(self, amount: float = 1) -> None:
        """Add ``amount`` finished units and refresh the rate."""
        self._done += amount
        if self._progress is None:
            if self._log_every_s is not None and time.monotonic() - self._last_line >= self._log_every_s:
                self._last_line = time.monotonic()
                print(self.line(), file=sys.stderr, flush=True)
            return
        self._progress.advance(self._task, amount)
        speed = self._progress.tasks[self._task].speed
        self._progress.update(self._task, rate="" if speed is None else f"{speed:.3g} {self._unit}/s")

    def set_description(self, description: str) -> None:
        """Replace the text on the left of the bar (e.g. the latest loss)."""
        self._description = description
        if self._progress is not None:
            self._progress.update(self._task, description=description)

    def line(self) -> str:
        """One plain line: ``description: done/total unit (percent), rate unit/s, elapsed h:mm:ss, ETA h:mm:ss``
        (rate and ETA over the units done since this handle was made, so a resumed loop is not flattered)."""
        elapsed = time.monotonic() - self._start
        rate = (self._done - self._first) / elapsed if elapsed > 0 else 0.0
        share = f" ({100 * self._done / self._total:.0f}%)" if self._total > 0 else ""
        eta = _clock((self._total - self._done) / rate) if rate > 0 else "unknown"
        return (
            f"{self._description}: {self._done:,.0f}/{self._total:,.0f} {self._unit}{share}, {rate:.3g} {self._unit}/s, "
            f"elapsed {_clock(elapsed)}, ETA {eta}"
        )


@contextmanager
def progress_bar(
    total: float,
    description: str = "",
    unit: str = "it",
    completed: float = 0,
    enabled: bool = True,
    log_every_s: float = LOG_EVERY_S,
) -> Iterator[ProgressBar]:
    """A progress bar showing done/total, rate in ``unit``/s, elapsed time and ETA.

    When stderr is not a TTY, plain lines at most every ``log_every_s`` seconds instead (module docstring);
    nothing at all when ``enabled`` is False.
    """
    if not enabled:
        yield ProgressBar(None, total, completed, description, unit)
        return
    if not sys.stderr.isatty():
        yield ProgressBar(None, total, completed, description, unit, log_every_s=log_every_s)
        return
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    with progress:
        yield ProgressBar(progress, total, completed, description, unit)
