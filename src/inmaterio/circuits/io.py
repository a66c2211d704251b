"""Saving and loading the parameters of a circuit model (safetensors, no pickle).

One file, ``*.safetensors``, holds every parameter (float64) and, in its
metadata, a JSON document: ``format`` (``"inmaterio-circuit"``), the package
version, the time, the model's layers (their settings) and each parameter's
bounds. :func:`load_parameters` loads into a model built the same way
(same layers and shapes) and refuses foreign, corrupt or mismatching files
without changing the model.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save_file

import inmaterio

from ..errors import ModelFileError
from ..fileio import atomic_path
from .graph import Model

__all__ = ["load_parameters", "save_parameters"]

FORMAT = "inmaterio-circuit"


def _layer_settings(model: Model) -> list[dict[str, Any]]:
    out = []
    for layer in model.layers:
        settings = {"type": type(layer).__name__, **layer.config()}
        out.append(json.loads(json.dumps(settings, default=str)))
    return out


def save_parameters(model: Model, path: str | Path, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write the model's parameters to ``path`` (``.safetensors``) atomically; returns the path."""
    path = Path(path)
    document = {
        "format": FORMAT,
        "package_version": inmaterio.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "layers": _layer_settings(model),
        "bounds": {k: list(v) for k, v in model.bounds.items()},
        "metadata": metadata or {},
    }
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.parameters.items()}
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
        raise ModelFileError(f"circuit parameter file '{path}' does not exist")
    data = path.read_bytes()
    try:
        tensors = load_safetensors_bytes(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        document = json.loads(header.get("__metadata__", {}).get("inmaterio", "null"))
    except (SafetensorError, ValueError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"'{path}' is not a readable safetensors file (corrupt or truncated): {err}") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ModelFileError(f"'{path}' is not an inmaterio circuit parameter file (format '{FORMAT}')")
    if sorted(tensors) != sorted(model.parameters):
        raise ModelFileError(f"'{path}' holds parameters {sorted(tensors)}, the model has {sorted(model.parameters)}")
    for key, value in tensors.items():
        if tuple(value.shape) != tuple(model.parameters[key].shape):
            raise ModelFileError(f"'{path}': parameter {key!r} has shape {tuple(value.shape)}, the model's is {tuple(model.parameters[key].shape)}")
    try:
        model.set_parameters(tensors)
    except Exception as err:  # noqa: BLE001 - bounds or finiteness: a file that does not fit this model
        raise ModelFileError(f"'{path}' does not fit the model: {err}") from None
    return document
