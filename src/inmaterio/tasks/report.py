"""Result tables rebuilt from run folders: ``inmaterio report FOLDER ... [--out FILE.md]``.

Each finished run folder of a task (``run.json`` kind ``inmaterio.task.<type>``)
is read back (config, metrics, history); the runs of one task go to that
task's report function (:mod:`inmaterio.tasks.registry`), which returns one
Markdown section. Finished SMG runs (kind ``inmaterio.smg``) share one table
(:mod:`inmaterio.smg.report`). Tasks without a report get their summary tables one after
the other. A folder that holds run folders (e.g. ``results/mnist``) stands
for all of them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from inmaterio.config import read_yaml
from inmaterio.errors import RunFolderError
from inmaterio.runs import CONFIG_FILE, HISTORY_JSON, METRICS_FILE, RUN_FILE, read_run
from inmaterio.smg.pipeline import KIND as SMG_KIND
from inmaterio.smg.report import smg_report
from inmaterio.tasks.registry import TASKS, FinishedRun, resolve

__all__ = ["collect_runs", "build_report", "markdown_table"]


def markdown_table(columns: list[str], rows: Iterable[Iterable[object]]) -> str:
    """A Markdown table (header, separator, one line per row)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def collect_runs(folders: Iterable[str | Path]) -> list[Path]:
    """The run folders among ``folders``: each one itself, or the run folders directly inside it.

    Raises
    ------
    RunFolderError
        A path that does not exist, or a folder that is neither a run folder nor holds any.
    """
    found: list[Path] = []
    for folder in map(Path, folders):
        if not folder.exists():
            raise RunFolderError(f"'{folder}' does not exist")
        if (folder / RUN_FILE).is_file():
            found.append(folder)
            continue
        inside = sorted(p for p in folder.iterdir() if (p / RUN_FILE).is_file()) if folder.is_dir() else []
        if not inside:
            raise RunFolderError(f"'{folder}' is not a run folder and holds none (no {RUN_FILE} in it or its subfolders)")
        found += inside
    return found


def _finished(path: Path, record: dict) -> FinishedRun:
    from inmaterio.errors import ModelFileError
    from inmaterio.fileio import read_json

    history = read_json(path / HISTORY_JSON, ModelFileError) if (path / HISTORY_JSON).is_file() else []
    return FinishedRun(path, read_yaml(path / CONFIG_FILE), read_json(path / METRICS_FILE, ModelFileError), history, record)


def _default_report(runs: list[FinishedRun]) -> str:
    sections = []
    for run in runs:
        table = run.metrics.get("table") or {}
        sections.append(f"### {table.get('title', run.path.name)} (`{run.path}`)\n\n"
                        + markdown_table(table.get("columns", []), table.get("rows", [])))  # fmt: skip
    return "\n\n".join(sections)


def build_report(folders: Iterable[str | Path]) -> str:
    """Markdown: one section per task, built from the finished runs among ``folders``.

    Unfinished runs and run folders that are not tasks (a training, an acquisition) are listed
    at the end as skipped, with their state.
    """
    by_task: dict[str, list[FinishedRun]] = {}
    surrogates: list[FinishedRun] = []
    skipped: list[str] = []
    for path in collect_runs(folders):
        record = read_run(path)
        kind = record["kind"]
        task = kind.removeprefix("inmaterio.task.")
        if kind == SMG_KIND and record["state"] == "finished":
            surrogates.append(_finished(path, record))
        elif kind == SMG_KIND:
            skipped.append(f"`{path}` ({record['state']})")
        elif not kind.startswith("inmaterio.task.") or task not in TASKS:
            skipped.append(f"`{path}` (a run of kind '{kind}', not a task)")
        elif record["state"] != "finished":
            skipped.append(f"`{path}` ({record['state']})")
        else:
            by_task.setdefault(task, []).append(_finished(path, record))
    sections = []
    for task, runs in by_task.items():
        entry = TASKS[task]
        report = _default_report if entry.report is None else resolve(entry.report)
        sections.append(f"## {task}: {entry.summary}\n\n{report(runs)}")
    if surrogates:
        sections.append(f"## surrogates: SMG runs side by side\n\n{smg_report(surrogates)}")
    if skipped:
        sections.append("Skipped: " + "; ".join(skipped) + ".")
    return "\n\n".join(sections) + "\n"
