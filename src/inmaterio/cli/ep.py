"""``inmaterio ep``: analog circuits trained with Equilibrium Propagation."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

import inmaterio
from inmaterio.cli.app import app, console, friendly_errors, right_aligned_table
from inmaterio.errors import InmaterioError

ep_app = typer.Typer(help="Analog circuits trained with Equilibrium Propagation (XOR, Iris, Wine, digits).", no_args_is_help=True)
app.add_typer(ep_app, name="ep")


@ep_app.command("train")
@friendly_errors
def ep_train(
    example: Annotated[str, typer.Argument(help="xor, iris, wine or digits")],
    epochs: Annotated[Optional[int], typer.Option(help="epochs (default: the example's recipe)")] = None,
    seed: Annotated[int, typer.Option(help="data split, initial conductances and shuffling")] = 0,
    out: Annotated[Optional[Path], typer.Option(help="results folder (default: runs/ep_<example>)")] = None,
    overwrite: Annotated[bool, typer.Option(help="start afresh, replacing an earlier run in OUT")] = False,
    progress: Annotated[bool, typer.Option(help="show the progress bar")] = True,
) -> None:
    """Train an example circuit with EP (native batched solver); resumable.

    OUT gets checkpoint.pt (rerun the same command to resume), history.json/.csv,
    parameters.safetensors (the trained conductances), circuit.cir (a SPICE deck
    of the trained circuit for the first test sample), learning_curve.png and
    summary.json.
    """
    import torch
    from matplotlib.figure import Figure

    from inmaterio.circuits import evaluate, fit
    from inmaterio.circuits.examples import get_example
    from inmaterio.circuits.io import save_parameters
    from inmaterio.circuits.solve.ngspice import to_netlist
    from inmaterio.fileio import atomic_write_json, atomic_write_text
    from inmaterio.plots import save_figure

    spec = get_example(example)
    out = out or Path("runs") / f"ep_{example}"
    if overwrite:
        for name in ("checkpoint.pt", "history.json", "history.csv", "parameters.safetensors", "circuit.cir",
                     "learning_curve.png", "summary.json"):
            (out / name).unlink(missing_ok=True)
    elif (out / "summary.json").exists() and not (out / "checkpoint.pt").exists():
        raise InmaterioError(f"'{out}' holds a finished run without its checkpoint; use --overwrite or another --out")
    config = spec.config.model_copy(update={"seed": seed, **({"epochs": epochs} if epochs else {})})
    torch.manual_seed(seed)
    data = spec.load(seed)
    model = spec.build(seed)
    console.print(f"{spec.description}\n{model.summary()}")
    t0 = time.perf_counter()
    history = fit(model, data.x_train, data.y_train, config, validation=(data.x_test, data.y_test), directory=out, progress=progress)
    seconds = time.perf_counter() - t0
    train = evaluate(model, data.x_train, data.y_train, config)
    test = evaluate(model, data.x_test, data.y_test, config)
    save_parameters(model, out / "parameters.safetensors", metadata={"example": example, "config": config.model_dump(mode="json")})
    atomic_write_text(out / "circuit.cir", to_netlist(model.circuit(data.x_test[:1]), 0, title=f"inmaterio ep {example}, test sample 0"))
    summary = {"example": example, "seed": seed, "epochs": len(history), "train": train, "test": test,
               "seconds_this_call": seconds, "inmaterio_version": inmaterio.__version__}
    atomic_write_json(out / "summary.json", summary)
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
    table = right_aligned_table(f"EP on {example}", ["epoch", "loss", "train acc.", "test acc.", "s/epoch"])
    for r in history[-5:]:
        table.add_row(str(r["epoch"]), f"{r['loss']:.4g}", f"{r['accuracy']:.2%}", f"{r['val_accuracy']:.2%}", f"{r['seconds']:.2f}")
    console.print(table)
    console.print(f"train {train['accuracy']:.2%}, test {test['accuracy']:.2%}; {seconds:.1f} s; results: {out}")


@ep_app.command("check")
@friendly_errors
def ep_check(
    example: Annotated[str, typer.Argument(help="xor, iris, wine or digits")],
    samples: Annotated[int, typer.Option(help="test samples to solve with both solvers")] = 5,
    parameters: Annotated[Optional[Path], typer.Option(help="trained parameters.safetensors (default: the initial ones)")] = None,
    seed: Annotated[int, typer.Option(help="data split and initial conductances")] = 0,
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
    table = right_aligned_table(f"native vs ngspice on {example}", ["samples", "nodes", "max |dV| (V)", "native (s)", "ngspice (s)"])
    table.add_row(str(len(dv)), str(circuit.n_nodes), f"{dv.max().item():.2e}", f"{t_native:.4f}", f"{t_spice:.4f}")
    console.print(table)
