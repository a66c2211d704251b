"""``inmaterio run CONFIG.yaml``: tasks and studies from a YAML config."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from inmaterio.cli.app import app, console, friendly_errors, right_aligned_table


@app.command("run")
@friendly_errors
def run(
    config: Annotated[Path, typer.Argument(help="task YAML (gates, rings or capacity; see examples/)")],
    out: Annotated[Optional[Path], typer.Option(help="results folder (default: runs/<config name>)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace the results of an earlier run in OUT")] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Train a task on the surrogate, validate it on the device, write a results folder.

    The folder gets config.yaml, metrics.json, controls.json (learned control
    voltages) and plots: learning curve, output current per class, and the
    output over the input plane (the I-V map of the solution).
    """
    from inmaterio.config import load_config
    from inmaterio.tasks import RunConfig, run_task

    out = out or Path("runs") / config.stem
    outcome = run_task(load_config(RunConfig, config), out, progress=progress, overwrite=overwrite)
    console.print(right_aligned_table(outcome.title, outcome.columns, outcome.rows))
    console.print(f"{outcome.metrics['seconds']:.1f} s; results: {out}")
