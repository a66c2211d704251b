"""The ``inmaterio`` command line: one entry point, a subcommand per job.

Run ``inmaterio --help`` (or ``python -m inmaterio --help``) for the list;
every subcommand has ``--help``. Errors of inmaterio (bad configs, voltages,
files) are printed as one clear message with exit code 2, not a traceback.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

import inmaterio
from inmaterio.errors import InmaterioError

app = typer.Typer(
    help="inmaterio: machine learning with matter (DNPUs, a virtual DNPU, surrogate models).",
    no_args_is_help=True,
    add_completion=False,
)
smg_app = typer.Typer(help="Surrogate-model generator: sample, measure, train, test.", no_args_is_help=True)
device_app = typer.Typer(help="Measure a device (the virtual DNPU by default).", no_args_is_help=True)
surrogate_app = typer.Typer(help="Inspect and import surrogate models.", no_args_is_help=True)
app.add_typer(smg_app, name="smg")
app.add_typer(device_app, name="device")
app.add_typer(surrogate_app, name="surrogate")
ep_app = typer.Typer(help="Analog circuits trained with Equilibrium Propagation (XOR, Iris, Wine, digits).", no_args_is_help=True)
app.add_typer(ep_app, name="ep")
console = Console()


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn inmaterio errors into a one-line message and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InmaterioError as err:
            console.print(f"[bold red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except KeyboardInterrupt:
            console.print("[yellow]interrupted; finished batches and checkpoints are kept, run the same command to resume[/]")
            raise typer.Exit(code=130) from None

    return wrapper


def _right_aligned_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]] = ()) -> Table:
    """A rich table with right-aligned columns and the given rows (more can be added)."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*row)
    return table


def _load_device(config: Path | None):
    """The device of a YAML file ``device: {type: ..., ...}``, or the default virtual DNPU."""
    from inmaterio.config import load_config
    from inmaterio.devices.registry import DeviceFile, build_device

    if config is None:
        from inmaterio.devices.hopping import HoppingDevice

        return HoppingDevice()
    return build_device(load_config(DeviceFile, config).device)


@app.command()
def version() -> None:
    """Print the package version."""
    console.print(inmaterio.__version__)


@app.command()
@friendly_errors
def demo(
    out: Annotated[Path, typer.Option(help="folder for the figure and the numbers")] = Path("runs/demo"),
    points: Annotated[int, typer.Option(min=2, help="points per I-V sweep")] = 25,
) -> None:
    """The whole story in under a minute: device and surrogate I-V, XOR trained on one, validated on the other.

    1. Every activation electrode is swept over its range with the others at
       0 V, on the kinetic Monte Carlo device (with its standard error) and on
       the surrogate model trained from it (OUT/iv_curves.png).
    2. An XOR gate is found by gradient descent on the surrogate (inputs on
       e3, e4; controls on the other five electrodes), and the same control
       voltages are measured on the virtual device (OUT/xor/: outputs of both
       per class, output map, learned voltages, metrics).
    Numbers go to OUT/demo.json.
    """
    from inmaterio.devices.hopping import HoppingDevice
    from inmaterio.devices.registry import device_config_from_description
    from inmaterio.fileio import atomic_write_json
    from inmaterio.plots import plot_iv_curves
    from inmaterio.tasks.gates import GATE_INPUTS, GATES
    from inmaterio.smg.iv import iv_curves
    from inmaterio.surrogate import default_model_dir, load_default_surrogate

    model = load_default_surrogate()
    device = HoppingDevice(device_config_from_description(model.info.provenance["device"]))
    console.print(f"surrogate: {default_model_dir()} (test RMSE {model.info.noise_na:.2f} nA)")
    console.print(
        f"virtual device: {device.config.n_acceptors} acceptors, {device.config.n_donors} donors, "
        f"seed {device.config.seed}, {device.config.temperature_k} K"
    )
    ranges = device.voltage_ranges
    start = time.perf_counter()
    with console.status(f"kinetic Monte Carlo: {len(ranges) * points} operating points ..."):
        device_iv = iv_curves(device.measure_with_error, ranges, points)
    device_s = time.perf_counter() - start
    start = time.perf_counter()
    model_iv = iv_curves(model.predict, ranges, points)
    model_s = time.perf_counter() - start

    out.mkdir(parents=True, exist_ok=True)
    figure = out / "iv_curves.png"
    plot_iv_curves({"virtual device (KMC)": device_iv, "surrogate": model_iv}, device.activation_names, figure)
    table = _right_aligned_table(
        "I-V curves: virtual device vs surrogate",
        ("electrode", "range / V", "device I / nA", "RMS difference / nA", "device stderr / nA"),
    )
    rows = []
    for k, name in enumerate(device.activation_names):
        diff = float(np.sqrt(np.mean((device_iv.current_na[k] - model_iv.current_na[k]) ** 2)))
        stderr = float(np.sqrt(np.mean(device_iv.stderr_na[k] ** 2)))
        lo, hi = device_iv.current_na[k].min(), device_iv.current_na[k].max()
        rows.append({"electrode": name, "rms_difference_na": diff, "device_stderr_na": stderr})
        table.add_row(name, f"[{ranges[k, 0]}, {ranges[k, 1]}]", f"{lo:.1f} .. {hi:.1f}", f"{diff:.2f}", f"{stderr:.2f}")
    console.print(table)
    console.print(f"device: {device_s:.1f} s for {device_iv.current_na.size} points; surrogate: {model_s * 1e3:.1f} ms")
    console.print(f"figure: {figure}")

    from inmaterio.processors import DeviceProcessor, SurrogateProcessor
    from inmaterio.tasks.config import GatesTask
    from inmaterio.tasks.gates import run_gates

    # eight restarts at once; the most accurate one with the widest class separation is kept
    task = GatesTask(type="gates", gates=["XOR"], attempts=8, gd={"learning_rate": 0.05, "epochs": 400})
    xor_dir = out / "xor"
    xor_dir.mkdir(parents=True, exist_ok=True)
    with console.status("XOR: gradient descent on the surrogate, then the same voltages on the device ..."):
        outcome = run_gates(
            task, SurrogateProcessor(model), DeviceProcessor(device, plateau_samples=4, ramp_samples=5), xor_dir
        )
    xor = outcome.metrics["gates"]["XOR"]
    table = _right_aligned_table(
        "XOR: trained on the surrogate, validated on the virtual device",
        ("input (e3, e4)", "target", "surrogate I / nA", "device I / nA"),
    )
    for (a, b), target, s_na, d_na in zip(GATE_INPUTS, GATES["XOR"], xor["surrogate_output_na"], xor["device_output_na"]):
        table.add_row(f"({a}, {b})", str(target), f"{s_na:.1f}", f"{d_na:.1f}")
    console.print(table)
    console.print(
        f"accuracy: surrogate {xor['surrogate_accuracy']:.0%}, device {xor['device_accuracy']:.0%} "
        f"(threshold from the surrogate: {xor['device_accuracy_surrogate_threshold']:.0%}); "
        f"controls: " + ", ".join(f"{k} {v:+.3f} V" for k, v in outcome.controls["XOR"].items())
    )
    console.print(f"figures: {xor_dir / 'outputs_per_class.png'}, {xor_dir / 'solution_iv.png'}")
    atomic_write_json(
        out / "demo.json",
        {
            "electrodes": rows,
            "device_seconds": device_s,
            "surrogate_seconds": model_s,
            "xor": {**xor, "controls_v": outcome.controls["XOR"], "fit_seconds": outcome.metrics["fit_seconds"]},
        },
    )


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
    console.print(_right_aligned_table(outcome.title, outcome.columns, outcome.rows))
    console.print(f"{outcome.metrics['seconds']:.1f} s; results: {out}")


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


@device_app.command("measure")
@friendly_errors
def device_measure(
    voltages: Annotated[str, typer.Argument(help="activation voltages in V, comma separated, e.g. 0.1,-0.3,0,0,0,0,0.2")],
    config: Annotated[Optional[Path], typer.Option(help="YAML with 'device: {type: ..., ...}'; default: the virtual DNPU")] = None,
) -> None:
    """Measure the readout current at one operating point."""
    from inmaterio.errors import VoltageError

    device = _load_device(config)
    try:
        v = np.array([float(x) for x in voltages.split(",")])
    except ValueError:
        raise VoltageError(f"voltages must be numbers separated by commas, got '{voltages}'") from None
    result = device.measure_with_error(v[None, :])
    console.print(f"I = {result.current_na[0]:.3f} ± {result.stderr_na[0]:.3f} nA")


@device_app.command("iv")
@friendly_errors
def device_iv(
    config: Annotated[Optional[Path], typer.Option(help="YAML with 'device: {type: ..., ...}'; default: the virtual DNPU")] = None,
    out: Annotated[Path, typer.Option(help="folder for iv_curves.png")] = Path("runs/device_iv"),
    points: Annotated[int, typer.Option(min=2, help="points per sweep")] = 25,
) -> None:
    """Sweep every activation electrode over its range (others at 0 V) and plot the I-V curves."""
    from inmaterio.plots import plot_iv_curves
    from inmaterio.smg.iv import iv_curves

    device = _load_device(config)
    with console.status(f"measuring {device.n_activation * points} operating points ..."):
        curves = iv_curves(device.measure_with_error, device.voltage_ranges, points)
    out.mkdir(parents=True, exist_ok=True)
    plot_iv_curves({"device": curves}, device.activation_names, out / "iv_curves.png")
    console.print(f"figure: {out / 'iv_curves.png'}")


@surrogate_app.command("info")
@friendly_errors
def surrogate_info(
    path: Annotated[Optional[Path], typer.Argument(help="model folder (default: the bundled model)")] = None,
) -> None:
    """Print a surrogate's electrodes, ranges, architecture, noise level and provenance."""
    from inmaterio.surrogate import load_default_surrogate, load_surrogate

    model = load_default_surrogate() if path is None else load_surrogate(path)
    info = model.info
    table = Table(title="surrogate model")
    table.add_column("electrode")
    table.add_column("range / V", justify="right")
    for name, (lo, hi) in zip(info.electrode_names, info.voltage_ranges_v):
        table.add_row(name, f"[{lo}, {hi}]")
    console.print(table)
    console.print(f"readout: {info.readout_name}; architecture: {model.architecture()}")
    console.print(f"noise (test RMSE): {info.noise_na} nA; output clipping: {info.output_clipping_na} nA")
    console.print(f"device: {info.provenance.get('device', {}).get('type', 'unknown')}; "
                  f"package version: {info.provenance.get('package_version', 'unknown')}")


@surrogate_app.command("import-brainspy")
@friendly_errors
def surrogate_import_brainspy(
    checkpoint: Annotated[Path, typer.Argument(help="a brains-py training_data.pt file")],
    out: Annotated[Path, typer.Argument(help="new model folder to write")],
) -> None:
    """Convert a brains-py surrogate checkpoint (loaded without executing pickled code)."""
    from inmaterio.surrogate import load_brainspy_checkpoint, save_surrogate

    model = load_brainspy_checkpoint(checkpoint)
    save_surrogate(model, out, metadata={"imported_from": str(checkpoint)})
    console.print(f"imported {checkpoint} -> {out}")


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
    table = _right_aligned_table(f"EP on {example}", ["epoch", "loss", "train acc.", "test acc.", "s/epoch"])
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
    table = _right_aligned_table(f"native vs ngspice on {example}", ["samples", "nodes", "max |dV| (V)", "native (s)", "ngspice (s)"])
    table.add_row(str(len(dv)), str(circuit.n_nodes), f"{dv.max().item():.2e}", f"{t_native:.4f}", f"{t_spice:.4f}")
    console.print(table)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
