"""``inmaterio ep``: analog circuits trained with Equilibrium Propagation."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

import inmaterio
from inmaterio.cli.app import app, console, friendly_errors, right_aligned_table
from inmaterio.runs import read_run

ep_app = typer.Typer(help="Analog circuits trained with Equilibrium Propagation (XOR, Iris, Wine, digits).", no_args_is_help=True)
app.add_typer(ep_app, name="ep")


def _positive_count(what: str):
    """A typer callback refusing counts below 1, naming the value and the allowed range."""

    def check(value: int | None) -> int | None:
        if value is not None and value < 1:
            raise typer.BadParameter(f"got {value}; the number of {what} must be an integer >= 1")
        return value

    return check


def _non_negative(value: int) -> int:
    if value < 0:
        raise typer.BadParameter(f"got {value}; the seed must be an integer >= 0")
    return value


@ep_app.command("train")
@friendly_errors
def ep_train(
    example: Annotated[str, typer.Argument(help="xor, iris, wine or digits")],
    epochs: Annotated[
        Optional[int], typer.Option(callback=_positive_count("epochs"), help="epochs, >= 1 (default: the example's recipe)")
    ] = None,
    seed: Annotated[int, typer.Option(callback=_non_negative, help="data split, initial conductances and shuffling (>= 0)")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="run folder (default: runs/ep_<example>)")] = None,
    overwrite: Annotated[
        bool, typer.Option(help="replace the run in OUT (a finished one is deleted, another moved aside)")
    ] = False,
    progress: Annotated[bool, typer.Option(help="show the progress bar")] = True,
) -> None:
    """Train an example circuit with EP (native batched solver) in a run folder; resumable.

    OUT is a run folder (config.yaml, run.json, checkpoint.pt, history.json/.csv,
    metrics.json): rerun the same command to resume an interrupted run, or with
    more --epochs to train a finished one longer; a finished run prints its
    results without training. It also gets parameters.safetensors (the trained
    conductances), circuit.cir (a SPICE deck of the trained circuit for the
    first test sample), learning_curve.png and summary.json.
    """
    from inmaterio.circuits import EPTrainConfig, evaluate, fit
    from inmaterio.circuits.examples import get_example
    from inmaterio.config import validate_config

    spec = get_example(example)
    out = out or Path("runs") / f"ep_{example}"
    changes = {"seed": seed, **({"epochs": epochs} if epochs is not None else {})}
    config = validate_config(EPTrainConfig, {**spec.config.model_dump(), **changes}, source="the command line")
    data = spec.load(seed)
    model = spec.build(seed)
    console.print(f"{spec.description}\n{model.summary()}")
    history = fit(model, data.x_train, data.y_train, config, validation=(data.x_test, data.y_test), directory=out,
                  overwrite=overwrite, progress=progress)  # fmt: skip
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    if summary is None or summary.get("epochs") != len(history):
        train = evaluate(model, data.x_train, data.y_train, config)
        test = evaluate(model, data.x_test, data.y_test, config)
        summary = {"example": example, "seed": seed, "epochs": len(history), "train": train, "test": test,
                   "wall_s": read_run(out)["wall_s"], "inmaterio_version": inmaterio.__version__}  # fmt: skip
        _write_results(out, example, model, data, config, history, summary)
    table = right_aligned_table(f"EP on {example}", ["epoch", "loss", "train acc.", "test acc.", "s/epoch"])
    for r in history[-5:]:
        table.add_row(
            str(r["epoch"]), f"{r['loss']:.4g}", f"{r['accuracy']:.2%}", f"{r['val_accuracy']:.2%}", f"{r['seconds']:.2f}"
        )
    console.print(table)
    console.print(f"train {summary['train']['accuracy']:.2%}, test {summary['test']['accuracy']:.2%}; "
                  f"{summary['wall_s']:.1f} s of training; results: {out}")  # fmt: skip


def _write_results(out: Path, example: str, model, data, config, history: list[dict], summary: dict) -> None:
    """The trained parameters, a SPICE deck, the learning curve, and summary.json last (it marks them complete)."""
    from matplotlib.figure import Figure

    from inmaterio.circuits.io import save_parameters
    from inmaterio.circuits.solve.ngspice import to_netlist
    from inmaterio.fileio import atomic_write_json, atomic_write_text
    from inmaterio.plots import save_figure

    save_parameters(
        model, out / "parameters.safetensors", metadata={"example": example, "config": config.model_dump(mode="json")}
    )
    atomic_write_text(
        out / "circuit.cir", to_netlist(model.circuit(data.x_test[:1]), 0, title=f"inmaterio ep {example}, test sample 0")
    )
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ep = [r["epoch"] for r in history]
    ax.plot(ep, [r["accuracy"] for r in history], label="train (during the epoch)")
    ax.plot(ep, [r["val_accuracy"] for r in history], label="test (after the epoch)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower right")
    save_figure(fig, out / "learning_curve.png")
    atomic_write_json(out / "summary.json", summary)


@ep_app.command("check")
@friendly_errors
def ep_check(
    example: Annotated[str, typer.Argument(help="xor, iris, wine or digits")],
    samples: Annotated[
        int, typer.Option(callback=_positive_count("samples"), help="test samples to solve with both solvers (>= 1)")
    ] = 5,
    parameters: Annotated[Optional[Path], typer.Option(help="trained parameters.safetensors (default: the initial ones)")] = None,
    seed: Annotated[int, typer.Option(callback=_non_negative, help="data split and initial conductances (>= 0)")] = 0,
) -> None:
    """Solve an example circuit with the native solver and with ngspice; print the largest difference."""
    from inmaterio.circuits import solve_dc
    from inmaterio.circuits.examples import get_example
    from inmaterio.circuits.io import load_parameters
    from inmaterio.circuits.solve.ngspice import solve_ngspice

    spec = get_example(example)
    model = spec.build(seed)
    if parameters is not None:
        load_parameters(model, parameters)
    circuit = model.circuit(spec.load(seed).x_test[:samples])
    t0 = time.perf_counter()
    native = solve_dc(circuit)
    t_native = time.perf_counter() - t0
    t0 = time.perf_counter()
    spice = solve_ngspice(circuit, mode="shared")
    t_spice = time.perf_counter() - t0
    dv = (native.voltages_v - spice.voltages_v).abs()
    table = right_aligned_table(
        f"native vs ngspice on {example}", ["samples", "nodes", "max |dV| (V)", "native (s)", "ngspice (s)"]
    )
    table.add_row(str(len(dv)), str(circuit.n_nodes), f"{dv.max().item():.2e}", f"{t_native:.4f}", f"{t_spice:.4f}")
    console.print(table)
