r"""Mapping network layers onto crossbar subarrays: im2col, row/column splitting, cells per weight, utilisation.

A layer's weights become one matrix of ``rows x cols`` *cells*:

- a dense layer ``in -> out``: ``rows = in``, ``cols = out``;
- a convolution (``k x k`` kernel, ``c_in -> c_out`` channels), im2col:
  ``rows = k * k * c_in`` (one input pixel of one channel per row),
  ``cols = c_out`` (one filter per column);
- every weight takes ``cells_per_weight = ceil(weight_bits / cell_bits)``
  adjacent columns (bit slices, most significant first), times 2 for a
  differential pair (``G+ - G-``); an analog device (``cell_bits = None``)
  stores a whole weight in one cell.

**Subarray tiling** (:func:`map_layer`): the matrix is cut into
``ceil(rows / R) * ceil(cols * cells_per_weight / C)`` subarrays of
``R x C`` cells; the last row and column block are partly empty. A layer's
*utilisation* is its cells over the cells of its subarrays.

**NeuroSim floor plan** (:func:`neurosim_utilisation`): DNN+NeuroSim (Peng et
al. 2019, the version that Lu et al. 2021 benchmark) does not allocate
single subarrays but *tiles*; the memory utilisation it prints for a whole
chip follows this rule, which is what reproduces its published VGG-8 numbers:

1. Convolutions whose kernel area ``k*k`` is the most common one among the
   layers (``k*k > 1``) and whose unrolled rows ``k*k*c_in`` fill at least one
   subarray use the *novel mapping*: each of the ``k*k`` kernel positions is
   a separate processing element (PE) of ``c_in x c_out*cpw`` cells, a tile
   holding ``k*k`` such PEs of size ``P_nm``. Other layers (small
   convolutions, dense layers) use the *conventional mapping*: tiles of
   ``T x T`` cells made of PEs of ``P x P`` cells.
2. ``P_nm`` and ``T`` are powers of two: starting from the next power of two
   of the widest layer (``c_out * cpw``), at least ``2 R`` (PE) or ``4 R``
   (tile), halved while that raises the utilisation of the layers of that
   mapping (``sum cells / (tiles * size^2)``), stopping at ``2 R`` / ``4 R``.
   ``P`` likewise goes down from ``T / 2``.
3. Small layers are *duplicated* to fill their tile: a layer whose matrix
   fits in a tile (in rows or columns) is copied ``floor(PEs per tile row /
   PEs the matrix needs)`` times along rows and along columns, and again
   within each PE at the subarray level (copies compute different output
   pixels in parallel, so they count as used cells).
4. The chip's utilisation is ``sum_l tiles_l * u_l / sum_l tiles_l`` with
   ``u_l`` the layer's used cells (copies included) over its tiles' cells.

With 128x128 subarrays this gives 93.47 % for VGG-8 (8-bit weights on
4-bit cells) and 98.73 % on 1-bit SRAM cells, NeuroSim's numbers.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import Field, model_validator

from inmaterio.config import StrictModel
from inmaterio.errors import ConfigError

__all__ = [
    "ArrayGeometry",
    "LayerShape",
    "LayerMapping",
    "cells_per_weight",
    "map_layer",
    "map_network",
    "neurosim_utilisation",
    "VGG8_CIFAR10",
]


class ArrayGeometry(StrictModel):
    """Subarray size and how a weight is stored.

    rows, cols : cells of one subarray (R, C), each >= 1.
    weight_bits : bits of a weight (>= 1); ignored for analog cells.
    cell_bits : bits one cell stores (>= 1); None: an analog cell holds a whole weight.
    differential : each weight on a pair of cells (G+ - G-), doubling the columns.
    """

    rows: int = Field(128, ge=1)
    cols: int = Field(128, ge=1)
    weight_bits: int = Field(8, ge=1, le=64)
    cell_bits: int | None = Field(4, ge=1, le=64)
    differential: bool = False


def cells_per_weight(geometry: ArrayGeometry) -> int:
    """Columns one weight takes: ``ceil(weight_bits / cell_bits)`` (1 for analog cells), times 2 if differential."""
    slices = 1 if geometry.cell_bits is None else math.ceil(geometry.weight_bits / geometry.cell_bits)
    return slices * (2 if geometry.differential else 1)


class LayerShape(StrictModel):
    """One layer as the crossbar sees it.

    name : a label for tables.
    kind : ``dense`` or ``conv``.
    inputs : input features (dense) or input channels c_in (conv), >= 1.
    outputs : output features or channels c_out, >= 1.
    kernel : kernel side k of a square conv kernel (1 for dense).
    positions : times the matrix is applied per inference (output pixels of a conv; 1 for dense), >= 1.
    """

    name: str = "layer"
    kind: str = Field("dense", pattern="^(dense|conv)$")
    inputs: int = Field(ge=1)
    outputs: int = Field(ge=1)
    kernel: int = Field(1, ge=1)
    positions: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _dense_has_no_kernel(self) -> LayerShape:
        if self.kind == "dense" and self.kernel != 1:
            raise ValueError(f"layer '{self.name}': a dense layer has kernel 1, got kernel {self.kernel}")
        return self

    @property
    def matrix_rows(self) -> int:
        """Rows of the unrolled (im2col) weight matrix: ``k * k * c_in``."""
        return self.kernel * self.kernel * self.inputs

    @property
    def macs(self) -> int:
        """Multiply-accumulates per inference: ``rows * outputs * positions``."""
        return self.matrix_rows * self.outputs * self.positions


@dataclass(frozen=True)
class LayerMapping:
    """Where one layer lands on ``R x C`` subarrays.

    Attributes:
        layer: the layer.
        rows, cols: cells of its matrix (cols include the cells per weight).
        row_blocks, col_blocks: subarrays along rows and columns.
        subarrays: ``row_blocks * col_blocks``.
        utilisation: used cells / cells of its subarrays, in (0, 1].
    """

    layer: LayerShape
    rows: int
    cols: int
    row_blocks: int
    col_blocks: int
    subarrays: int
    utilisation: float


def map_layer(layer: LayerShape, geometry: ArrayGeometry) -> LayerMapping:
    """Tile one layer's im2col matrix onto subarrays (no duplication); see the module docstring."""
    rows = layer.matrix_rows
    cols = layer.outputs * cells_per_weight(geometry)
    rb, cb = math.ceil(rows / geometry.rows), math.ceil(cols / geometry.cols)
    return LayerMapping(layer, rows, cols, rb, cb, rb * cb, rows * cols / (rb * cb * geometry.rows * geometry.cols))


def map_network(layers: Sequence[LayerShape], geometry: ArrayGeometry) -> tuple[list[LayerMapping], float]:
    """Every layer's mapping and the network's utilisation (all used cells / all allocated cells)."""
    if not layers:
        raise ConfigError("map_network needs at least one layer, got none")
    maps = [map_layer(layer, geometry) for layer in layers]
    used = sum(m.rows * m.cols for m in maps)
    return maps, used / (sum(m.subarrays for m in maps) * geometry.rows * geometry.cols)


def _next_pow2(x: float) -> float:
    return float(2 ** math.ceil(math.log2(x)))


def _copies(cells: int, size: float, unit: float) -> int:
    """How many copies of a matrix side of ``cells`` fit in ``size`` built from blocks of ``unit`` (at least 1)."""
    return max(1, math.floor(math.ceil(size / unit) / math.ceil(cells / unit)))


def neurosim_utilisation(layers: Sequence[LayerShape], geometry: ArrayGeometry) -> tuple[float, list[float]]:
    """Chip memory utilisation under NeuroSim's tile/PE floor plan (rule in the module docstring).

    Returns:
        ``(chip, per_layer)``: the chip's utilisation and each layer's, in (0, 1].
    """
    if not layers:
        raise ConfigError("neurosim_utilisation needs at least one layer, got none")
    R = geometry.rows
    cpw = cells_per_weight(geometry)
    areas = Counter(layer.kernel**2 for layer in layers if layer.kernel > 1)
    pes_per_tile = areas.most_common(1)[0][0] if areas else 0  # the most common kernel area (first on ties)
    novel = [layer.kernel**2 == pes_per_tile and layer.matrix_rows >= R for layer in layers]  # kernel positions as PEs
    widest_nm = max((_next_pow2(lay.outputs * cpw) for lay, n in zip(layers, novel) if n), default=0.0)
    widest_cm = max((_next_pow2(lay.outputs * cpw) for lay, n in zip(layers, novel) if not n), default=0.0)

    def best_size(start: float, floor_size: float, score) -> float:
        size, best, choice = start, 0.0, start
        while size > floor_size:
            u = score(size)
            if u > best:
                best, choice = u, size
            size /= 2
        return choice

    def nm_score(p: float) -> float:
        tiles = sum(math.ceil(lay.inputs / p) * math.ceil(lay.outputs * cpw / p) for lay, n in zip(layers, novel) if n)
        cells = sum(lay.matrix_rows * lay.outputs * cpw for lay, n in zip(layers, novel) if n)
        return cells / (tiles * p * p * pes_per_tile)

    def cm_tiles(t: float) -> int:
        return sum(math.ceil(lay.matrix_rows / t) * math.ceil(lay.outputs * cpw / t) for lay, n in zip(layers, novel) if not n)

    def cm_cells(t: float, pe: float | None) -> float:
        total = 0.0
        for layer, n in zip(layers, novel):
            if n:
                continue
            rows, cols = layer.matrix_rows, layer.outputs * cpw
            dup = 1
            if pe is not None and (rows <= t or cols <= t):
                dup = _copies(rows, t, pe) * _copies(cols, t, pe)
            total += dup * rows * cols
        return total

    p_nm = max(widest_nm, 2 * R)
    if any(novel):
        p_nm = best_size(p_nm, 2 * R, nm_score)
    t_cm = max(widest_cm, 4 * R)
    best_cm = 0.0
    if not all(novel):
        size = t_cm
        while size > 4 * R:  # the tile size: fewest empty cells without duplication
            u = cm_cells(size, None) / (cm_tiles(size) * size * size)
            if u > best_cm:
                best_cm, t_cm = u, size
            size /= 2
    p_cm, size = t_cm / 2, t_cm / 2
    while size > 2 * R:  # the PE size: most cells used once small layers are copied across PEs
        u = cm_cells(t_cm, size) / (cm_tiles(t_cm) * t_cm * t_cm)
        if u > best_cm:
            best_cm, p_cm = u, size
        size /= 2

    tiles, used = [], []
    for layer, n in zip(layers, novel):
        cols = layer.outputs * cpw
        rows_pe = layer.inputs if n else layer.matrix_rows  # rows one PE holds
        pe = p_nm if n else p_cm
        dup = 1
        if not n and (layer.matrix_rows <= t_cm or cols <= t_cm):  # copies across PEs of a tile
            dup *= _copies(layer.matrix_rows, t_cm, p_cm) * _copies(cols, t_cm, p_cm)
        if rows_pe <= pe or cols <= pe:  # copies across subarrays of a PE
            dup *= _copies(rows_pe, pe, R) * _copies(cols, pe, geometry.cols)
        if n:
            count = math.ceil(layer.inputs / p_nm) * math.ceil(cols / p_nm)
            cap = count * p_nm * p_nm * pes_per_tile
        else:
            count = math.ceil(layer.matrix_rows / t_cm) * math.ceil(cols / t_cm)
            cap = count * t_cm * t_cm
        tiles.append(count)
        used.append(dup * layer.matrix_rows * cols / cap)
    chip = sum(t * u for t, u in zip(tiles, used)) / sum(tiles)
    return chip, used


def _vgg8() -> tuple[LayerShape, ...]:
    convs = [(3, 128, 32), (128, 128, 32), (128, 256, 16), (256, 256, 16), (256, 512, 8), (512, 512, 8)]
    layers = [
        LayerShape(name=f"conv{i + 1}", kind="conv", inputs=cin, outputs=cout, kernel=3, positions=side * side)
        for i, (cin, cout, side) in enumerate(convs)
    ]
    layers += [LayerShape(name="fc1", inputs=8192, outputs=1024), LayerShape(name="fc2", inputs=1024, outputs=10)]
    return tuple(layers)


#: VGG-8 on CIFAR-10 as in DNN+NeuroSim (Peng et al. 2019): six 3x3 convolutions (32x32 input, 2x2 pooling
#: after every second one, same padding) and two dense layers.
VGG8_CIFAR10: tuple[LayerShape, ...] = _vgg8()
