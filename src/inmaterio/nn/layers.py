"""Networks of DNPU nodes: a DNPU convolution and feed-forward builders from the literature.

* :class:`DNPUConv2d` — a 2-D convolution whose kernels are DNPU nodes: every
  (output channel, input channel) pair is one node reading a
  ``kernel_size x kernel_size`` patch on ``kernel_size**2`` input electrodes;
  all patches of all images and all nodes are one processor call.
* :func:`dnpu_network` — feed-forward layers of DNPU nodes with batch
  normalisation between them; :func:`two_two_one` (the 2-2-1 network of
  Ruiz Euler et al., *Neuromorph. Comput. Eng.* 1, 024002, 2021) and
  :func:`single_dnpu` are special cases.
* :class:`NodeOutput` — the last module of a builder whose last layer has one
  node: it turns ``(batch, 1)`` nA into ``(batch,)`` nA, the shape the losses
  of :mod:`inmaterio.training.losses` take (``(..., batch)``).

Every DNPU layer is a :class:`~inmaterio.nn.dnpu.DNPU` sub-module, so
:func:`inmaterio.nn.set_processor` switches a whole network between the
surrogate and the device, and :func:`inmaterio.nn.dnpu_layers` finds the
controls. With ``multiplex=True`` each layer evaluates its nodes one after the
other (one physical device time-multiplexed); the result is the same.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inmaterio.errors import ConfigError
from inmaterio.nn.dnpu import DNPU
from inmaterio.processors import Processor

__all__ = ["DNPUConv2d", "NodeOutput", "dnpu_network", "single_dnpu", "two_two_one"]

Electrodes = Sequence[int | str] | Sequence[Sequence[int | str]]


def _pair(value: int | Sequence[int], name: str, minimum: int) -> tuple[int, int]:
    """``(rows, columns)`` from one int or a pair of ints, each >= ``minimum``."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= minimum for v in pair):
        raise ConfigError(f"{name} must be an int >= {minimum} or a pair of them, got {value!r}")
    return pair


class DNPUConv2d(nn.Module):
    """2-D convolution with DNPU nodes as kernels.

    Node ``(o, c)`` (output channel ``o``, input channel ``c``; node index
    ``o * in_channels + c`` of the internal layer :attr:`dnpu`) reads a
    ``kernel_size x kernel_size`` patch of input channel ``c``, flattened row
    by row onto its ``kernel_size**2`` input electrodes, and its other
    electrodes hold its own control voltages. As a convolution sums over input
    channels::

        output[b, o, i, j] = sum_c node_(o, c)(x[b, c, i*s_h : i*s_h + k, j*s_w : j*s_w + k])   nA

    Parameters
    ----------
    processor : the back end evaluating the nodes (surrogate or device).
    in_channels, out_channels : channel counts (>= 1); the layer has
        ``out_channels * in_channels`` nodes.
    kernel_size : side ``k`` of the square patch (>= 1); ``k**2`` must be less
        than the processor's activation electrodes so a control electrode is left.
    stride : step between patches, int or ``(rows, columns)`` (>= 1).
    padding : zeros added on each side, int or ``(rows, columns)`` (>= 0).
        The zeros are data values, mapped to volts like the data (the
        middle of each input electrode's range for a symmetric ``data_range``).
    input_electrodes : the ``k**2`` activation electrodes (indices or names)
        that take the patch, in patch order; default: the first ``k**2``.
    data_range : ``(low, high)`` of the input data, mapped onto each input
        electrode's voltage range (values beyond saturate).
    seed : seed of the controls' initialisation (None: torch's global generator).
    multiplex : evaluate the nodes one after the other (time multiplexing one device).

    Shapes
    ------
    ``forward(x)``: ``x (batch, in_channels, H, W)`` data ->
    ``(batch, out_channels, H_out, W_out)`` nA with
    ``H_out = (H + 2 * padding_h - k) // stride_h + 1`` (likewise ``W_out``).
    Internally all ``batch * H_out * W_out`` patches are one batch of the
    DNPU layer: ``(batch * H_out * W_out, out_channels * in_channels, k**2)``.
    """

    def __init__(
        self,
        processor: Processor,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        input_electrodes: Electrodes | None = None,
        data_range: tuple[float, float] = (-1.0, 1.0),
        seed: int | None = None,
        multiplex: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("kernel_size", kernel_size)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an int >= 1, got {value!r}")
        n_act = processor.info.n_activation
        patch = kernel_size**2
        if patch >= n_act:
            raise ConfigError(
                f"kernel_size {kernel_size} needs {patch} input electrodes, but the device has {n_act} activation "
                f"electrodes {processor.info.electrode_names} and a node needs at least one control electrode; "
                f"use kernel_size <= {int(np.sqrt(n_act - 1))}"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = _pair(stride, "stride", 1)
        self.padding = _pair(padding, "padding", 0)
        self.dnpu = DNPU(
            processor,
            out_channels * in_channels,
            tuple(range(patch)) if input_electrodes is None else input_electrodes,
            data_range,
            seed=seed,
            multiplex=multiplex,
        )
        if self.dnpu.n_inputs != patch:
            raise ConfigError(
                f"kernel_size {kernel_size} needs {patch} input electrodes per node, "
                f"input_electrodes gives {self.dnpu.n_inputs}: {input_electrodes}"
            )

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """``(H_out, W_out)`` for an input of ``height x width`` (the convolution formula)."""
        return tuple((n + 2 * p - self.kernel_size) // s + 1 for n, p, s in zip((height, width), self.padding, self.stride))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x (batch, in_channels, H, W)`` data -> ``(batch, out_channels, H_out, W_out)`` nA."""
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ConfigError(
                f"DNPUConv2d with {self.in_channels} input channel(s) takes x of shape "
                f"(batch, {self.in_channels}, H, W); got {tuple(x.shape)}"
            )
        batch, channels = x.shape[:2]
        h_out, w_out = self.output_size(*x.shape[2:])
        if h_out < 1 or w_out < 1:
            raise ConfigError(
                f"input of {x.shape[2]} x {x.shape[3]} with padding {self.padding} is smaller than the "
                f"kernel of {self.kernel_size} x {self.kernel_size}"
            )
        patch = self.kernel_size**2
        cols = F.unfold(x, self.kernel_size, padding=self.padding, stride=self.stride)  # (batch, C * k*k, L)
        n_pos = cols.shape[-1]
        cols = cols.reshape(batch, channels, patch, n_pos).permute(0, 3, 1, 2)  # (batch, L, C, k*k)
        node_inputs = cols.unsqueeze(2).expand(-1, -1, self.out_channels, -1, -1)  # (batch, L, O, C, k*k)
        node_inputs = node_inputs.reshape(batch * n_pos, self.out_channels * channels, patch)
        current = self.dnpu(node_inputs)  # (batch * L, O * C) nA
        current = current.reshape(batch, n_pos, self.out_channels, channels).sum(dim=-1)  # (batch, L, O)
        return current.permute(0, 2, 1).reshape(batch, self.out_channels, h_out, w_out)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}, padding={self.padding}"
        )


class NodeOutput(nn.Module):
    """Drop the node axis of a one-node layer: ``(..., 1)`` nA -> ``(...)`` nA.

    The builders end with it when their last layer has a single node, so a
    network returns ``(batch,)``, the shape the losses take; a ``(batch, 1)``
    output would not broadcast against a ``(batch,)`` target. Any other last
    dimension raises :class:`ConfigError`.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 0 or x.shape[-1] != 1:
            raise ConfigError(f"NodeOutput takes the output of a one-node layer, (..., 1); got {tuple(x.shape)}")
        return x.squeeze(-1)


def _layer_seeds(seed: int | None, n: int) -> list[int | None]:
    """``n`` distinct, reproducible seeds derived from ``seed`` (all None when ``seed`` is None)."""
    if seed is None:
        return [None] * n
    return [int(s.generate_state(1)[0]) for s in np.random.SeedSequence(seed).spawn(n)]


def dnpu_network(
    processor: Processor,
    layer_sizes: Sequence[int],
    input_electrodes: Electrodes = (0, 1),
    hidden_input_electrodes: Electrodes | None = None,
    data_range: tuple[float, float] | Sequence[tuple[float, float]] = (-1.0, 1.0),
    hidden_data_range: tuple[float, float] = (-2.0, 2.0),
    batch_norm: bool = True,
    seed: int | None = None,
    multiplex: bool = False,
) -> nn.Sequential:
    """Feed-forward network of DNPU layers, with batch normalisation between layers.

    Layer ``i`` is a :class:`DNPU` of ``layer_sizes[i]`` nodes. The first
    layer's nodes take the data on ``input_electrodes`` (``n_inputs`` =
    their number); later layers take the previous layer's outputs on
    ``hidden_input_electrodes`` (default: ``input_electrodes``). Between
    layers sits ``nn.BatchNorm1d(width)`` (affine; with ``batch_norm=True``),
    and the normalised values are mapped from ``hidden_data_range`` onto the
    input electrodes' ranges (beyond it they saturate at the range ends).
    Without batch normalisation ``hidden_data_range`` is in nA.

    A layer of ``k`` nodes with ``m`` inputs each after a layer of width ``w``:

    * ``w == m``: every node takes all ``w`` outputs (broadcast);
    * ``w == k * m``: node ``j`` takes outputs ``j*m .. (j+1)*m - 1`` (split);
    * otherwise :class:`ConfigError`.

    Parameters
    ----------
    processor : the back end shared by all layers (surrogate or device).
    layer_sizes : nodes per layer, each >= 1, at least one layer.
    input_electrodes, hidden_input_electrodes : electrode indices or names,
        one sequence for every node or one per node (see :class:`DNPU`).
    data_range : ``(low, high)`` of the network's input data (or one pair per input).
    hidden_data_range : ``(low, high)`` of the hidden values fed to later layers.
    batch_norm : put ``nn.BatchNorm1d`` between layers.
    seed : derives a distinct seed for each layer's controls (None: torch's global generator).
    multiplex : every layer evaluates its nodes one after the other.

    Returns
    -------
    ``nn.Sequential``: data ``(batch, n_inputs)`` (or ``(batch, layer_sizes[0] * n_inputs)``)
    -> ``(batch, layer_sizes[-1])`` nA, or ``(batch,)`` nA when the last layer
    has one node (the network then ends with :class:`NodeOutput`).
    """
    sizes = list(layer_sizes)
    if not sizes or not all(isinstance(k, int) and k >= 1 for k in sizes):
        raise ConfigError(f"layer_sizes must be a non-empty list of ints >= 1, got {sizes}")
    if hidden_input_electrodes is None:
        hidden_input_electrodes = input_electrodes
    seeds = _layer_seeds(seed, len(sizes))
    modules: list[nn.Module] = []
    width = None
    for i, (k, layer_seed) in enumerate(zip(sizes, seeds)):
        if i == 0:
            layer = DNPU(processor, k, input_electrodes, data_range, seed=layer_seed, multiplex=multiplex)
        else:
            layer = DNPU(processor, k, hidden_input_electrodes, hidden_data_range, seed=layer_seed, multiplex=multiplex)
            m = layer.n_inputs
            if width not in (m, k * m):
                raise ConfigError(
                    f"layer {i} has {k} node(s) of {m} input(s) but layer {i - 1} outputs {width} value(s): the "
                    f"previous width must equal n_inputs = {m} (every node takes all outputs) or "
                    f"nodes * n_inputs = {k * m} (node j takes outputs j*{m} .. j*{m}+{m - 1})"
                )
            if batch_norm:
                modules.append(nn.BatchNorm1d(width))
        modules.append(layer)
        width = k
    if width == 1:
        modules.append(NodeOutput())
    return nn.Sequential(*modules)


def two_two_one(
    processor: Processor,
    input_electrodes: Electrodes = (0, 1),
    hidden_input_electrodes: Electrodes | None = None,
    data_range: tuple[float, float] | Sequence[tuple[float, float]] = (-1.0, 1.0),
    hidden_data_range: tuple[float, float] = (-2.0, 2.0),
    seed: int | None = None,
    multiplex: bool = False,
) -> nn.Sequential:
    """The 2-2-1 DNPU network of Ruiz Euler et al. (2021): ``dnpu_network(processor, [2, 2, 1], ...)``.

    ``DNPU(2 nodes)`` both taking the same two data inputs, ``BatchNorm1d(2)``,
    ``DNPU(2 nodes)`` each taking both hidden values, ``BatchNorm1d(2)``,
    ``DNPU(1 node)`` taking both, :class:`NodeOutput`. Data ``(batch, 2)``
    in ``data_range`` -> ``(batch,)`` nA. Parameters as in :func:`dnpu_network`.
    """
    return dnpu_network(
        processor,
        [2, 2, 1],
        input_electrodes=input_electrodes,
        hidden_input_electrodes=hidden_input_electrodes,
        data_range=data_range,
        hidden_data_range=hidden_data_range,
        seed=seed,
        multiplex=multiplex,
    )


def single_dnpu(
    processor: Processor,
    input_electrodes: Electrodes = (0, 1),
    data_range: tuple[float, float] | Sequence[tuple[float, float]] = (-1.0, 1.0),
    seed: int | None = None,
) -> nn.Sequential:
    """One DNPU node (e.g. a Boolean gate): data ``(batch, n_inputs)`` -> ``(batch,)`` nA.

    ``dnpu_network(processor, [1], ...)``: a one-node :class:`DNPU` followed by
    :class:`NodeOutput`. Parameters as in :func:`dnpu_network`.
    """
    return dnpu_network(processor, [1], input_electrodes=input_electrodes, data_range=data_range, seed=seed)
