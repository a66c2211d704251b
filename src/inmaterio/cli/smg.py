"""``inmaterio smg``: the surrogate-model generator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from inmaterio.cli.app import app, console, friendly_errors

smg_app = typer.Typer(help="Surrogate-model generator: sample, measure, train, test.", no_args_is_help=True)
app.add_typer(smg_app, name="smg")


@smg_app.command("run")
@friendly_errors
def smg_run(
    config: Annotated[Path, typer.Argument(help="SMG YAML config (see examples/)")],
    out: Annotated[Path, typer.Option(help="run folder; re-running resumes what is unfinished")],
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
) -> None:
    """Run (or resume) the whole surrogate-model generation: sample, measure, train, test, check."""
    from inmaterio.config import load_config
    from inmaterio.smg import SMGConfig, run_smg

    summary = run_smg(load_config(SMGConfig, config), out, progress=progress)
    m = summary["test_metrics"]
    table = Table(title=f"surrogate of {summary['device']['type']} ({out})")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("training points", str(summary["train_data"]["n_points"]))
    table.add_row("independent test points", str(summary["test_data"]["n_points"]))
    table.add_row("test RMSE / nA", f"{m['rmse_na']:.3f}")
    table.add_row("test RMSE / % of output range", f"{m['rmse_percent_of_range']:.2f}")
    table.add_row("device noise floor / nA", f"{m['noise_floor_na']:.3f}")
    table.add_row("RMSE / noise floor", f"{m['rmse_over_noise_floor']:.2f}")
    console.print(table)
    console.print(f"model: {out / 'model'}; summary: {out / 'summary.json'}")


@smg_app.command("export")
@friendly_errors
def smg_export(
    run: Annotated[Path, typer.Argument(help="a finished SMG run folder")],
    to: Annotated[Optional[Path], typer.Option(help="destination model folder (default: the package's bundled model)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing model at the destination")] = False,
) -> None:
    """Copy the surrogate of a finished run (weights, info, test metrics) to a model folder."""
    from inmaterio.errors import ModelFileError
    from inmaterio.fileio import atomic_write_json
    from inmaterio.surrogate import default_model_dir, load_surrogate, save_surrogate

    summary_path = run / "summary.json"
    if not summary_path.is_file():
        raise ModelFileError(f"'{run}' is not a finished SMG run: {summary_path} is missing")
    model = load_surrogate(run / "model")
    dest = to or default_model_dir()
    save_surrogate(model, dest, metadata=model.metadata, overwrite=overwrite)
    summary = json.loads(summary_path.read_text())
    atomic_write_json(dest / "summary.json", summary)
    console.print(f"exported {run / 'model'} -> {dest}")
