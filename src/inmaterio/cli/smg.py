"""``inmaterio smg``: the surrogate-model generator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from inmaterio.cli.app import app, console, friendly_errors

smg_app = typer.Typer(help="Surrogate-model generator: sample, measure, train, test.", no_args_is_help=True)
app.add_typer(smg_app, name="smg")


def _number(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


@smg_app.command("run")
@friendly_errors
def smg_run(
    config: Annotated[Path, typer.Argument(help="SMG YAML config (see examples/)")],
    out: Annotated[Path, typer.Option(help="run folder; re-running resumes what is unfinished")],
    progress: Annotated[bool, typer.Option(help="show progress bars")] = True,
    overwrite: Annotated[
        bool, typer.Option(help="replace a run of another config in OUT (an unfinished one is moved aside)")
    ] = False,
) -> None:
    """Run (or resume) the whole surrogate-model generation: sample, measure, train, test, check."""
    from inmaterio.config import load_config
    from inmaterio.smg import SMGConfig, run_smg

    def notify(message: str) -> None:
        console.print(message, markup=False, highlight=False)

    summary = run_smg(load_config(SMGConfig, config), out, progress=progress, overwrite=overwrite, notify=notify)
    m = summary["test_metrics"]
    table = Table(title=f"surrogate of {summary['device']['type']} ({out})")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    adaptive = summary.get("adaptive")
    if adaptive:
        added = adaptive["n_points"] - summary["train_data"]["n_points"]
        table.add_row("training points", f"{summary['train_data']['n_points']} + {added} adaptive")
    else:
        table.add_row("training points", str(summary["train_data"]["n_points"]))
    table.add_row("independent test points", str(summary["test_data"]["n_points"]))
    table.add_row("test RMSE / nA", f"{m['rmse_na']:.3f}")
    table.add_row("test RMSE / % of output range", _number(m["rmse_percent_of_range"], ".2f"))
    table.add_row("device noise floor / nA", f"{m['noise_floor_na']:.3f}")
    table.add_row("RMSE / noise floor", _number(m["rmse_over_noise_floor"], ".2f"))
    table.add_row("model error (noise removed) / nA", _number(m.get("model_error_na"), ".3f"))
    per_electrode = summary.get("iv_rmse_per_electrode_na")
    if per_electrode:
        table.add_row("I-V sweeps RMSE, worst electrode / nA", f"{max(per_electrode):.3f}")
    ensemble = summary.get("ensemble")
    if ensemble and ensemble.get("calibrated"):
        cal = ensemble["calibrated"]["test"]["calibration"]
        table.add_row("test within 1 / 2 sigma (calibrated)", f"{cal['within_1_sigma']:.1%} / {cal['within_2_sigma']:.1%}")
    console.print(table)
    console.print(f"model: {out / 'model'}; summary: {out / 'metrics.json'}")


@smg_app.command("export")
@friendly_errors
def smg_export(
    run: Annotated[Path, typer.Argument(help="a finished SMG run folder")],
    to: Annotated[Optional[Path], typer.Option(help="destination model folder (default: the package's bundled model)")] = None,
    overwrite: Annotated[bool, typer.Option(help="replace an existing model at the destination")] = False,
    replace_bundled: Annotated[
        bool, typer.Option(help="allow replacing the installed bundled model (used by demo and the tasks)")
    ] = False,
) -> None:
    """Install the surrogate of a finished run (weights, info, summary, and its ensemble if it has one) as a model
    folder, whole or not at all."""
    from inmaterio.smg import export_smg_model

    dest = export_smg_model(run, to, overwrite=overwrite, replace_bundled=replace_bundled)
    members = sorted((dest / "ensemble").glob("member_*"))
    with_ensemble = f" with {len(members)} more ensemble members in {dest / 'ensemble'}" if members else ""
    console.print(f"exported {run / 'model'} -> {dest}{with_ensemble}")
