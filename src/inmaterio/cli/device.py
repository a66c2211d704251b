"""``inmaterio device``: measure a device.

``device measure`` takes the voltages as a person types them: comma or space
separated, negative numbers included (``device measure -0.5,0,0,0,0,0,0``).
``device iv`` keeps its sweep in a run folder (kind ``inmaterio.devices.iv``):
``iv.json`` (the curves), ``iv_curves.png``, ``run.json``, ``config.yaml``; the
folder is checked before anything is measured, a failed write later saves the
data to a rescue folder the message names, and the same command on a
finished folder shows it instead of measuring again (``--overwrite`` replaces
it).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer
from typer.core import TyperCommand

from inmaterio.cli.app import app, console, friendly_errors, load_device

device_app = typer.Typer(help="Measure a device (the virtual DNPU by default).", no_args_is_help=True)
app.add_typer(device_app, name="device")

_NEGATIVE_NUMBER = re.compile(r"^-(\d|\.\d|inf|nan)", re.IGNORECASE)
_CONFIG_HELP = "YAML with 'device: {type: ..., ...}'; default: the virtual DNPU"


class _NegativeNumbersAreArguments(TyperCommand):
    """A command whose arguments may be negative numbers: ``-0.5,0,0`` is a value, not an option.

    Options (``--config x.yaml``) may stand before or after the numbers; the
    arguments keep their order.
    """

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if "--" in args or not any(_NEGATIVE_NUMBER.match(a) for a in args):
            return super().parse_args(ctx, args)
        with_value = {
            name for p in self.params if getattr(p, "param_type_name", "") == "option" and not getattr(p, "is_flag", False)
            for name in (*p.opts, *p.secondary_opts)
        }  # fmt: skip
        options: list[str] = []
        arguments: list[str] = []
        tokens = iter(args)
        for token in tokens:
            if token.startswith("-") and not _NEGATIVE_NUMBER.match(token):
                options.append(token)
                value = next(tokens, None) if token in with_value else None
                if value is not None:
                    options.append(value)
            else:
                arguments.append(token)
        return super().parse_args(ctx, [*options, "--", *arguments])


def parse_voltages(texts: list[str]) -> np.ndarray:
    """The voltages (V) a person typed: numbers separated by commas and/or spaces, e.g. ``-0.5,0 0.1``."""
    from inmaterio.errors import VoltageError

    text = " ".join(texts).strip()
    fields = re.split(r"\s*,\s*|\s+", text) if text else []
    values = []
    for k, field in enumerate(fields):
        try:
            values.append(float(field))
        except ValueError:
            what = "an empty value" if not field else f"'{field}'"
            raise VoltageError(f"voltages must be numbers separated by commas, got {what} as value {k} of '{text}'") from None
    if not values:
        raise VoltageError("no voltages given: type them separated by commas, e.g. 0.1,-0.3,0,0,0,0,0.2")
    return np.array(values)


@device_app.command("measure", cls=_NegativeNumbersAreArguments)
@friendly_errors
def device_measure(
    voltages: Annotated[list[str], typer.Argument(help="activation voltages in V, comma separated, e.g. -0.5,0.1,0,0,0,0,0.2")],
    config: Annotated[Optional[Path], typer.Option(help=_CONFIG_HELP)] = None,
) -> None:
    """Measure the readout current at one operating point."""
    v = parse_voltages(voltages)
    device = load_device(config)
    result = device.measure_with_error(v)  # 1-D: one operating point; a wrong count is refused naming the electrodes
    console.print(f"I = {result.current_na[0]:.3f} ± {result.stderr_na[0]:.3f} nA")


@device_app.command("iv")
@friendly_errors
def device_iv(
    config: Annotated[Optional[Path], typer.Option(help=_CONFIG_HELP)] = None,
    out: Annotated[Path, typer.Option(help="run folder for iv.json and iv_curves.png")] = Path("runs/device_iv"),
    points: Annotated[int, typer.Option(min=2, max=1000, help="points per sweep")] = 25,
    overwrite: Annotated[bool, typer.Option(help="replace a finished sweep in --out")] = False,
) -> None:
    """Sweep every activation electrode over its range (others at 0 V) and plot the I-V curves."""
    from inmaterio.plots import plot_iv_curves
    from inmaterio.runs import open_run
    from inmaterio.smg.iv import iv_curves

    device = load_device(config)
    spec = {k: v for k, v in device.describe().items() if k != "package_version"}
    settings = {"device": spec, "points": points}
    with open_run(
        out, "inmaterio.devices.iv", identity=settings, config=settings, overwrite=overwrite, notify=console.print
    ) as run:
        if run.finished:
            console.print(f"'{out}' already holds this sweep: {run.file('iv.json')}, {run.file('iv_curves.png')} "
                          "(pass --overwrite to measure again)", soft_wrap=True)  # fmt: skip
            return
        with console.status(f"measuring {device.n_activation * points} operating points ..."), device.random_streams("device iv"):
            curves = iv_curves(device.measure_with_error, device.voltage_ranges, points)
        run.write_json("iv.json", {
            "electrodes": device.activation_names, "readout": device.readout_name, "sweep_v": curves.sweep_v.tolist(),
            "current_na": curves.current_na.tolist(), "stderr_na": None if curves.stderr_na is None else curves.stderr_na.tolist(),
            "base_v": curves.base_v.tolist(),
        })  # fmt: skip
        figure = plot_iv_curves({"device": curves}, device.activation_names)
        run.write_file("iv_curves.png", lambda path: figure.savefig(path, format="png"), what="figure")
        run.finish({"points_per_sweep": points, "current_min_na": float(curves.current_na.min()),
                    "current_max_na": float(curves.current_na.max())})  # fmt: skip
    console.print(f"data: {run.file('iv.json')}; figure: {run.file('iv_curves.png')}", soft_wrap=True)
