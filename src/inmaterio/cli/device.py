"""``inmaterio device``: measure a device."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer

from inmaterio.cli.app import app, console, friendly_errors

from inmaterio.cli.app import load_device

device_app = typer.Typer(help="Measure a device (the virtual DNPU by default).", no_args_is_help=True)
app.add_typer(device_app, name="device")


@device_app.command("measure")
@friendly_errors
def device_measure(
    voltages: Annotated[str, typer.Argument(help="activation voltages in V, comma separated, e.g. 0.1,-0.3,0,0,0,0,0.2")],
    config: Annotated[Optional[Path], typer.Option(help="YAML with 'device: {type: ..., ...}'; default: the virtual DNPU")] = None,
) -> None:
    """Measure the readout current at one operating point."""
    from inmaterio.errors import VoltageError

    device = load_device(config)
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

    device = load_device(config)
    with console.status(f"measuring {device.n_activation * points} operating points ..."):
        curves = iv_curves(device.measure_with_error, device.voltage_ranges, points)
    out.mkdir(parents=True, exist_ok=True)
    plot_iv_curves({"device": curves}, device.activation_names, out / "iv_curves.png")
    console.print(f"figure: {out / 'iv_curves.png'}")
