"""Layers of analog circuits for the functional API: called on :class:`Nodes`, they add elements.

A layer is called on symbolic :class:`Nodes` (handles of circuit nodes, not
values) and returns new ones, Keras-style::

    x = Input(4, inverted=True, name="x")        # 8 source nodes: x and -x
    b = Bias([1.0, -1.0], name="b")              # 2 fixed bias sources
    h = Dense(10, name="hidden")(Concatenate()([x, b]))
    h = Diodes(ShockleyDiode(), orientation="both", bias_v=(0.3, 0.3))(h)
    h = Amplifier(4.0)(h)
    y = Dense(6, name="out")(h)

Calling one layer twice shares its parameters (e.g. the same conductances
in two places). :class:`~inmaterio.circuits.graph.Model` turns the graph
into a :class:`~inmaterio.circuits.netlist.Circuit`. Units: volts, siemens.

Conductance initialisation (:class:`Dense`, :class:`LocallyConnected2D`):
uniform in ``init_s`` (default: the lower half of the bounds on a log scale,
``[g_min, sqrt(g_min g_max)]``), drawn from the model's seeded generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from inmaterio.circuits.elements import ShockleyDiode, TwoTerminal
from inmaterio.circuits.netlist import DTYPE, real_tensor
from inmaterio.errors import ConfigError, VoltageError

__all__ = [
    "Amplifier",
    "as_volts",
    "Bias",
    "BiasLayer",
    "Concatenate",
    "Dense",
    "Diodes",
    "Input",
    "InputLayer",
    "Layer",
    "LocallyConnected2D",
    "Nodes",
]


def as_volts(x, what: str) -> torch.Tensor:
    """``x`` (tensor, array, nested lists of real numbers) as a float64 tensor of volts.

    Raises:
        VoltageError: strings, objects or complex numbers (``what`` names the data).
    """
    return real_tensor(x, what, VoltageError).to(DTYPE)


class Nodes:
    """Symbolic handle of some circuit nodes: made by one layer call, or a concatenation of others.

    Attributes:
        shape: logical shape (``(n,)`` or ``(channels, height, width)``).
        call: the layer call that made them (None for a concatenation).
        parts: for a concatenation, the pieces in order.
        source: whether the nodes are fixed by voltage sources (inputs, biases).
    """

    def __init__(self, shape: tuple[int, ...], call: LayerCall | None, parts: Sequence[Nodes] = (), source: bool = False) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.call = call
        self.parts = tuple(parts)
        self.source = source

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        who = self.call.layer.label if self.call else "concatenate"
        return f"Nodes({who}, shape={self.shape})"


@dataclass
class LayerCall:
    """One call of a layer: its input node handles and the output handle it made."""

    layer: Layer
    inputs: tuple[Nodes, ...]
    output: Nodes


@dataclass
class Emitted:
    """Elements one layer call adds, in terms of physical node ids (``-1`` = ground).

    ``resistors``: ``(R, 2)`` node pairs with ``resistor_params``: ``(parameter name, flat indices (R,))``.
    ``diodes``: ``(model, anode (D,), cathode (D,), bias_v (D,))`` tuples.
    ``amplifiers``: ``(A, 2)`` (input, output) with gains ``(A,)`` and current gains ``(A,)``.
    """

    resistors: torch.Tensor | None = None
    resistor_param: tuple[str, torch.Tensor] | None = None
    diodes: tuple[tuple[TwoTerminal, torch.Tensor, torch.Tensor, torch.Tensor], ...] = ()
    amplifiers: torch.Tensor | None = None
    gain: torch.Tensor | None = None
    current_gain: torch.Tensor | None = None


class Layer:
    """Base class: a named layer that may own parameters (float64 tensors with bounds).

    Subclasses implement :meth:`output_shape` (and the checks of their inputs),
    :meth:`init_parameters` and :meth:`emit`. ``new_nodes`` says whether the
    output nodes are new circuit nodes or the input nodes themselves
    (a :class:`Diodes` layer only hangs elements on existing nodes).
    """

    new_nodes: bool = True
    makes_sources: bool = False

    def __init__(self, name: str | None = None) -> None:
        if name is not None and (not isinstance(name, str) or not name or "/" in name or "." in name):
            raise ConfigError(f"layer name must be a non-empty string without '/' or '.', got {name!r}")
        self.name = name
        self.calls: list[LayerCall] = []

    @property
    def label(self) -> str:
        """How messages name the layer: ``'h'``, or ``(unnamed)`` before a model has named it."""
        return f"'{self.name}'" if self.name else "(unnamed)"

    def __call__(self, *inputs: Nodes | Sequence[Nodes]) -> Nodes:
        flat = tuple(inputs[0]) if len(inputs) == 1 and isinstance(inputs[0], list | tuple) else tuple(inputs)
        for k, x in enumerate(flat):
            if not isinstance(x, Nodes):
                raise ConfigError(f"layer {self.label} input {k} must be Nodes (the output of a layer), got {type(x).__name__}")
        shape = self.output_shape([x.shape for x in flat])
        call = LayerCall(self, flat, None)  # type: ignore[arg-type]
        call.output = Nodes(shape, call, source=self.makes_sources)
        if self.calls and self.parameter_shapes():
            first = self.calls[0].inputs
            if [x.shape for x in first] != [x.shape for x in flat]:
                raise ConfigError(
                    f"layer {self.label} is shared, so every call needs the input shapes of its first call "
                    f"{[x.shape for x in first]}, got {[x.shape for x in flat]}"
                )
        self.calls.append(call)
        return call.output

    # -- to implement
    def output_shape(self, input_shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
        raise NotImplementedError

    def parameter_shapes(self) -> dict[str, tuple[int, ...]]:
        """Learnable parameters of the layer: name -> shape (after its first call)."""
        return {}

    def parameter_bounds(self) -> dict[str, tuple[float, float]]:
        """Allowed interval of each parameter (units of the parameter)."""
        return {}

    def init_parameters(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return {}

    def emit(self, inputs: list[torch.Tensor], outputs: torch.Tensor) -> Emitted:
        """Elements of one call, given the physical node ids of its inputs and outputs (each flat, long)."""
        return Emitted()

    def config(self) -> dict[str, Any]:
        """The layer's settings as plain data (saved with parameter files and in a run's identity; the model adds the name)."""
        return {}


def _single(layer: Layer, shapes: list[tuple[int, ...]]) -> tuple[int, ...]:
    if len(shapes) != 1:
        raise ConfigError(f"layer {layer.label} takes one input, got {len(shapes)} (use Concatenate first)")
    return shapes[0]


class InputLayer(Layer):
    """Input voltages: one voltage source per feature, optionally followed by an inverted copy.

    Args:
        shape: features per sample, an int or ``(height, width)`` for images.
        inverted: also make a source at ``-x`` for every feature (so that
            positive conductances can express negative weights). The nodes are
            ``[x, -x]`` (flat) or channels ``(2, height, width)``.
        voltage_range_v: allowed input voltages (checked on every call).
    """

    makes_sources = True

    def __init__(self, shape: int | Sequence[int], *, inverted: bool = False, voltage_range_v=(-10.0, 10.0), name=None) -> None:
        super().__init__(name)
        self.feature_shape = (int(shape),) if isinstance(shape, int) else tuple(int(s) for s in shape)
        if not self.feature_shape or min(self.feature_shape) < 1 or len(self.feature_shape) > 2:
            raise ConfigError(f"Input {self.label} shape must be a positive int or (height, width), got {shape!r}")
        self.inverted = bool(inverted)
        lo, hi = (float(v) for v in voltage_range_v)
        if not lo < hi:
            raise ConfigError(f"Input {self.label} voltage_range_v must be (low, high) with low < high, got {voltage_range_v}")
        self.voltage_range_v = (lo, hi)
        self.node = self()  # an Input is its own first call

    def __call__(self, *inputs):
        if self.calls:
            raise ConfigError(f"Input {self.label} is a source of the model and takes no inputs")
        return super().__call__(*inputs)

    def output_shape(self, input_shapes):
        if len(self.feature_shape) == 1:
            return (self.feature_shape[0] * (2 if self.inverted else 1),)
        return ((2 if self.inverted else 1), *self.feature_shape)

    @property
    def n_features(self) -> int:
        return math.prod(self.feature_shape)

    def voltages(self, x) -> torch.Tensor:
        """``(batch, features...)`` data (V) -> ``(batch, size)`` source voltages, checked against the range.

        Real numbers of any dtype are taken as volts (float64); complex or
        non-numeric data, a wrong shape, an empty batch, NaN/inf or values
        outside ``voltage_range_v`` raise :class:`~inmaterio.errors.VoltageError`
        naming the sample and feature.
        """
        x = as_volts(x, f"Input {self.label} data")
        if x.dim() < 1 or tuple(x.shape[1:]) != self.feature_shape and math.prod(x.shape[1:]) != self.n_features:
            raise VoltageError(f"Input {self.label} expects data of shape (batch, {self.n_features}), got {tuple(x.shape)}")
        if len(x) == 0:
            raise VoltageError(f"Input {self.label} got an empty batch (shape {tuple(x.shape)}); give at least one sample")
        x = x.reshape(len(x), -1)
        if not torch.isfinite(x).all():
            s, f = (~torch.isfinite(x)).nonzero()[0].tolist()
            raise VoltageError(f"Input {self.label} feature {f} of sample {s} is {x[s, f].item()}: voltages must be finite")
        lo, hi = self.voltage_range_v
        bad = (x < lo) | (x > hi)
        if bad.any():
            s, f = bad.nonzero()[0].tolist()
            raise VoltageError(f"Input {self.label} feature {f} of sample {s}: {x[s, f].item():.4g} V outside [{lo}, {hi}] V")
        return torch.cat([x, -x], 1) if self.inverted else x

    def config(self):
        return {"shape": list(self.feature_shape), "inverted": self.inverted, "voltage_range_v": list(self.voltage_range_v)}


class BiasLayer(Layer):
    """Bias voltage sources: fixed, or learnable within ``bounds_v``.

    Args:
        voltages_v: one voltage per bias node.
        learnable: train the voltages (EP gradient from the sources' currents).
        bounds_v: allowed interval of learnable biases.
    """

    makes_sources = True

    def __init__(self, voltages_v: Sequence[float], *, learnable: bool = False, bounds_v=(-10.0, 10.0), name=None) -> None:
        super().__init__(name)
        v = torch.as_tensor(voltages_v, dtype=DTYPE).reshape(-1)
        if v.numel() == 0 or not torch.isfinite(v).all():
            raise ConfigError(f"Bias {self.label} voltages_v must be a non-empty list of finite volts, got {voltages_v!r}")
        self.initial_v = v
        self.learnable = bool(learnable)
        self.bounds_v = (float(bounds_v[0]), float(bounds_v[1]))
        bad = (v < self.bounds_v[0]) | (v > self.bounds_v[1])
        if bad.any():
            k = int(bad.nonzero()[0])
            raise ConfigError(f"Bias {self.label} voltage {k} = {v[k].item()} V outside bounds_v {list(self.bounds_v)}")
        self.node = self()

    def __call__(self, *inputs):
        if self.calls:
            raise ConfigError(f"Bias {self.label} is a source of the model and takes no inputs")
        return super().__call__(*inputs)

    def output_shape(self, input_shapes):
        return (self.initial_v.numel(),)

    def parameter_shapes(self):
        return {"voltage_v": tuple(self.initial_v.shape)} if self.learnable else {}

    def parameter_bounds(self):
        return {"voltage_v": self.bounds_v} if self.learnable else {}

    def init_parameters(self, generator):
        return {"voltage_v": self.initial_v.clone()} if self.learnable else {}

    def config(self):
        return {"voltages_v": self.initial_v.tolist(), "learnable": self.learnable, "bounds_v": list(self.bounds_v)}


class Concatenate(Layer):
    """Join node groups into one (flattening each); adds no element."""

    new_nodes = False

    def __call__(self, *inputs):
        flat = tuple(inputs[0]) if len(inputs) == 1 and isinstance(inputs[0], list | tuple) else tuple(inputs)
        if not flat:
            raise ConfigError("Concatenate needs at least one input")
        for k, x in enumerate(flat):
            if not isinstance(x, Nodes):
                raise ConfigError(f"Concatenate input {k} must be Nodes, got {type(x).__name__}")
        return Nodes((sum(x.size for x in flat),), None, parts=flat)


def _conductance_bounds(owner: str, bounds_s, init_s) -> tuple[tuple[float, float], tuple[float, float]]:
    lo, hi = (float(b) for b in bounds_s)
    if not (0 < lo < hi and math.isfinite(hi)):
        raise ConfigError(f"{owner} bounds_s must be (g_min, g_max) with 0 < g_min < g_max, got {bounds_s!r}")
    if init_s is None:
        init = (lo, math.sqrt(lo * hi))
    else:
        init = (float(init_s[0]), float(init_s[1]))
        if not (lo <= init[0] <= init[1] <= hi):
            raise ConfigError(f"{owner} init_s {init_s!r} must lie inside bounds_s {bounds_s!r}")
    return (lo, hi), init


class Dense(Layer):
    """A crossbar: ``units`` new nodes, each joined to every input node by a learnable conductance.

    Node ``j`` then sits at the conductance-weighted average of its neighbours
    (plus whatever else is attached to it). Parameter ``conductance_s`` has
    shape ``(inputs, units)``.

    Args:
        units: output nodes.
        bounds_s: allowed conductances (S), default 1e-7..1e-5.
        init_s: initial range (uniform), default ``[g_min, sqrt(g_min g_max)]``.
    """

    def __init__(self, units: int, *, bounds_s=(1e-7, 1e-5), init_s=None, name=None) -> None:
        super().__init__(name)
        if not isinstance(units, int) or units < 1:
            raise ConfigError(f"Dense {self.label} units must be a positive int, got {units!r}")
        self.units = units
        self.bounds_s, self.init_s = _conductance_bounds(f"Dense {self.label}", bounds_s, init_s)
        self.n_inputs: int | None = None

    def output_shape(self, input_shapes):
        shape = _single(self, input_shapes)
        n = math.prod(shape)
        if self.n_inputs is not None and n != self.n_inputs:
            raise ConfigError(f"Dense {self.label} is shared and expects {self.n_inputs} input nodes, got {n}")
        self.n_inputs = n
        return (self.units,)

    def parameter_shapes(self):
        return {"conductance_s": (self.n_inputs, self.units)} if self.n_inputs else {}

    def parameter_bounds(self):
        return {"conductance_s": self.bounds_s}

    def init_parameters(self, generator):
        lo, hi = self.init_s
        return {"conductance_s": lo + (hi - lo) * torch.rand(self.n_inputs, self.units, generator=generator, dtype=DTYPE)}

    def emit(self, inputs, outputs):
        (inp,) = inputs
        i, j = torch.meshgrid(torch.arange(len(inp)), torch.arange(len(outputs)), indexing="ij")
        pairs = torch.stack([inp[i.flatten()], outputs[j.flatten()]], 1)
        return Emitted(resistors=pairs, resistor_param=("conductance_s", torch.arange(pairs.shape[0])))

    def config(self):
        return {"units": self.units, "bounds_s": list(self.bounds_s), "init_s": list(self.init_s)}


class LocallyConnected2D(Layer):
    """Locally connected 2-D layer: each output node joins a ``k x k`` window of every input channel.

    No weight sharing (each window has its own conductances). Input nodes of
    shape ``(channels, height, width)`` (an :class:`Input` of an image gives
    1 or 2 channels); output ``(filters, out_h, out_w)`` with
    ``out = (in - kernel) // stride + 1``. Parameter ``conductance_s``:
    ``(filters, out_h, out_w, channels, kernel, kernel)``.
    """

    def __init__(self, filters: int, kernel_size: int, *, stride: int = 1, bounds_s=(1e-7, 1e-5), init_s=None, name=None) -> None:
        super().__init__(name)
        for what, v in (("filters", filters), ("kernel_size", kernel_size), ("stride", stride)):
            if not isinstance(v, int) or v < 1:
                raise ConfigError(f"LocallyConnected2D {self.label} {what} must be a positive int, got {v!r}")
        self.filters, self.kernel, self.stride = filters, kernel_size, stride
        self.bounds_s, self.init_s = _conductance_bounds(f"LocallyConnected2D {self.label}", bounds_s, init_s)
        self.in_shape: tuple[int, int, int] | None = None

    def output_shape(self, input_shapes):
        shape = _single(self, input_shapes)
        if len(shape) != 3:
            raise ConfigError(f"LocallyConnected2D {self.label} needs nodes of shape (channels, height, width), got {shape}")
        c, h, w = shape
        if h < self.kernel or w < self.kernel:
            raise ConfigError(f"LocallyConnected2D {self.label} kernel {self.kernel} is larger than the input {h}x{w}")
        self.in_shape = (c, h, w)
        return (self.filters, (h - self.kernel) // self.stride + 1, (w - self.kernel) // self.stride + 1)

    def parameter_shapes(self):
        if self.in_shape is None:
            return {}
        c, h, w = self.in_shape
        oh, ow = (h - self.kernel) // self.stride + 1, (w - self.kernel) // self.stride + 1
        return {"conductance_s": (self.filters, oh, ow, c, self.kernel, self.kernel)}

    def parameter_bounds(self):
        return {"conductance_s": self.bounds_s}

    def init_parameters(self, generator):
        lo, hi = self.init_s
        shape = self.parameter_shapes()["conductance_s"]
        return {"conductance_s": lo + (hi - lo) * torch.rand(shape, generator=generator, dtype=DTYPE)}

    def emit(self, inputs, outputs):
        (inp,) = inputs
        c, h, w = self.in_shape  # type: ignore[misc]
        f, oh, ow, _, k, _ = self.parameter_shapes()["conductance_s"]
        grid = inp.reshape(c, h, w)
        out = outputs.reshape(f, oh, ow)
        fi, yi, xi, ci, dy, dx = torch.meshgrid(*(torch.arange(s) for s in (f, oh, ow, c, k, k)), indexing="ij")
        src = grid[ci, yi * self.stride + dy, xi * self.stride + dx].flatten()
        dst = out[fi, yi, xi].flatten()
        return Emitted(resistors=torch.stack([src, dst], 1), resistor_param=("conductance_s", torch.arange(src.numel())))

    def config(self):
        return {
            "filters": self.filters,
            "kernel_size": self.kernel,
            "stride": self.stride,
            "bounds_s": list(self.bounds_s),
            "init_s": list(self.init_s),
        }


_ORIENTATIONS = ("forward", "reverse", "both")


class Diodes(Layer):
    """A diode from every node to ground, in series with a bias source: the non-linearity of a layer.

    ``orientation="forward"``: anode at the node, so the diode conducts when
    ``V(node) > bias_v`` (it clamps the node from above).
    ``"reverse"``: cathode at the node, so it conducts when
    ``V(node) < -bias_v`` (clamps from below). ``"both"`` places one of each,
    ``bias_v=(forward, reverse)``: a soft hard-tanh. Returns the same nodes.

    Args:
        model: the element (:class:`~inmaterio.circuits.elements.ShockleyDiode`,
            :class:`~inmaterio.circuits.elements.PiecewiseLinearDiode` or your own
            :class:`~inmaterio.circuits.elements.TwoTerminal`).
        orientation: "forward", "reverse" or "both".
        bias_v: series bias in volts (a pair for "both").
    """

    new_nodes = False

    def __init__(self, model: TwoTerminal | None = None, *, orientation: str = "both", bias_v=(0.0, 0.0), name=None) -> None:
        super().__init__(name)
        self.model = model if model is not None else ShockleyDiode()
        if not isinstance(self.model, TwoTerminal):
            raise ConfigError(f"Diodes {self.label} model must be a TwoTerminal element, got {type(model).__name__}")
        if orientation not in _ORIENTATIONS:
            raise ConfigError(f"Diodes {self.label} orientation must be one of {_ORIENTATIONS}, got {orientation!r}")
        self.orientation = orientation
        b = (bias_v, bias_v) if isinstance(bias_v, int | float) else tuple(float(v) for v in bias_v)
        if len(b) != 2 or not all(math.isfinite(v) for v in b):
            raise ConfigError(f"Diodes {self.label} bias_v must be a finite number or a (forward, reverse) pair, got {bias_v!r}")
        self.bias_v = b

    def output_shape(self, input_shapes):
        return _single(self, input_shapes)

    def emit(self, inputs, outputs):
        (nodes,) = inputs
        ground = torch.full_like(nodes, -1)
        groups = []
        if self.orientation in ("forward", "both"):
            groups.append((self.model, nodes, ground, torch.full((len(nodes),), self.bias_v[0], dtype=DTYPE)))
        if self.orientation in ("reverse", "both"):
            groups.append((self.model, ground, nodes, torch.full((len(nodes),), self.bias_v[1], dtype=DTYPE)))
        return Emitted(diodes=tuple(groups))

    def config(self):
        return {
            "model": type(self.model).__name__,
            "model_params": dict(vars(self.model)),
            "orientation": self.orientation,
            "bias_v": list(self.bias_v),
        }


class Amplifier(Layer):
    """Bidirectional amplifiers: new nodes at ``gain * V(input)``; their load is felt at the input.

    Each output node is driven to ``gain`` times its input node; the current
    ``I`` it delivers is drawn from the input node times ``current_gain``
    (default ``1 / gain``), so nudging currents at the outputs reach the
    layers before (Kendall et al. 2020).
    """

    def __init__(self, gain: float = 4.0, *, current_gain: float | None = None, name=None) -> None:
        super().__init__(name)
        if not (isinstance(gain, int | float) and math.isfinite(gain) and gain > 0):
            raise ConfigError(f"Amplifier {self.label} gain must be a finite number > 0, got {gain!r}")
        self.gain = float(gain)
        self.current_gain = 1.0 / self.gain if current_gain is None else float(current_gain)
        if not (math.isfinite(self.current_gain) and self.current_gain > 0):
            raise ConfigError(f"Amplifier {self.label} current_gain must be a finite number > 0, got {current_gain!r}")

    def output_shape(self, input_shapes):
        return _single(self, input_shapes)

    def emit(self, inputs, outputs):
        (inp,) = inputs
        a = len(inp)
        return Emitted(
            amplifiers=torch.stack([inp, outputs], 1),
            gain=torch.full((a,), self.gain, dtype=DTYPE),
            current_gain=torch.full((a,), self.current_gain, dtype=DTYPE),
        )

    def config(self):
        return {"gain": self.gain, "current_gain": self.current_gain}


def Input(shape: int | Sequence[int], *, inverted: bool = False, voltage_range_v=(-10.0, 10.0), name: str | None = None) -> Nodes:
    """Input voltage sources of a model (see :class:`InputLayer`); returns their nodes."""
    return InputLayer(shape, inverted=inverted, voltage_range_v=voltage_range_v, name=name).node


def Bias(voltages_v: Sequence[float], *, learnable: bool = False, bounds_v=(-10.0, 10.0), name: str | None = None) -> Nodes:
    """Bias voltage sources (see :class:`BiasLayer`); returns their nodes."""
    return BiasLayer(voltages_v, learnable=learnable, bounds_v=bounds_v, name=name).node
