"""Progress bars for long loops (acquisition, training), with rate and ETA.

A thin wrapper around :mod:`rich.progress`. The bar is drawn only when asked
for *and* standard error is a terminal, so logs, pipes and tests stay clean::

    with progress_bar(total=n_points, description="measuring", unit="pts") as bar:
        for batch in batches:
            ...
            bar.advance(len(batch))
"""

from __future__ import annotations

import sys
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


class ProgressBar:
    """Handle of one running bar; a no-op when ``progress`` is None (bar disabled)."""

    def __init__(self, progress: Progress | None, total: float, completed: float, description: str, unit: str) -> None:
        self._progress = progress
        self._unit = unit
        self._task = None
        if progress is not None:
            self._task = progress.add_task(description, total=total, completed=completed, rate="")

    def advance(self, amount: float = 1) -> None:
        """Add ``amount`` finished units and refresh the rate."""
        if self._progress is None:
            return
        self._progress.advance(self._task, amount)
        speed = self._progress.tasks[self._task].speed
        self._progress.update(self._task, rate="" if speed is None else f"{speed:.3g} {self._unit}/s")

    def set_description(self, description: str) -> None:
        """Replace the text on the left of the bar (e.g. the latest loss)."""
        if self._progress is not None:
            self._progress.update(self._task, description=description)


@contextmanager
def progress_bar(
    total: float, description: str = "", unit: str = "it", completed: float = 0, enabled: bool = True
) -> Iterator[ProgressBar]:
    """A progress bar showing done/total, rate in ``unit``/s, elapsed time and ETA.

    Disabled (yields a no-op handle) when ``enabled`` is False or stderr is not a TTY.
    """
    if not (enabled and sys.stderr.isatty()):
        yield ProgressBar(None, total, completed, description, unit)
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
