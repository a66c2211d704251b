"""``inmaterio cost RUN_FOLDER...``: energy, latency and area of trained models, beside a digital baseline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from inmaterio.cli.app import app, console, friendly_errors, right_aligned_table

COLUMNS = ["row", "technology", "energy / inference", "latency", "area", "TOPS/W", "TOPS/mm²"]


@app.command("cost")
@friendly_errors
def cost(
    run_folders: Annotated[list[Path], typer.Argument(help="finished run folders (see docs/howto/costs.md for the kinds)")],
    figure: Annotated[Optional[Path], typer.Option(help="also draw energy per inference vs accuracy to this image")] = None,
) -> None:
    """Print each run's cost table (per layer and total, digital baseline); write costs.json and costs.md into each run
    folder (nothing else there is touched)."""
    from inmaterio.costs.run_costs import cost_of_run, write_cost_files

    reports = [cost_of_run(folder) for folder in run_folders]  # every folder checked before anything is written
    for folder in run_folders:
        report, written = write_cost_files(folder)
        console.print(right_aligned_table(report.title, COLUMNS, report.rows()))
        if report.accuracy:
            console.print(f"accuracy: {report.accuracy}")
        if report.digital_ratio is not None:
            console.print(f"digital baseline / this model, energy per inference: {report.digital_ratio:.3g}x")
        for note in report.notes:
            console.print(f"- {note}", soft_wrap=True)
        console.print(f"{len(report.assumptions)} assumptions and the numbers written to " + ", ".join(map(str, written)))
    if figure is not None:
        from inmaterio.costs.figure import energy_accuracy_figure

        energy_accuracy_figure(reports, [f.name for f in run_folders], figure)
        console.print(f"figure: {figure}")
