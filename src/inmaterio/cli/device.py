"""``inmaterio device``: measure a device.

``device measure`` takes the voltages as a person types them: comma or space
separated, negative numbers included (``device measure -0.5,0,0,0,0,0,0``).
``device iv`` keeps its sweep in a run folder (kind ``inmaterio.devices.iv``):
``iv.json`` (the curves), ``iv_curves.png``, ``run.json``, ``config.yaml``; the
folder is checked before anything is measured, a failed write later saves the
data to a rescue folder the message names, and the same command on a
finished folder shows it instead of measuring again (``--overwrite`` replaces
it). A device on an instrument whose config names no ``measurement_file``
appends the waveforms it plays to ``measurements.h5`` in that folder.

For a device on an instrument (``device: {type: instrument, ...}``, see
:mod:`inmaterio.devices.instruments`): ``device dry-run`` builds and checks the
waveforms of some operating points against every limit without playing them
(and plots the first); ``device calibrate`` measures latency, offsets and
settling and writes the calibrated config to a new file (never overwriting one);
``device export`` writes every acquisition of a measurement file to a NetCDF
file for xarray (never overwriting one).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer
from typer.core import TyperCommand

from inmaterio.cli.app import app, console, friendly_errors, load_device, right_aligned_table

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
    with load_device(config) as device:  # an instrument is closed after: tasks released, outputs at 0 V
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
    from inmaterio.devices.instruments import RUN_MEASUREMENT_FILE, measurements_in
    from inmaterio.plots import plot_iv_curves
    from inmaterio.runs import open_run
    from inmaterio.smg.iv import iv_curves

    device = load_device(config)
    spec = {k: v for k, v in device.describe().items() if k != "package_version"}
    settings = {"device": spec, "points": points}
    with (
        device,  # an instrument is closed when the sweep ends, normally or not: tasks released, outputs at 0 V
        open_run(
            out, "inmaterio.devices.iv", identity=settings, config=settings, overwrite=overwrite, notify=console.print
        ) as run,
    ):
        if run.finished:
            console.print(f"'{out}' already holds this sweep: {run.file('iv.json')}, {run.file('iv_curves.png')} "
                          "(pass --overwrite to measure again)", soft_wrap=True)  # fmt: skip
            return
        with (
            console.status(f"measuring {device.n_activation * points} operating points ..."),
            device.random_streams("device iv"),
            measurements_in(run.file(RUN_MEASUREMENT_FILE)),
        ):
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


def _instrument(config: Path):
    """The instrument device of a YAML file (``device: {type: instrument, ...}``), or a ConfigError."""
    from inmaterio.devices.instruments import InstrumentDevice
    from inmaterio.errors import ConfigError

    device = load_device(config)
    if not isinstance(device, InstrumentDevice):
        kind = device.describe()["type"]
        raise ConfigError(f"'{config}' names a device of type '{kind}'; this command needs type 'instrument'")
    return device


@device_app.command("calibrate")
@friendly_errors
def device_calibrate(
    config: Annotated[Path, typer.Option(help="YAML with 'device: {type: instrument, ...}'")],
    out: Annotated[Path, typer.Option(help="new YAML: the same device with the calibration and settle_samples")],
    tolerance: Annotated[float, typer.Option(min=1e-6, max=0.5, help="settling left, fraction of a step")] = 0.01,
    hold_samples: Annotated[int, typer.Option(min=8, help="samples each calibration step is held")] = 500,
) -> None:
    """Measure latency, offsets and settling of an instrument; write the calibrated device config (never overwrites)."""
    import yaml

    from inmaterio.devices.instruments import calibrate
    from inmaterio.errors import ConfigError

    if out.exists():
        raise ConfigError(f"'{out}' exists; give a new --out (calibrations are never overwritten)")
    device = _instrument(config)
    try:
        report = calibrate(device, tolerance=tolerance, hold_samples=hold_samples)
    finally:
        device.close()
    calibrated = device.with_calibration(report.calibration)
    c = report.calibration
    table = right_aligned_table("settling per electrode", ["electrode", "step (V)", "settle (samples)", "settle (ms)"])
    for name, samples in report.settle_samples_per_electrode.items():
        table.add_row(name, f"{report.step_v[name]:.3g}", str(samples), f"{1e3 * samples / device.sample_rate_hz:.3g}")
    console.print(table)
    offsets = ", ".join(f"{x:.4g}" for x in c.offset_na or [])
    console.print(f"latency {c.latency_samples} samples; offset [{offsets}] nA; recommended settle_samples {c.settle_samples}, "
                  f"plateau {report.recommended_plateau_samples} samples ({1e3 * report.recommended_plateau_samples / device.sample_rate_hz:.3g} ms)",
                  soft_wrap=True)  # fmt: skip
    spec = {k: v for k, v in calibrated.describe().items() if k != "package_version"}
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "x") as f:  # exclusive: a file that appeared meanwhile is not overwritten
        yaml.safe_dump({"device": spec}, f, sort_keys=False)
    console.print(f"calibrated config: {out}", soft_wrap=True)


@device_app.command("dry-run")
@friendly_errors
def device_dry_run(
    config: Annotated[Path, typer.Option(help="YAML with 'device: {type: instrument, ...}'")],
    points: Annotated[Optional[Path], typer.Option(help="CSV of operating points, one row of voltages (V) each")] = None,
    random: Annotated[int, typer.Option(min=1, help="without --points: this many random points inside the ranges")] = 16,
    seed: Annotated[int, typer.Option(help="seed of the random points")] = 0,
    plot: Annotated[Optional[Path], typer.Option(help="PNG of the first waveform")] = None,
) -> None:
    """Build and check the waveforms of some operating points against every limit, without playing them."""
    from inmaterio.devices.instruments import dry_run

    device = _instrument(config)
    if points is not None:
        from inmaterio.errors import VoltageError

        flat = parse_voltages([line for line in points.read_text().splitlines() if line.strip()])
        if flat.size % device.n_activation:
            raise VoltageError(
                f"'{points}' holds {flat.size} numbers, not rows of {device.n_activation} voltages for {device.activation_names}"
            )
        voltages = flat.reshape(-1, device.n_activation)
    else:
        r = device.voltage_ranges
        voltages = np.random.default_rng(seed).uniform(r[:, 0], r[:, 1], (random, device.n_activation))
    result = dry_run(device, voltages, plot=plot)
    console.print(f"dry run OK: {len(voltages)} points, {len(result.waveforms_v)} waveform(s), {result.n_samples} samples, "
                  f"{result.duration_s:.4g} s at {device.sample_rate_hz:g} Hz, fastest ramp {result.max_ramp_v_per_s:.4g} V/s "
                  f"(limit {device.config.safety.max_ramp_v_per_s:g}); nothing was played"
                  + (f"; waveform plot: {plot}" if plot else ""), soft_wrap=True)  # fmt: skip


@device_app.command("export")
@friendly_errors
def device_export(
    measurements: Annotated[Path, typer.Argument(help="an HDF5 measurement file, e.g. a run folder's measurements.h5")],
    out: Annotated[Path, typer.Option(help="folder of the NetCDF files, one per acquisition (never replaced)")],
) -> None:
    """Export every acquisition of a measurement file to NetCDF for xarray (needs pip install "inmaterio[xarray]")."""
    from inmaterio.devices.instruments import export_netcdf

    written = export_netcdf(measurements, out)
    sessions = len({p.name.split("_acquisition_")[0] for p in written})
    console.print(f"exported {len(written)} acquisition(s) of {sessions} session(s) to {out}: {written[0].name} ... "
                  f"{written[-1].name}; open one with xarray.open_dataset", soft_wrap=True)  # fmt: skip
