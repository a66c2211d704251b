"""Saving and loading the parameters of a circuit model (safetensors, no pickle).

One file, ``*.safetensors``, holds every parameter in its physical unit
(float64: siemens, volts; ``"layer.param" -> tensor``) and, in its metadata,
a JSON document: ``format`` (``"inmaterio-circuit"``), the package version,
the time, the model's layers (their settings) and each parameter's bounds.
:func:`load_parameters` loads into a model built the same way (same layers
and shapes) and refuses foreign, corrupt or mismatching files (names,
shapes, non-finite values, values outside the bounds) without changing the
model.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

import inmaterio
from inmaterio.circuits.graph import Model
from inmaterio.errors import ConfigError, ModelFileError
from inmaterio.fileio import atomic_path

__all__ = ["load_parameters", "save_parameters"]

FORMAT = "inmaterio-circuit"


def save_parameters(model: Model, path: str | Path, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write the model's parameters to ``path`` (``.safetensors``) atomically; returns the path."""
    path = Path(path)
    document = {
        "format": FORMAT,
        "package_version": inmaterio.__version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "layers": model.describe()["layers"],
        "bounds": {k: list(v) for k, v in model.bounds.items()},
        "metadata": metadata or {},
    }
    tensors = {k: v.contiguous().cpu() for k, v in model.parameter_values().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"inmaterio": json.dumps(document)})
    return path


def load_parameters(model: Model, path: str | Path) -> dict[str, Any]:
    """Load parameters saved by :func:`save_parameters` into ``model``; returns the file's JSON document.

    Raises:
        ModelFileError: missing, corrupt or foreign file, or parameters that do not
            match the model (names, shapes, bounds); the model is left unchanged.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(
            f"circuit parameter file '{path}' " + ("is a folder, not a file" if path.is_dir() else "does not exist")
        )
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ModelFileError(f"circuit parameter file '{path}' cannot be read: {err.strerror or err}") from None
    try:
        tensors = load_safetensors_bytes(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        document = json.loads(header.get("__metadata__", {}).get("inmaterio", "null"))
    except (SafetensorError, ValueError, TypeError, AttributeError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"'{path}' is not a readable safetensors file (corrupt or truncated): {err}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ModelFileError(f"'{path}' is not an inmaterio circuit parameter file (format '{FORMAT}')")
    params = model.normalised_parameters()
    if sorted(tensors) != sorted(params):
        raise ModelFileError(f"'{path}' holds parameters {sorted(tensors)}, the model has {sorted(params)}")
    for key, value in sorted(tensors.items()):
        if tuple(value.shape) != tuple(params[key].shape):
            raise ModelFileError(
                f"'{path}': parameter {key!r} has shape {tuple(value.shape)}, the model's is {tuple(params[key].shape)}"
            )
    try:
        model.set_parameter_values(dict(sorted(tensors.items())))
    except ConfigError as err:  # dtype, finiteness or bounds: a file that does not fit this model
        raise ModelFileError(f"'{path}' does not fit the model: {err}") from None
    return document
