"""``inmaterio run CONFIG.yaml`` (tasks and studies) and ``inmaterio report FOLDER ...`` (tables from run folders)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from inmaterio.cli.app import app, console, friendly_errors, right_aligned_table


@app.command("run")
@friendly_errors
def run(
    config: Annotated[Optional[Path], typer.Argument(help="task or study YAML (see examples/ and --list)")] = None,
    out: Annotated[Optional[Path], typer.Option(help="run folder (default: runs/<config name>)")] = None,
    overwrite: Annotated[
        bool, typer.Option(help="replace the run in OUT (an unfinished one is moved aside, not deleted)")
    ] = False,
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    list_tasks: Annotated[bool, typer.Option("--list", help="list the task types and their example configs")] = False,
) -> None:
    """Run a task or a study from its YAML config in a run folder; rerun the same command to resume.

    The folder gets run.json (state, identity, wall time), config.yaml,
    metrics.json (the numbers and the table printed here), history.json/.csv
    and the task's figures and files. A finished run is not run again: its
    table is printed from the folder.
    """
    from inmaterio.errors import ConfigError
    from inmaterio.tasks.registry import TASKS, load_run_config
    from inmaterio.tasks.run import run_task

    if list_tasks:
        table = right_aligned_table("tasks of inmaterio run", ("type", "what it does", "example"))
        for entry in TASKS.values():
            table.add_row(entry.type, entry.summary, f"examples/{entry.example}" if entry.example else "")
        console.print(table)
        return
    if config is None:
        raise ConfigError("give a task or study YAML (inmaterio run CONFIG.yaml), or --list to see the task types")
    out = out or Path("runs") / config.stem
    outcome = run_task(load_run_config(config), out, progress=progress, overwrite=overwrite)
    console.print(right_aligned_table(outcome.title, outcome.columns, outcome.rows))
    console.print(f"{outcome.metrics['seconds']:.1f} s; results: {out}")


@app.command("report")
@friendly_errors
def report(
    folders: Annotated[list[Path], typer.Argument(help="run folders, or folders that hold run folders")],
    out: Annotated[Optional[Path], typer.Option(help="also write the Markdown to this file")] = None,
) -> None:
    """Rebuild the result tables of tasks and studies from their run folders (Markdown)."""
    from inmaterio.errors import RunFolderError
    from inmaterio.fileio import atomic_write_text
    from inmaterio.tasks.report import build_report

    if out is not None and out.is_dir():
        raise RunFolderError(f"cannot write the report to '{out}': it is a folder; give a file name such as {out / 'RESULTS.md'}")
    text = build_report(folders)
    print(text, end="")
    if out is not None:
        try:
            atomic_write_text(out, text)
        except OSError as err:
            raise RunFolderError(f"cannot write the report to '{out}': {err.strerror or err}") from None
