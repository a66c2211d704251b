"""The surrogate model: a multilayer perceptron from electrode voltages to readout current.

For voltages ``v`` (volts, shape ``(batch, n)``) the model computes, in nA::

    x = (v - input_offset) * input_scale                 (normalised inputs, (batch, n))
    I = mlp(x)[:, 0] * output_scale + output_offset      ((batch,))

``mlp`` is ``Linear(n, h0), act, Linear(h0, h1), act, ..., Linear(h_last, 1)``
in one :class:`torch.nn.Sequential`, so its state-dict keys are
``mlp.0.weight``, ``mlp.0.bias``, ``mlp.2.weight``, ... The four
normalisation tensors are buffers and are saved with the weights. By default
each electrode's voltage range is mapped linearly onto [-1, 1]
(``input_offset`` = range mid-point, ``input_scale`` = 2 / (high - low)) and
the output is not rescaled (offset 0 nA, scale 1).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from inmaterio.denormals import flushed_denormals
from inmaterio.surrogate.info import DeviceInfo

__all__ = ["ACTIVATIONS", "SurrogateModel", "checked_hidden_sizes", "state_shapes", "parameter_count"]

#: The activation functions a surrogate may use, by name (the only name-to-class lookup).
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "elu": nn.ELU,
    "leaky_relu": nn.LeakyReLU,
}


def checked_hidden_sizes(hidden_sizes: Any) -> tuple[int, ...]:
    """``hidden_sizes`` as a tuple of positive ints; ValueError for anything else (floats, bools, strings, empty)."""
    try:
        sizes = tuple(hidden_sizes)
    except TypeError:
        raise ValueError(f"hidden_sizes must be a list of integers, got {hidden_sizes!r}") from None
    if any(isinstance(h, bool) for h in sizes):
        raise ValueError(f"hidden_sizes must be integers, got {list(sizes)}")
    try:
        sizes = tuple(operator.index(h) for h in sizes)
    except TypeError:
        raise ValueError(f"hidden_sizes must be integers, got {list(sizes)}") from None
    if not sizes or any(h <= 0 for h in sizes):
        raise ValueError(f"hidden_sizes must be a non-empty list of positive integers, got {list(sizes)}")
    return sizes


def state_shapes(n_inputs: int, hidden_sizes: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """The state-dict keys of a :class:`SurrogateModel` and their shapes, without building it.

    ``mlp.{2i}.weight (out, in)``, ``mlp.{2i}.bias (out,)`` per linear layer, then the buffers
    ``input_offset (n,)``, ``input_scale (n,)``, ``output_offset ()``, ``output_scale ()``.
    """
    widths = (n_inputs, *hidden_sizes, 1)
    shapes: dict[str, tuple[int, ...]] = {}
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        shapes[f"mlp.{2 * i}.weight"] = (n_out, n_in)
        shapes[f"mlp.{2 * i}.bias"] = (n_out,)
    shapes.update(input_offset=(n_inputs,), input_scale=(n_inputs,), output_offset=(), output_scale=())
    return shapes


def parameter_count(n_inputs: int, hidden_sizes: Sequence[int]) -> int:
    """Number of trainable parameters (weights and biases) of the MLP."""
    widths = (n_inputs, *hidden_sizes, 1)
    return sum((n_in + 1) * n_out for n_in, n_out in zip(widths[:-1], widths[1:]))


class SurrogateModel(nn.Module):
    """MLP surrogate of a device: ``forward(voltages (batch, n) V) -> (batch,) nA``.

    Parameters
    ----------
    info : the device description (electrodes, ranges, gain, clipping).
    hidden_sizes : widths of the hidden layers, each > 0, at least one.
    activation : one of :data:`ACTIVATIONS` (``relu``, ``tanh``, ``elu``, ``leaky_relu``).

    Attributes
    ----------
    info, hidden_sizes (tuple), activation (str), mlp (nn.Sequential),
    metadata : free dict (set by :func:`~inmaterio.surrogate.load_surrogate`
        to the saved metadata; empty for a new model).
    """

    def __init__(
        self,
        info: DeviceInfo,
        hidden_sizes: Sequence[int] = (90, 90, 90, 90, 90),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if not isinstance(info, DeviceInfo):
            raise TypeError(f"info must be a DeviceInfo, got {type(info).__name__}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; allowed: {sorted(ACTIVATIONS)}")
        sizes = checked_hidden_sizes(hidden_sizes)
        self.info = info
        self.hidden_sizes = sizes
        self.activation = activation
        self.metadata: dict[str, Any] = {}

        widths = (info.n_activation, *sizes)
        layers: list[nn.Module] = []
        for n_in, n_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation]()]
        layers.append(nn.Linear(widths[-1], 1))
        self.mlp = nn.Sequential(*layers)

        ranges = info.ranges_array()
        self.register_buffer("input_offset", torch.tensor(ranges.mean(axis=1), dtype=torch.float32))
        self.register_buffer("input_scale", torch.tensor(2.0 / (ranges[:, 1] - ranges[:, 0]), dtype=torch.float32))
        self.register_buffer("output_offset", torch.tensor(0.0))
        self.register_buffer("output_scale", torch.tensor(1.0))

    def set_input_normalization(self, offset: Any, scale: Any) -> None:
        """Set ``x = (v - offset) * scale``; ``offset`` V and ``scale`` 1/V, each ``(n_activation,)``.

        Raises ValueError for a wrong shape, a non-finite value or a zero scale.
        """
        n = self.info.n_activation
        offset = np.asarray(offset, dtype=np.float64)
        scale = np.asarray(scale, dtype=np.float64)
        for name, value in (("offset", offset), ("scale", scale)):
            if value.shape != (n,):
                raise ValueError(f"input {name} must have shape ({n},), got {value.shape}")
            if not np.isfinite(value).all():
                raise ValueError(f"input {name} must be finite, got {value.tolist()}")
        if (scale == 0).any():
            raise ValueError(f"input scale must be non-zero for every electrode, got {scale.tolist()}")
        with torch.no_grad():
            self.input_offset.copy_(torch.from_numpy(offset))
            self.input_scale.copy_(torch.from_numpy(scale))

    def set_output_normalization(self, mean_na: float, std_na: float) -> None:
        """Set the output map ``I = mlp(x) * std_na + mean_na`` (nA); ``std_na`` finite and > 0."""
        if not np.isfinite(mean_na):
            raise ValueError(f"output mean must be finite, got {mean_na} nA")
        if not (np.isfinite(std_na) and std_na > 0):
            raise ValueError(f"output std must be finite and > 0, got {std_na} nA")
        with torch.no_grad():
            self.output_offset.fill_(float(mean_na))
            self.output_scale.fill_(float(std_na))

    def forward(self, voltages: torch.Tensor) -> torch.Tensor:
        """Readout current in nA, ``(batch,)``, for ``voltages (batch, n_activation)`` V.

        No range checks (the training hot path); differentiable w.r.t. ``voltages``.
        Inputs are cast to the dtype of the model's buffers (float32 by default).
        Runs with subnormal floats flushed to zero (:func:`~inmaterio.denormals.flushed_denormals`):
        trained weights are often tiny, and their subnormal products slow the matrix products
        several times over on x86 CPUs without changing the output.
        """
        with flushed_denormals():
            x = (voltages.to(self.input_offset.dtype) - self.input_offset) * self.input_scale
            return self.mlp(x).squeeze(-1) * self.output_scale + self.output_offset

    def predict(self, voltages: Any, batch_size: int = 65536) -> np.ndarray:
        """Checked, gradient-free prediction: float64 numpy ``(batch,)`` nA.

        ``voltages`` (array-like or tensor, ``(batch, n_activation)`` V, or 1-D
        for one sample) are validated by :meth:`DeviceInfo.check_voltages`
        (raises :class:`~inmaterio.errors.VoltageError` naming the electrode
        for an out-of-range, NaN or infinite value) and evaluated in batches of
        ``batch_size`` rows in the model's dtype (float32 by default).
        """
        if batch_size <= 0:
            raise ValueError(f"batch_size must be > 0, got {batch_size}")
        v = self.info.check_voltages(voltages)
        dtype, device = self.input_offset.dtype, self.input_offset.device
        out = np.empty(len(v), dtype=np.float64)
        with torch.no_grad():
            for start in range(0, len(v), batch_size):
                chunk = torch.as_tensor(v[start : start + batch_size], dtype=dtype, device=device)
                out[start : start + len(chunk)] = self(chunk).cpu().numpy()
        return out

    def architecture(self) -> dict[str, Any]:
        """JSON-serialisable shape of the network: ``hidden_sizes``, ``activation``, ``n_inputs``."""
        return {"hidden_sizes": list(self.hidden_sizes), "activation": self.activation, "n_inputs": self.info.n_activation}
