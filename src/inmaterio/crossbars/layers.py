"""Torch layers on analog tiles: :class:`AnalogLinear`, :class:`AnalogConv2d`, and the converters.

* :class:`AnalogLinear` — ``y = x @ W.T + b`` with ``W`` on a grid of :class:`~inmaterio.crossbars.tile.AnalogTile`:
  when ``in_features`` exceeds ``max_rows`` the inputs are split over row blocks whose tile outputs
  (each through its own periphery: DAC, noise, ADC) are summed digitally; when ``out_features``
  exceeds ``max_cols`` the outputs are split over column blocks and concatenated. The blocks are
  as equal as possible (784 rows on 512-row arrays: 392 + 392). The bias is digital.
* :class:`AnalogConv2d` — im2col: ``F.unfold`` turns each receptive field into one input vector
  ``(C_in/groups * kh * kw)`` of an :class:`AnalogLinear` (one per group), so each patch is one
  mat-vec through the periphery.
* :func:`convert_to_analog` / :func:`convert_to_digital` — a deep copy of any module with every
  ``nn.Linear`` / ``nn.Conv2d`` replaced by its analog counterpart (weights copied), and back.
* :func:`analog_tiles` — every tile of a module, in module order.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from inmaterio.crossbars.tile import AnalogTile, TileConfig, as_tile_config
from inmaterio.errors import ConfigError

__all__ = ["AnalogLinear", "AnalogConv2d", "convert_to_analog", "convert_to_digital", "analog_tiles", "split_sizes"]


def split_sizes(n: int, limit: int) -> tuple[int, ...]:
    """``n`` split into ``ceil(n / limit)`` blocks of near-equal size (the first ones one larger), each <= ``limit``."""
    blocks = -(-n // limit)
    base, extra = divmod(n, blocks)
    return tuple(base + 1 if i < extra else base for i in range(blocks))


def _spawn_seeds(seed: int | None, n: int) -> list[int]:
    """``n`` distinct 63-bit seeds derived from ``seed`` (reproducible), or from fresh OS entropy when it is None."""
    return [int(s.generate_state(1, dtype=np.uint64)[0]) & (2**63 - 1) for s in np.random.SeedSequence(seed).spawn(n)]


def _check_count(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} = {value!r} must be an integer >= {minimum}")
    return value


def _filled(layer: nn.Linear | nn.Conv2d, weight: torch.Tensor, bias: torch.Tensor | None, training: bool):
    """``layer`` (a fresh digital layer) holding ``weight`` and ``bias``, in the given train/eval mode."""
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    layer.train(training)
    return layer


class AnalogLinear(nn.Module):
    """``x (..., in_features) -> (..., out_features)``: a linear layer on a grid of analog tiles (module docstring).

    Parameters
    ----------
    in_features, out_features : >= 1.
    bias : a digital bias ``(out_features,)``.
    tile_config : :class:`~inmaterio.crossbars.tile.TileConfig` of every tile, or a mapping validated into
        one (None: ideal tiles). Layers beyond ``max_rows`` x ``max_cols`` need ``allow_split``.
    seed : seeds the weights (uniform in ``+-1/sqrt(in_features)`` as ``nn.Linear``, bias likewise) and each
        tile's noise generator (distinct streams); None: fresh OS entropy.
    device, dtype : of the weights.

    Attributes
    ----------
    tiles : ``nn.ModuleList`` of the tiles, row-major over (column block, row block): tile ``(r, c)`` is
        ``tiles[r * len(in_splits) + c]`` and holds ``W[out block r, in block c]``.
    in_splits, out_splits : the block sizes (tuples).
    bias : ``nn.Parameter (out_features,)`` or None.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        tile_config: TileConfig | Mapping[str, Any] | None = None,
        *,
        seed: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        config = as_tile_config(tile_config)
        self.in_features = _check_count("AnalogLinear in_features", in_features)
        self.out_features = _check_count("AnalogLinear out_features", out_features)
        if not config.allow_split:
            for name, value, limit_name, limit in (
                ("in_features", in_features, "max_rows", config.max_rows),
                ("out_features", out_features, "max_cols", config.max_cols),
            ):
                if value > limit:
                    raise ConfigError(
                        f"AnalogLinear {name} = {value} exceeds tile_config.{limit_name} = {limit} and "
                        "tile_config.allow_split is false; allow splitting or raise the limit"
                    )
        self.tile_config = config
        self.in_splits = split_sizes(in_features, config.max_rows)
        self.out_splits = split_sizes(out_features, config.max_cols)
        seeds = _spawn_seeds(seed, len(self.in_splits) * len(self.out_splits) + 1)
        self.tiles = nn.ModuleList(
            AnalogTile(n_in, n_out, config, seed=seeds[1 + r * len(self.in_splits) + c], device=device, dtype=dtype)
            for r, n_out in enumerate(self.out_splits)
            for c, n_in in enumerate(self.in_splits)
        )
        bound = 1.0 / math.sqrt(in_features)
        init = torch.Generator().manual_seed(seeds[0])
        weight = (torch.rand(out_features, in_features, generator=init, dtype=torch.float64) * 2 - 1) * bound
        self.set_weight(weight)
        if bias:
            b = (torch.rand(out_features, generator=init, dtype=torch.float64) * 2 - 1) * bound
            self.bias = nn.Parameter(b.to(device=self.tiles[0].weight.device, dtype=self.tiles[0].weight.dtype))
        else:
            self.register_parameter("bias", None)

    def tile(self, r: int, c: int) -> AnalogTile:
        """The tile of output block ``r`` and input block ``c``."""
        return self.tiles[r * len(self.in_splits) + c]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"AnalogLinear takes inputs (..., {self.in_features}), got shape {tuple(x.shape)}")
        n_in = len(self.in_splits)
        if len(self.tiles) == 1:
            y = self.tiles[0](x)
        else:
            xs = x.split(self.in_splits, dim=-1) if n_in > 1 else (x,)
            blocks = []
            for r in range(len(self.out_splits)):
                acc = self.tiles[r * n_in](xs[0])
                for c in range(1, n_in):
                    acc = acc + self.tiles[r * n_in + c](xs[c])
                blocks.append(acc)
            y = torch.cat(blocks, dim=-1) if len(blocks) > 1 else blocks[0]
        return y + self.bias if self.bias is not None else y

    def get_weight(self) -> torch.Tensor:
        """The assembled programmed weights ``(out_features, in_features)`` (a detached copy)."""
        n_in = len(self.in_splits)
        rows = [
            torch.cat([self.tiles[r * n_in + c].weight.detach() for c in range(n_in)], dim=1) for r in range(len(self.out_splits))
        ]
        return torch.cat(rows, dim=0)

    @torch.no_grad()
    def set_weight(self, weight: torch.Tensor) -> None:
        """Copy ``weight: (out_features, in_features)`` into the tiles."""
        weight = torch.as_tensor(weight)
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise ValueError(f"weight shape {tuple(weight.shape)} != ({self.out_features}, {self.in_features})")
        n_in = len(self.in_splits)
        for r, rows in enumerate(weight.split(self.out_splits, dim=0)):
            for c, block in enumerate(rows.split(self.in_splits, dim=1)):
                self.tiles[r * n_in + c].set_weight(block)

    @classmethod
    def from_digital(
        cls, linear: nn.Linear, tile_config: TileConfig | Mapping[str, Any] | None = None, *, seed: int | None = None
    ) -> AnalogLinear:
        """An :class:`AnalogLinear` with ``linear``'s shape, weights, bias, device and dtype."""
        w = linear.weight
        layer = cls(
            linear.in_features,
            linear.out_features,
            linear.bias is not None,
            tile_config,
            seed=seed,
            device=w.device,
            dtype=w.dtype,
        )
        layer.set_weight(w.detach())
        if linear.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(linear.bias)
        layer.train(linear.training)
        return layer

    def to_digital(self) -> nn.Linear:
        """An ``nn.Linear`` with the programmed weights and the bias."""
        w = self.get_weight()
        linear = nn.Linear(self.in_features, self.out_features, self.bias is not None, device=w.device, dtype=w.dtype)
        return _filled(linear, w, self.bias, self.training)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"tiles={len(self.out_splits)}x{len(self.in_splits)}"
        )


def _pair(value: int | Sequence[int], name: str, minimum: int) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) and not isinstance(value, bool) else tuple(value)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < minimum for v in pair):
        raise ConfigError(f"AnalogConv2d {name} = {value!r} must be an integer >= {minimum} or a pair of them")
    return pair  # type: ignore[return-value]


class AnalogConv2d(nn.Module):
    """``x (batch, C_in, H, W)`` (or ``(C_in, H, W)``) -> ``(batch, C_out, H_out, W_out)``: a 2-D convolution on tiles.

    Same arguments and output size as ``nn.Conv2d`` (``padding`` an int, a pair, ``"valid"`` or ``"same"``
    (stride 1); ``padding_mode`` ``zeros``, ``reflect``, ``replicate`` or ``circular``), plus ``tile_config``,
    ``seed``. Each group is an :class:`AnalogLinear` of ``C_in/groups * kh * kw`` inputs and ``C_out/groups``
    outputs without bias (``linears[g]``); the bias ``(C_out,)`` is digital. Each receptive field is one
    input vector (its own input scaling, noise and ADC reading).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        tile_config: TileConfig | Mapping[str, Any] | None = None,
        *,
        seed: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_channels = _check_count("AnalogConv2d in_channels", in_channels)
        self.out_channels = _check_count("AnalogConv2d out_channels", out_channels)
        self.groups = _check_count("AnalogConv2d groups", groups)
        if in_channels % groups or out_channels % groups:
            raise ConfigError(
                f"AnalogConv2d groups = {groups} must divide in_channels = {in_channels} and out_channels = {out_channels}"
            )
        self.kernel_size = _pair(kernel_size, "kernel_size", 1)
        self.stride = _pair(stride, "stride", 1)
        self.dilation = _pair(dilation, "dilation", 1)
        if padding_mode not in ("zeros", "reflect", "replicate", "circular"):
            raise ConfigError(
                f"AnalogConv2d padding_mode = {padding_mode!r}; allowed: 'zeros', 'reflect', 'replicate', 'circular'"
            )
        self.padding_mode = padding_mode
        if isinstance(padding, str):
            if padding not in ("valid", "same"):
                raise ConfigError(f"AnalogConv2d padding = {padding!r}; allowed: an int, a pair, 'valid' or 'same'")
            if padding == "same" and self.stride != (1, 1):
                raise ConfigError(f"AnalogConv2d padding = 'same' needs stride 1, got stride = {self.stride}")
            self.padding: tuple[int, int] | str = padding
        else:
            self.padding = _pair(padding, "padding", 0)
        # F.pad order (left, right, top, bottom)
        if self.padding == "valid":
            pads = (0, 0, 0, 0)
        elif self.padding == "same":
            (dh, dw), (kh, kw) = self.dilation, self.kernel_size
            th, tw = dh * (kh - 1), dw * (kw - 1)
            pads = (tw // 2, tw - tw // 2, th // 2, th - th // 2)
        else:
            ph, pw = self.padding
            pads = (pw, pw, ph, ph)
        self._pads = pads
        kh, kw = self.kernel_size
        self._k_in = in_channels // groups * kh * kw
        seeds = _spawn_seeds(seed, groups + 1)
        self.linears = nn.ModuleList(
            AnalogLinear(self._k_in, out_channels // groups, False, tile_config, seed=s, device=device, dtype=dtype)
            for s in seeds[1:]
        )
        if bias:
            init = torch.Generator().manual_seed(seeds[0])
            b = (torch.rand(out_channels, generator=init, dtype=torch.float64) * 2 - 1) / math.sqrt(self._k_in)
            w = self.linears[0].tiles[0].weight
            self.bias = nn.Parameter(b.to(device=w.device, dtype=w.dtype))
        else:
            self.register_parameter("bias", None)

    @property
    def tile_config(self) -> TileConfig:
        return self.linears[0].tile_config

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        unbatched = x.ndim == 3
        if unbatched:
            x = x.unsqueeze(0)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"AnalogConv2d takes (batch, {self.in_channels}, H, W) or ({self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        if any(self._pads):
            x = F.pad(x, self._pads, mode="constant" if self.padding_mode == "zeros" else self.padding_mode)
        (kh, kw), (dh, dw), (sh, sw) = self.kernel_size, self.dilation, self.stride
        span_h, span_w = dh * (kh - 1) + 1, dw * (kw - 1) + 1
        if x.shape[-2] < span_h or x.shape[-1] < span_w:
            raise ValueError(f"AnalogConv2d input {tuple(x.shape)} is smaller than the (dilated) kernel")
        # im2col as views: (batch, C_in, H_out, W_out, kh, kw), then one copy into (batch, L, C_in * kh * kw)
        # with each patch contiguous (the order of F.unfold's rows) for the periphery
        patches = x.unfold(2, span_h, sh).unfold(3, span_w, sw)[..., ::dh, ::dw]
        h_out, w_out = patches.shape[2], patches.shape[3]
        cols = patches.permute(0, 2, 3, 1, 4, 5).reshape(x.shape[0], h_out * w_out, self.in_channels * kh * kw)
        if self.groups == 1:
            y = self.linears[0](cols)
        else:
            parts = cols.split(self._k_in, dim=-1)
            y = torch.cat([lin(p) for lin, p in zip(self.linears, parts)], dim=-1)
        y = y.transpose(1, 2).reshape(x.shape[0], self.out_channels, h_out, w_out)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y.squeeze(0) if unbatched else y

    def get_weight(self) -> torch.Tensor:
        """The programmed weights ``(C_out, C_in/groups, kh, kw)`` (a detached copy)."""
        w = torch.cat([lin.get_weight() for lin in self.linears], dim=0)
        return w.reshape(self.out_channels, self.in_channels // self.groups, *self.kernel_size)

    @torch.no_grad()
    def set_weight(self, weight: torch.Tensor) -> None:
        """Copy ``weight: (C_out, C_in/groups, kh, kw)`` into the tiles."""
        shape = (self.out_channels, self.in_channels // self.groups, *self.kernel_size)
        weight = torch.as_tensor(weight)
        if tuple(weight.shape) != shape:
            raise ValueError(f"weight shape {tuple(weight.shape)} != {shape}")
        for lin, block in zip(self.linears, weight.reshape(self.out_channels, -1).chunk(self.groups, dim=0)):
            lin.set_weight(block)

    @classmethod
    def from_digital(
        cls, conv: nn.Conv2d, tile_config: TileConfig | Mapping[str, Any] | None = None, *, seed: int | None = None
    ) -> AnalogConv2d:
        """An :class:`AnalogConv2d` with ``conv``'s geometry, weights, bias, device and dtype."""
        w = conv.weight
        layer = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, conv.groups,
            conv.bias is not None, conv.padding_mode, tile_config, seed=seed, device=w.device, dtype=w.dtype,
        )  # fmt: skip
        layer.set_weight(w.detach())
        if conv.bias is not None:
            with torch.no_grad():
                layer.bias.copy_(conv.bias)
        layer.train(conv.training)
        return layer

    def to_digital(self) -> nn.Conv2d:
        """An ``nn.Conv2d`` with the same geometry, the programmed weights and the bias."""
        w = self.get_weight()
        conv = nn.Conv2d(
            self.in_channels, self.out_channels, self.kernel_size, self.stride, self.padding, self.dilation, self.groups,
            self.bias is not None, self.padding_mode, device=w.device, dtype=w.dtype,
        )  # fmt: skip
        return _filled(conv, w, self.bias, self.training)

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
            f"padding={self.padding}, dilation={self.dilation}, groups={self.groups}, bias={self.bias is not None}"
        )


def _device_models() -> tuple[type, ...]:
    """Module types that model a device (surrogates, processors): never converted, never copied."""
    from inmaterio.processors import Processor
    from inmaterio.surrogate.model import SurrogateModel

    return (Processor, SurrogateModel)


def _copy_keeping_devices(module: nn.Module) -> nn.Module:
    """Deep copy of ``module`` that shares (does not copy) the back ends its layers hold (processors, surrogates)."""
    skip = _device_models()
    memo: dict[int, Any] = {}
    for m in module.modules():
        for value in vars(m).values():
            if isinstance(value, skip):
                memo[id(value)] = value
    return copy.deepcopy(module, memo)


def _replace(module: nn.Module, convert) -> nn.Module:  # noqa: ANN001
    """Replace, in place, every child for which ``convert(child, index)`` returns a module (module order)."""
    skip = _device_models()
    targets: list[tuple[nn.Module, str, nn.Module]] = []

    def walk(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, skip):
                continue
            if convert(child, None) is not None:
                targets.append((parent, name, child))
            else:
                walk(child)

    walk(module)
    for i, (parent, name, child) in enumerate(targets):
        setattr(parent, name, convert(child, i))
    return module


def convert_to_analog(
    module: nn.Module, tile_config: TileConfig | Mapping[str, Any] | None = None, *, seed: int | None = None
) -> nn.Module:
    """A deep copy of ``module`` with every ``nn.Linear`` -> :class:`AnalogLinear` and ``nn.Conv2d`` ->
    :class:`AnalogConv2d` (weights, biases, device, dtype and train/eval mode copied), at any depth.

    Only these exact types are replaced (subclasses such as the output projection inside
    ``nn.MultiheadAttention`` are kept digital, since their owners read ``.weight``). Device models
    (:class:`~inmaterio.processors.Processor`, :class:`~inmaterio.surrogate.model.SurrogateModel`) are
    neither converted nor copied: a DNPU layer of the copy keeps the same back end. ``module`` itself
    may be a layer. ``seed`` gives each converted layer a distinct noise seed (module order); None:
    fresh OS entropy. The original is unchanged.
    """
    config = as_tile_config(tile_config)
    kinds = {nn.Linear: AnalogLinear, nn.Conv2d: AnalogConv2d}
    if type(module) in kinds:
        return kinds[type(module)].from_digital(module, config, seed=_spawn_seeds(seed, 1)[0])
    out = _copy_keeping_devices(module)
    n = sum(1 for m in out.modules() if type(m) in kinds)
    seeds = _spawn_seeds(seed, n)

    def convert(child: nn.Module, index: int | None) -> nn.Module | None:
        kind = kinds.get(type(child))
        if kind is None:
            return None
        return child if index is None else kind.from_digital(child, config, seed=seeds[index])

    return _replace(out, convert)


def convert_to_digital(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` with every :class:`AnalogLinear` -> ``nn.Linear`` and :class:`AnalogConv2d` ->
    ``nn.Conv2d``, holding the programmed weights (``weight`` of each tile, not the effective ones)."""
    if isinstance(module, AnalogLinear | AnalogConv2d):
        return module.to_digital()
    out = _copy_keeping_devices(module)

    def convert(child: nn.Module, index: int | None) -> nn.Module | None:
        if not isinstance(child, AnalogLinear | AnalogConv2d):
            return None
        return child if index is None else child.to_digital()

    return _replace(out, convert)


def analog_tiles(module: nn.Module) -> Iterator[AnalogTile]:
    """Every :class:`~inmaterio.crossbars.tile.AnalogTile` in ``module`` (itself included), in module order."""
    return (m for m in module.modules() if isinstance(m, AnalogTile))
