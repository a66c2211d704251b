"""``inmaterio surrogate``: inspect and import surrogate models."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from inmaterio.cli.app import app, console, friendly_errors

surrogate_app = typer.Typer(help="Inspect and import surrogate models.", no_args_is_help=True)
app.add_typer(surrogate_app, name="surrogate")


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
    noise = "unknown" if info.noise_na is None else f"{info.noise_na} nA"
    clipping = "none" if info.output_clipping_na is None else f"{list(info.output_clipping_na)} nA"
    console.print(f"noise (test RMSE): {noise}; output clipping: {clipping}")
    console.print(f"device: {_device_summary(info.provenance.get('device'))}; "
                  f"package version: {info.provenance.get('package_version', 'unknown')}", soft_wrap=True)  # fmt: skip


def _device_summary(description: object) -> str:
    """The recorded device in words: its registry type, or why it cannot be rebuilt."""
    from inmaterio.devices.registry import DEVICE_TYPES, device_spec_from_description
    from inmaterio.errors import ConfigError

    if description is None:
        return "not recorded"
    try:
        spec = device_spec_from_description(description)
    except ConfigError as err:
        return f"a description this version cannot rebuild ({' '.join(str(err).split())[:200]})"
    return f"{spec.type} ({DEVICE_TYPES[spec.type].what})"


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
