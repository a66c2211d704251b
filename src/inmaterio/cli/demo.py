"""``inmaterio demo`` and ``inmaterio version``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

import inmaterio
from inmaterio.cli.app import app, console, friendly_errors, right_aligned_table


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
    """The whole story in about a minute: device and surrogate I-V, XOR trained on one, validated on the other.

    1. Every activation electrode is swept over its range with the others at
       0 V, on the kinetic Monte Carlo device (with its standard error) and on
       the surrogate model trained from it (OUT/iv_curves.png).
    2. An XOR gate is found by gradient descent on the surrogate (inputs on
       e4, e5; controls on the other five electrodes), asking for a class gap
       of 10 times the device noise (loss noise_margin); the surrogate is
       refined on device points around the solution and the gate re-trained
       on it (two rounds); then the same control voltages are measured on the
       virtual device (OUT/xor/: outputs of both per class, output map,
       learned voltages, metrics).
    Numbers go to OUT/demo.json.
    """
    from inmaterio.devices.hopping import HoppingDevice
    from inmaterio.devices.registry import device_config_from_description
    from inmaterio.fileio import atomic_write_json
    from inmaterio.plots import plot_iv_curves
    from inmaterio.smg.iv import iv_curves
    from inmaterio.surrogate import default_model_dir, load_default_surrogate
    from inmaterio.tasks.gates import GATE_INPUTS, GATES

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
    table = right_aligned_table(
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
    from inmaterio.tasks.config import GatesTask, RefinementConfig
    from inmaterio.tasks.gates import run_gates

    # 32 restarts at once; the most accurate one with the widest class separation is kept, then refined
    task = GatesTask(
        type="gates", gates=["XOR"], input_electrodes=(4, 5), loss="noise_margin", margin=10.0, attempts=32,
        gd={"learning_rate": 0.02, "epochs": 600}, refine=RefinementConfig(rounds=2),
    )  # fmt: skip
    xor_dir = out / "xor"
    xor_dir.mkdir(parents=True, exist_ok=True)
    with console.status("XOR: gradient descent on the surrogate, refinement, then the same voltages on the device ..."):
        outcome = run_gates(task, SurrogateProcessor(model), DeviceProcessor(device, plateau_samples=4, ramp_samples=5), xor_dir)
    xor = outcome.metrics["gates"]["XOR"]
    table = right_aligned_table(
        "XOR: trained on the (refined) surrogate, validated on the virtual device",
        ("input (e4, e5)", "target", "surrogate I / nA", "device I / nA"),
    )
    for (a, b), target, s_na, d_na in zip(GATE_INPUTS, GATES["XOR"], xor["surrogate_output_na"], xor["device_output_na"]):
        table.add_row(f"({a}, {b})", str(target), f"{s_na:.1f}", f"{d_na:.1f}")
    console.print(table)
    console.print(
        f"accuracy: surrogate {xor['surrogate_accuracy']:.0%}, device {xor['device_accuracy']:.0%} "
        f"(threshold from the surrogate: {xor['device_accuracy_surrogate_threshold']:.0%}); class gap on the device "
        f"{xor['device_separation_na']:.1f} nA = {xor['device_separation_over_noise']:.1f} x the device noise "
        f"({outcome.metrics['noise_na']:.2f} nA); "
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
