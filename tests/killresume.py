"""Kill-and-resume: start a job, SIGKILL it at a random point after its first checkpoint, run it again.

Used by the tests that prove a resumed run equals an uninterrupted one bit for bit::

    from killresume import kill_then_resume, run_to_end

    run_to_end(argv(clean_dir))                                  # the uninterrupted reference
    report = kill_then_resume(argv(killed_dir), killed_dir / "checkpoint.pt", seed=3)
    assert same results in clean_dir and killed_dir, report

The random point is a delay drawn uniformly from ``[0, max_delay_s)`` after
the watched file first appears (the job has written a checkpoint and is
working on the next); the report says which delay was used and whether the
job was still running when killed, so a failure can be reproduced.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["KillReport", "kill_then_resume", "run_to_end", "python_argv", "without_timings", "TIMING_KEYS"]

#: Entries that differ between identical runs (wall times, rates, the package version, tables that print them).
TIMING_KEYS = frozenset({
    "seconds", "wall_s", "time_s", "timings_s", "median_epoch_s", "mean_epoch_s", "fit_seconds", "validation_seconds",
    "seconds_per_epoch", "samples_per_second", "package_version", "table",
})  # fmt: skip


@dataclass
class KillReport:
    delay_s: float
    killed_while_running: bool
    resumed_output: str

    def __str__(self) -> str:
        state = "while running" if self.killed_while_running else "after it had already ended"
        return f"SIGKILL {self.delay_s:.3f} s after the first checkpoint, {state}"


def python_argv(*args: str) -> list[str]:
    """``[python, *args]`` with this interpreter."""
    return [sys.executable, *args]


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return {**env, **(extra or {})}


def run_to_end(argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    """Run ``argv`` to its end; return its combined output (a non-zero exit fails with that output)."""
    proc = subprocess.run(list(argv), capture_output=True, text=True, env=_env(env), timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited with {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout + proc.stderr


def kill_then_resume(
    argv: Sequence[str],
    watch: Path,
    *,
    seed: int,
    max_delay_s: float = 1.0,
    env: dict[str, str] | None = None,
    timeout: float = 600,
) -> KillReport:
    """Start ``argv``; once ``watch`` exists, wait a random delay, SIGKILL the job, then run ``argv`` to its end."""
    delay = random.Random(seed).uniform(0.0, max_delay_s)
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=_env(env))
    deadline = time.monotonic() + timeout
    try:
        while not watch.exists():
            if proc.poll() is not None:
                raise AssertionError(f"the job ended (exit {proc.returncode}) before '{watch}' appeared:\n{proc.stdout.read()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"'{watch}' did not appear within {timeout} s")
            time.sleep(0.01)
        time.sleep(delay)
        running = proc.poll() is None
        if running:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    output = run_to_end(argv, env=env, timeout=timeout)
    return KillReport(delay, running, output)


def without_timings(value, keys=TIMING_KEYS):
    """``value`` (nested dicts and lists) without the entries named in ``keys``, to compare two runs bit for bit."""
    if isinstance(value, dict):
        return {k: without_timings(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [without_timings(v, keys) for v in value]
    return value
