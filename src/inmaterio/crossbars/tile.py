"""One analog crossbar array with its periphery: DAC, matrix-vector product, noise, IR drop, ADC, digital scales.

A tile stores a weight matrix ``W: (out_features, in_features)`` as device
conductances: the inputs drive the ``in_features`` rows, the ``out_features``
columns sum the currents. Weights are mapped to conductances by one scale
per tile, ``w_scale`` (:meth:`AnalogTile.weight_scale`): the tile's largest
``|w|`` (re-read on every call), or the fixed ``TileConfig.weight_range`` of
devices with hard bounds, corresponds to the full-scale conductance, so the
analog array holds ``W~ = W / w_scale`` with ``|W~| <= 1``.

Forward read ``y = tile(x)`` for ``x: (..., in)`` -> ``(..., out)``, one
matmul plus elementwise periphery (all of it optional, set by
:class:`IOConfig`)::

    s      = max_j |x_j|  per input vector (input_scaling "max"; 1 for "fixed"; an all-zero vector takes 1)
    x~     = Q_dac(clip(x / s, -b_in, b_in))                  DAC, b_in = input_bound
    y~     = x~ @ W_read.T / w_scale                          one matmul; W_read = effective weights (+ HWA noise),
                                                              with IR drop (ir_drop > 0) W_ir below instead
    y~    += sqrt(sigma_out^2 + sigma_w^2 * |x~|_2^2) * xi    output noise + per-read weight noise, xi ~ N(0, 1)
    y_adc  = clip(Q_adc(y~), -b_out, b_out)                   ADC, b_out = output_bound
    y      = (y_adc * w_scale * s) * compensation * output_scale + output_offset       digital

with the uniform mid-tread quantisers ``Q(v) = step * round(v / step)``,
``step_dac = b_in / (2^(dac_bits-1) - 1)`` and ``step_adc = b_out / (2^(adc_bits-1) - 1)``
(``2^bits - 1`` levels, zero included, the end levels exactly at the
bounds; aihwkit's ``inp_res = 1 / (2^bits - 2)`` convention). The analog
output ``y~`` is in *normalised units*: one full-scale conductance times one
DAC input unit, the unit of ``output_bound``, ``output_noise`` and (per unit
of ``|x~|_2``) ``weight_noise``.

Noise
    ``output_noise`` is the standard deviation of additive Gaussian noise at
    each column before the ADC, in normalised units (0.5 LSB of the realistic
    preset = ``0.5 * step_adc``). ``weight_noise`` is the per-read std of
    independent Gaussian weight fluctuations ``dW~_ij``, relative to ``w_scale``;
    for one read, ``sum_j dW~_ij x~_j`` is exactly ``N(0, sigma_w^2 |x~|_2^2)``,
    independent over columns and over reads (rows of the batch), so it is drawn
    output-referred (no per-sample weight copy). ``forward_weight_noise``
    (hardware-aware training) adds ``N(0, (sigma_f w_scale)^2)`` to every weight
    once per forward call in training mode only (one noisy array shared by the
    batch, absent from the backward read and from the update).

IR drop (exact to first order in the wire resistance)
    Each weight is a differential pair, ``W~ = G+ - G-`` (``G+ = max(W~, 0)``, ``G- = max(-W~, 0)``, in units of
    the full-scale conductance ``g_max``), each on its own sense line (the column). A sense line is a wire
    of resistance ``r`` per cell, read by the ADC at virtual ground after the last row (row 0 farthest,
    as in aihwkit). The current in the segment after row ``m`` is the sum of the cell currents of rows
    ``0 .. m``; to first order in ``r`` it is the ideal one, so the wire potential at row ``j`` is
    ``r sum_{m >= j} sum_{l <= m} g_l v_l`` and the column current loses ``r sum_j g_j v_j C_j`` with
    ``C_j = sum_{m=j}^{n-1} sum_{l=0}^{m} g_l`` (conductance "upstream" of each segment between cell ``j``
    and the ADC). The loss is linear in the inputs: the array acts as the effective matrix::

        W_ir = G+ * (1 - ir_drop * C(G+)) - G- * (1 - ir_drop * C(G-))      (cumulative sums along each column)

    with ``ir_drop = r * g_max`` (wire resistance per cell times the full-scale conductance; aihwkit's
    ``1 / ir_drop_g_ratio``, 0.35 ohm x 5 uS = 1.75e-6), so the read stays one matmul. Neglected: terms of
    order ``r^2`` (valid while ``ir_drop * n^2 / 2 << 1``; tested against the nodal solution of the
    resistive columns), the resistance of the row (driver) lines, and any input dependence beyond
    first order. It acts on the forward read (and on a configured backward read, along the other wire)
    and is ignored by the gradients. The forward map is cached until the weights change (in place or
    not), so inference with fixed weights pays it once; hardware-aware weight noise is added after it
    (a difference of order ``ir_drop * noise``).

Gradients (``torch.autograd.Function``; "full-precision backward and update")
    With ``c = compensation * output_scale`` and ``m_out`` the ADC's in-range mask
    (``|y~| <= b_out``; saturated outputs pass no gradient), ``delta' = delta * c * m_out``;
    the weight gradient is the ideal ``delta'^T x`` (summed over the batch, with
    the raw input ``x``), and the input gradient is the backward read of
    ``delta'`` through the transposed array, ``delta' @ W_eff``, ideal or through its
    own periphery (``TileConfig.backward``), times the DAC's in-range mask
    (clipped inputs pass no gradient; quantisation and input scaling are
    straight-through).

Inference hooks: :meth:`AnalogTile.set_effective_weight` (the conductances the
array really holds after programming and drift; reads and backward use them,
gradients still go to ``weight``), ``compensation`` (global drift compensation,
a digital factor), :meth:`AnalogTile.max_abs_weight`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from inmaterio.config import StrictModel, validate_config
from inmaterio.errors import ConfigError

__all__ = [
    "IOConfig",
    "TileConfig",
    "AnalogTile",
    "ideal_tile",
    "realistic_tile",
    "REALISTIC_IO",
    "quantize",
    "ir_dropped",
    "as_tile_config",
]


class IOConfig(StrictModel):
    """The periphery of one read direction (forward, or the transposed read of the backward pass).

    dac_bits : DAC resolution, >= 2 bits (``2^bits - 1`` levels over ``[-input_bound, input_bound]``); None = ideal.
        Needs ``input_bound``.
    input_bound : inputs are clipped to ``[-input_bound, input_bound]`` after scaling (> 0; DAC units, the
        full-scale read voltage is 1 when it is 1); None = no clipping.
    input_scaling : ``fixed`` (inputs enter as given) or ``max`` (each input vector divided by its max ``|x|``
        before the DAC and the output multiplied back digitally: noise management).
    adc_bits : ADC resolution, >= 2 bits (``2^bits - 1`` levels over ``[-output_bound, output_bound]``);
        None = ideal. Needs ``output_bound``.
    output_bound : the ADC saturates at ``+-output_bound`` (> 0), in normalised units (one full-scale
        conductance times one DAC input unit); None = no saturation.
    output_noise : std of additive Gaussian noise at each output before the ADC, normalised units (>= 0).
    weight_noise : per-read std of Gaussian weight noise relative to the tile's weight scale (>= 0),
        drawn output-referred (see the module docstring).
    forward_weight_noise : hardware-aware training: std of Gaussian noise added to every weight, relative to
        the weight scale, once per forward call in training mode; forward direction only (>= 0).
    ir_drop : sense-line wire resistance per cell times the full-scale conductance, ``r * g_max`` (>= 0;
        0 = off); first-order model in the module docstring.
    """

    dac_bits: int | None = Field(None, ge=2)
    input_bound: float | None = Field(None, gt=0)
    input_scaling: Literal["fixed", "max"] = "fixed"
    adc_bits: int | None = Field(None, ge=2)
    output_bound: float | None = Field(None, gt=0)
    output_noise: float = Field(0.0, ge=0)
    weight_noise: float = Field(0.0, ge=0)
    forward_weight_noise: float = Field(0.0, ge=0)
    ir_drop: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _converters_need_ranges(self) -> IOConfig:
        if self.dac_bits is not None and self.input_bound is None:
            raise ValueError(f"dac_bits = {self.dac_bits} needs an input_bound (the DAC's range), got None")
        if self.adc_bits is not None and self.output_bound is None:
            raise ValueError(f"adc_bits = {self.adc_bits} needs an output_bound (the ADC's range), got None")
        return self

    @property
    def dac_step(self) -> float | None:
        """The DAC's step (one LSB), DAC units; None without a DAC."""
        return None if self.dac_bits is None else self.input_bound / (2 ** (self.dac_bits - 1) - 1)

    @property
    def adc_step(self) -> float | None:
        """The ADC's step (one LSB), normalised units; None without an ADC."""
        return None if self.adc_bits is None else self.output_bound / (2 ** (self.adc_bits - 1) - 1)

    @property
    def analog_output(self) -> bool:
        """Whether anything acts on the normalised analog output (noise, ADC, saturation)."""
        return bool(self.output_noise or self.weight_noise or self.output_bound is not None)

    @property
    def is_ideal(self) -> bool:
        """True when a read through this periphery is exactly ``x @ W.T``."""
        return (
            self.input_scaling == "fixed"
            and self.input_bound is None
            and not self.analog_output
            and self.ir_drop == 0
            and self.forward_weight_noise == 0
        )


class TileConfig(StrictModel):
    """One tile: its forward and backward periphery, its size limits, and the weight-to-conductance mapping.

    io : the forward read's periphery.
    backward : the periphery of the transposed read that computes input gradients, or ``"ideal"``
        (exact ``delta @ W``); its ``forward_weight_noise`` must be 0.
    max_rows : the most inputs (rows, ``in_features``) one array takes (>= 1).
    max_cols : the most outputs (columns, ``out_features``) one array takes (>= 1).
    allow_split : layers larger than one array are split over several tiles (rows summed digitally,
        columns concatenated); False: such layers are refused.
    weight_range : ``|w|`` that maps to the full-scale conductance (> 0), e.g. the bound of a pulsed device;
        None: the tile's current max ``|w|`` (re-read on every call). Weights beyond it are not clipped here
        (device models bound them).
    """

    io: IOConfig = IOConfig()
    backward: IOConfig | Literal["ideal"] = "ideal"
    max_rows: int = Field(512, ge=1)
    max_cols: int = Field(512, ge=1)
    allow_split: bool = True
    weight_range: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _backward_has_no_training_noise(self) -> TileConfig:
        if isinstance(self.backward, IOConfig) and self.backward.forward_weight_noise != 0:
            raise ValueError(
                f"backward.forward_weight_noise = {self.backward.forward_weight_noise} must be 0 "
                "(hardware-aware weight noise acts on the forward read only; set io.forward_weight_noise)"
            )
        return self


#: The realistic periphery: 7-bit DAC over [-1, 1] with per-vector max scaling, 9-bit ADC saturating at 12
#: (normalised units), output noise 0.5 LSB of the ADC (aihwkit's defaults but its 0.06 output noise, 1.3 LSB).
REALISTIC_IO = IOConfig(
    dac_bits=7,
    input_bound=1.0,
    input_scaling="max",
    adc_bits=9,
    output_bound=12.0,
    output_noise=0.5 * 12.0 / (2**8 - 1),
)


def ideal_tile(max_rows: int = 512, max_cols: int = 512) -> TileConfig:
    """No noise, infinite DAC/ADC resolution, no clipping, ideal backward: a read is exactly ``x @ W.T``."""
    return TileConfig(max_rows=max_rows, max_cols=max_cols)


def realistic_tile(*, ideal_backward: bool = False, max_rows: int = 512, max_cols: int = 512) -> TileConfig:
    """:data:`REALISTIC_IO` on the forward read and (unless ``ideal_backward``) on the backward read; 512 x 512 arrays.

    ``ideal_backward=True`` is the hardware-aware-training setting: non-ideal forward, full-precision
    backward and update.
    """
    return TileConfig(io=REALISTIC_IO, backward="ideal" if ideal_backward else REALISTIC_IO, max_rows=max_rows, max_cols=max_cols)


def as_tile_config(config: TileConfig | Mapping[str, Any] | None) -> TileConfig:
    """``config`` as a :class:`TileConfig` (None: :func:`ideal_tile`; a mapping is validated -> :class:`ConfigError`)."""
    if config is None:
        return ideal_tile()
    if isinstance(config, TileConfig):
        return config
    if isinstance(config, Mapping):
        return validate_config(TileConfig, dict(config), source="tile_config")
    raise ConfigError(f"tile_config must be a TileConfig or a mapping, got {type(config).__name__}")


def quantize(v: torch.Tensor, step: float) -> torch.Tensor:
    """``step * round(v / step)`` (round half to even): a uniform mid-tread quantiser."""
    return torch.round(v / step) * step


def ir_dropped(w: torch.Tensor, w_scale: torch.Tensor, ir_drop: float) -> torch.Tensor:
    """The effective weights of an array with IR drop on its sense lines (module docstring), in weight units.

    w : ``(n_out, n_in)``, one sense line per row (output ``i`` sums ``w[i, :] * x``), input 0 farthest from the
    ADC. Returns ``(n_out, n_in)``. Two cumulative sums along the contiguous axis per polarity.
    """

    def attenuated(g: torch.Tensor) -> torch.Tensor:
        cum = g.cumsum(dim=-1)  # G_m = sum_{l <= m} g_l
        upstream = cum.sum(dim=-1, keepdim=True) - cum.cumsum(dim=-1) + cum  # C_j = sum_{m >= j} G_m
        return g * (1 - ir_drop * upstream)

    g = w.contiguous() / w_scale
    return (attenuated(g.clamp(min=0)) - attenuated((-g).clamp(min=0))) * w_scale


def _read(
    x: torch.Tensor,
    w: torch.Tensor,
    io: IOConfig,
    w_scale: torch.Tensor | None,
    generator: torch.Generator,
    apply_ir_drop: bool = True,
    masks: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One read ``x @ w.T`` through the periphery ``io`` (module docstring), without autograd.

    x : ``(..., n_in)``; w : ``(n_out, n_in)`` the array as this read sees it, one sense line per row
    (``W`` forward, ``W.T`` backward);
    w_scale : 0-dim weight scale (needed with ``io.analog_output`` or IR drop).
    apply_ir_drop : False when ``w`` already holds the IR-dropped weights.
    masks : False when no gradient will be taken (the masks are then None).

    Returns ``y (..., n_out)``, the DAC's in-range mask ``(..., n_in)`` (None when nothing can clip) and the
    ADC's in-range mask ``(..., n_out)`` (None without an output bound).

    The DAC codes are the integers ``round(clip(x / s) / dac_step)``; the input scale ``s`` and the DAC step
    are applied to the (usually narrower) output instead of the input, which is read as few times as possible.
    """
    s = None
    xt = x
    if io.input_scaling == "max":
        s = x.abs().amax(dim=-1, keepdim=True)
        s = torch.where(s > 0, s, torch.ones_like(s))
    in_mask = None
    out_gain = 1.0  # the factor between the DAC codes and the DAC-unit inputs
    if io.input_bound is not None:
        b = io.input_bound
        if not (io.input_scaling == "max" and b >= 1.0):  # |x / max|x|| <= 1 never clips at b >= 1
            xt = x / s if s is not None else x
            if masks:
                in_mask = xt.abs() <= b
            xt = xt.clamp(-b, b)
            if io.dac_bits is not None:
                xt = xt.mul_(1.0 / io.dac_step)
        elif io.dac_bits is not None:
            xt = x * (s * io.dac_step).reciprocal_()
        else:
            xt = x / s
        if io.dac_bits is not None:
            xt = xt.round_()
            out_gain = io.dac_step
    elif s is not None:
        xt = x / s
    if io.ir_drop > 0 and apply_ir_drop:
        w = ir_dropped(w, w_scale, io.ir_drop)
    y = torch.matmul(xt, w.t())
    out_mask = None
    if io.analog_output:
        y = y.mul_(out_gain / w_scale)
        if io.output_noise or io.weight_noise:
            if io.weight_noise:
                sq = torch.linalg.vector_norm(xt, dim=-1, keepdim=True).square_().mul_(out_gain**2)
                sigma = torch.sqrt(io.output_noise**2 + io.weight_noise**2 * sq)
            else:
                sigma = io.output_noise
            y = y.add_(sigma * torch.randn(y.shape, generator=generator, device=y.device, dtype=y.dtype))
        if io.output_bound is not None:
            bound = io.output_bound
            if masks:
                out_mask = y.abs() <= bound
            if io.adc_bits is not None:
                y = quantize(y, io.adc_step)
            y = y.clamp_(-bound, bound)
        y = y.mul_(w_scale if s is None else w_scale * s)
    elif out_gain != 1.0 or s is not None:
        y = y.mul_(out_gain if s is None else s * out_gain)
    return y, in_mask, out_mask


class _TileRead(torch.autograd.Function):
    """Forward read through the periphery; backward: ideal weight gradient, input gradient by the backward read."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, tile: AnalogTile) -> torch.Tensor:  # noqa: ANN001
        io = tile.config.io
        w_eff = tile.effective_weight if tile.effective_weight is not None else weight
        needs_scale = io.analog_output or io.ir_drop > 0 or (io.forward_weight_noise > 0 and tile.training)
        w_scale = tile.weight_scale() if needs_scale or isinstance(tile.config.backward, IOConfig) else None
        w_read = tile._ir_dropped_weight(w_eff, w_scale) if io.ir_drop > 0 else w_eff
        if io.forward_weight_noise > 0 and tile.training:
            noise = torch.randn(w_eff.shape, generator=tile.generator, device=w_eff.device, dtype=w_eff.dtype)
            w_read = w_read + (io.forward_weight_noise * w_scale) * noise
        need = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        y, in_mask, out_mask = _read(x, w_read, io, w_scale, tile.generator, apply_ir_drop=False, masks=need)
        gain = tile.compensation * tile.output_scale  # (out,)
        y = torch.addcmul(tile.output_offset, y, gain)
        ctx.tile = tile
        ctx.w_scale = w_scale
        ctx.has_in_mask, ctx.has_out_mask = in_mask is not None, out_mask is not None
        saved = [x, w_eff, gain]
        if in_mask is not None:
            saved.append(in_mask)
        if out_mask is not None:
            saved.append(out_mask)
        ctx.save_for_backward(*saved)
        return y

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:  # noqa: ANN001
        x, w_eff, gain, *masks = ctx.saved_tensors
        in_mask = masks.pop(0) if ctx.has_in_mask else None
        out_mask = masks.pop(0) if ctx.has_out_mask else None
        delta = grad_y * gain
        if out_mask is not None:
            delta = delta * out_mask
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            backward = ctx.tile.config.backward
            if backward == "ideal":
                grad_x = torch.matmul(delta, w_eff)
            else:
                grad_x, _, _ = _read(delta, w_eff.t(), backward, ctx.w_scale, ctx.tile.generator)
            if in_mask is not None:
                grad_x = grad_x * in_mask
        if ctx.needs_input_grad[1]:
            grad_w = torch.matmul(delta.reshape(-1, delta.shape[-1]).t(), x.reshape(-1, x.shape[-1]))
        if ctx.tile.record_update:
            ctx.tile.update_rows.append((x.detach().reshape(-1, x.shape[-1]), delta.detach().reshape(-1, delta.shape[-1])))
        return grad_x, grad_w, None


def _two_seeds(seed: int | None) -> tuple[int, int]:
    """Two independent 63-bit seeds (weight initialisation, noise) from ``seed`` (None: fresh OS entropy)."""
    a, b = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint64)
    return int(a) & (2**63 - 1), int(b) & (2**63 - 1)


class AnalogTile(nn.Module):
    """One physical crossbar array with its periphery (module docstring): ``forward(x (..., in)) -> (..., out)``.

    Parameters
    ----------
    in_features : rows, 1 .. ``config.max_rows``.
    out_features : columns, 1 .. ``config.max_cols``.
    config : :class:`TileConfig` or a mapping validated into one (None: :func:`ideal_tile`).
    seed : seeds the weight initialisation (uniform in ``+-1/sqrt(in_features)``, as ``nn.Linear``) and the
        tile's noise generator; None: fresh OS entropy.
    device, dtype : of the weights (and the generator).

    Attributes
    ----------
    weight : ``nn.Parameter (out_features, in_features)``, the programmed (target) weights; one per array.
    output_scale, output_offset : buffers ``(out_features,)``, digital per-column scale (1) and offset (0).
    compensation : 0-dim buffer (1.0), digital factor on every output (global drift compensation).
    effective_weight : ``(out_features, in_features)`` or None, the weights the array really holds
        (see :meth:`set_effective_weight`; not saved in the state dict).
    record_update : False; when True every backward pass appends ``(x (N, in), delta (N, out))`` (detached,
        leading dimensions flattened, ``delta`` the gradient at the array's outputs, so the weight gradient
        is ``delta.T @ x``) to ``update_rows``: what a rank-one pulsed update needs
        (:class:`~inmaterio.crossbars.analog_sgd.AnalogSGD` sets it and empties the list).
    generator : the ``torch.Generator`` of every random draw of this tile, on the weight's device
        (moving the tile moves it, reseeded from its own stream).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        config: TileConfig | Mapping[str, Any] | None = None,
        *,
        seed: int | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        config = as_tile_config(config)
        for name, value, limit, limit_name in (
            ("in_features", in_features, config.max_rows, "max_rows"),
            ("out_features", out_features, config.max_cols, "max_cols"),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"AnalogTile {name} = {value!r} must be an integer >= 1")
            if value > limit:
                raise ConfigError(
                    f"AnalogTile {name} = {value} exceeds the array's {limit_name} = {limit}; "
                    "split the layer over tiles (AnalogLinear) or raise the limit"
                )
        self.in_features = in_features
        self.out_features = out_features
        self.config = config
        init_seed, noise_seed = _two_seeds(seed)
        init = torch.Generator().manual_seed(init_seed)
        bound = 1.0 / in_features**0.5
        weight = (torch.rand(out_features, in_features, generator=init, dtype=torch.float64) * 2 - 1) * bound
        factory = {"device": device, "dtype": dtype or torch.get_default_dtype()}
        self.weight = nn.Parameter(weight.to(**factory))
        self.register_buffer("output_scale", torch.ones(out_features, **factory))
        self.register_buffer("output_offset", torch.zeros(out_features, **factory))
        self.register_buffer("compensation", torch.ones((), **factory))
        self.register_buffer("effective_weight", None, persistent=False)
        self.record_update = False
        self.update_rows: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._ir_cache: tuple[tuple, torch.Tensor] | None = None
        self.generator = torch.Generator(device=self.weight.device).manual_seed(noise_seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (..., in_features)`` -> ``(..., out_features)`` through the periphery (module docstring)."""
        if x.ndim == 0 or x.shape[-1] != self.in_features:
            raise ValueError(f"AnalogTile takes inputs (..., {self.in_features}), got shape {tuple(x.shape)}")
        return _TileRead.apply(x, self.weight, self)

    def _ir_dropped_weight(self, w_eff: torch.Tensor, w_scale: torch.Tensor) -> torch.Tensor:
        """:func:`ir_dropped` of the forward array, recomputed only when the weights changed (in place or not)."""
        key = (w_eff.data_ptr(), w_eff._version, self.weight.data_ptr(), self.weight._version, w_eff.dtype, w_eff.device)
        if self._ir_cache is None or self._ir_cache[0] != key:
            self._ir_cache = (key, ir_dropped(w_eff, w_scale, self.config.io.ir_drop))
        return self._ir_cache[1]

    def weight_scale(self) -> torch.Tensor:
        """0-dim: the ``|w|`` mapped to the full-scale conductance (``config.weight_range`` or max ``|weight|``;
        1 for an all-zero array)."""
        if self.config.weight_range is not None:
            return torch.tensor(self.config.weight_range, device=self.weight.device, dtype=self.weight.dtype)
        m = self.max_abs_weight()
        return torch.where(m > 0, m, torch.ones_like(m))

    def max_abs_weight(self) -> torch.Tensor:
        """0-dim tensor: max ``|weight|`` (the programmed weights, not the effective ones)."""
        return self.weight.detach().abs().amax()

    def set_effective_weight(self, w: torch.Tensor | None) -> None:
        """Make reads use ``w: (out_features, in_features)`` (the conductances after programming/drift, in weight
        units, copied) instead of ``weight``; None: back to ``weight``. Gradients still go to ``weight``.

        Raises ValueError for a wrong shape or non-finite values.
        """
        self._ir_cache = None
        if w is None:
            self.effective_weight = None
            return
        w = torch.as_tensor(w)
        if tuple(w.shape) != tuple(self.weight.shape):
            raise ValueError(f"effective weight shape {tuple(w.shape)} != the tile's {tuple(self.weight.shape)}")
        w = w.detach().to(device=self.weight.device, dtype=self.weight.dtype).clone()
        if not torch.isfinite(w).all():
            raise ValueError("effective weight has NaN or infinite entries")
        self.effective_weight = w

    @torch.no_grad()
    def set_weight(self, w: torch.Tensor) -> None:
        """Copy ``w: (out_features, in_features)`` into ``weight`` (no gradient recorded)."""
        w = torch.as_tensor(w)
        if tuple(w.shape) != tuple(self.weight.shape):
            raise ValueError(f"weight shape {tuple(w.shape)} != the tile's {tuple(self.weight.shape)}")
        self.weight.copy_(w)

    def _apply(self, fn, recurse: bool = True):  # noqa: ANN001, ANN202 - torch's signature
        out = super()._apply(fn, recurse)
        self._ir_cache = None
        if self.generator.device != self.weight.device:  # follow the weights, reseeded from the old stream
            seed = int(torch.randint(0, 2**62, (1,), generator=self.generator, device=self.generator.device))
            self.generator = torch.Generator(device=self.weight.device).manual_seed(seed)
        return out

    def extra_repr(self) -> str:
        io = self.config.io
        back = "ideal" if self.config.backward == "ideal" else "periphery"
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, dac_bits={io.dac_bits}, "
            f"adc_bits={io.adc_bits}, output_noise={io.output_noise:g}, weight_noise={io.weight_noise:g}, backward={back}"
        )
