r"""Update rules that turn a gradient into pulse counts: stochastic pulse trains and pulse-count quantisation.

A weight change on a crossbar is a signed number of pulses per device, ``n_ij`` (up for ``n > 0``);
:func:`~inmaterio.crossbars.pulsed.pulse` then moves each device by its own state-dependent, noisy
steps. Both rules here aim at the SGD change :math:`\Delta W = \eta\, d\, x^T` (``d = -\delta``, the
negative output gradient; :math:`\eta` the learning rate) with devices of nominal step :math:`\delta w`
(``dw_min``), i.e. :math:`\eta\, d_i x_j / \delta w` pulses.

Stochastic pulse trains (Gokmen & Vlasov, Front. Neurosci. 10:333, 2016)
    Each row ``j`` gets a train of ``BL`` time slots with a pulse in each slot with probability
    :math:`p_j = C |x_j|`, each column ``i`` one with :math:`q_i = C |d_i|`, all independent; a device
    receives one pulse, of sign :math:`\mathrm{sign}(x_j d_i)`, per slot where both of its lines pulse
    (a coincidence). With :math:`C = \sqrt{\eta / (BL\, \delta w)}`

    .. math::

        E[n_{ij}] = BL\, p_j q_i\, \mathrm{sign}(x_j d_i) = \eta\, x_j d_i / \delta w ,

    so :math:`E[\delta w\, n] = \eta\, d\, x^T` as long as no probability exceeds 1 (clipped otherwise).
    *Update management* rescales :math:`p \to p\, m`, :math:`q \to q / m` with
    :math:`m = \sqrt{\max|d| / \max|x|}`, which keeps the product (the expectation) and balances the two
    trains so that neither clips first. *Bit-length management* raises ``BL`` for one update (up to
    ``max_bl``) to the smallest value where :math:`\max p \le 1` and :math:`\max q \le 1`, i.e.
    :math:`BL \ge \eta \max|x| \max|d| / \delta w` with update management.
    The counts are one matrix product, :math:`n = (S_d \odot B_d)^T (S_x \odot B_x)` with the
    Bernoulli slot matrices ``B (BL, n)`` and the signs ``S``; at most ``BL`` pulses per device.

Pulse-count quantisation of a batch gradient (mini-batch GD; Zhao et al. 2021)
    The batch gradient ``G`` (summed or averaged over the batch by the caller) becomes
    :math:`n = Q(-\eta\, G / \delta w)` with ``Q`` rounding to nearest (``"nearest"``, ties to even) or
    stochastic rounding (``"stochastic"``: :math:`\lfloor v \rfloor + \mathrm{Bernoulli}(v - \lfloor v \rfloor)`,
    unbiased), optionally clipped to ``max_pulses`` per device and update.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field

from inmaterio.config import StrictModel

__all__ = ["PulseTrainConfig", "pulse_train_block", "pulse_train_counts", "quantized_counts", "pulse_probabilities"]


class PulseTrainConfig(StrictModel):
    """Stochastic pulse-train update settings (module docstring).

    bl : bit length, the number of time slots per update (1 .. 1000; typically <= 10).
    update_management : balance the row and column probabilities (keeps the expectation).
    bl_management : raise the bit length of an update where a probability would exceed 1.
    max_bl : the most slots bit-length management may use (>= bl).
    """

    bl: int = Field(10, ge=1, le=1000)
    update_management: bool = True
    bl_management: bool = False
    max_bl: int = Field(100, ge=1, le=1000)


def _check_vector(name: str, v: torch.Tensor) -> None:
    if not isinstance(v, torch.Tensor) or not v.is_floating_point() or v.ndim != 1:
        raise ValueError(f"{name} must be a 1-D floating-point tensor, got {type(v).__name__} {tuple(getattr(v, 'shape', ()))}")
    if not torch.isfinite(v).all():
        raise ValueError(f"{name} holds NaN or infinite values")


def _check_rate(learning_rate: float, dw_min: float) -> None:
    if not (isinstance(learning_rate, int | float) and math.isfinite(learning_rate) and learning_rate >= 0):
        raise ValueError(f"learning_rate = {learning_rate!r} must be a finite number >= 0")
    if not (isinstance(dw_min, int | float) and math.isfinite(dw_min) and dw_min > 0):
        raise ValueError(f"dw_min = {dw_min!r} must be a finite number > 0")


def pulse_probabilities(
    x: torch.Tensor, d: torch.Tensor, learning_rate: float, dw_min: float, config: PulseTrainConfig, *, validate: bool = True
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Row and column pulse probabilities ``(p (n_in,), q (n_out,))``, clipped to [0, 1], and the bit length used.

    x : ``(n_in,)`` inputs; d : ``(n_out,)`` the column signal (``-delta`` for SGD); dw_min : the device's
    nominal step (weight units). ``validate=False`` skips the checks of the arguments (a caller that checked
    a whole batch of rows at once).
    """
    if validate:
        _check_vector("x", x)
        _check_vector("d", d)
        _check_rate(learning_rate, dw_min)
    ax, ad = x.abs(), d.abs()
    mx, md = float(ax.max()) if ax.numel() else 0.0, float(ad.max()) if ad.numel() else 0.0
    bl = config.bl
    if config.bl_management and mx > 0 and md > 0:
        if config.update_management:
            need = learning_rate * mx * md / dw_min
        else:
            need = learning_rate * max(mx, md) ** 2 / dw_min
        bl = min(max(bl, math.ceil(need * (1 - 1e-6))), max(config.max_bl, config.bl))  # 1e-6: float round-off
    c = math.sqrt(learning_rate / (bl * dw_min))
    p, q = ax * c, ad * c
    if config.update_management and mx > 0 and md > 0:
        m = math.sqrt(md / mx)
        p, q = p * m, q / m
    return p.clamp_(max=1.0), q.clamp_(max=1.0), bl


def pulse_train_block(
    x: torch.Tensor,
    d: torch.Tensor,
    learning_rate: float,
    dw_min: float,
    config: PulseTrainConfig,
    generator: torch.Generator,
    *,
    validate: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One stochastic pulse-train update ``learning_rate * d x^T``, as the block of devices that can get pulses.

    x : ``(n_in,)``; d : ``(n_out,)`` (``-delta`` for a descent step); the slots are drawn from ``generator``
    (two uniform ``(BL, n)`` draws, on the generator's device).

    Returns ``(cols, rows, counts)``: the indices of the columns ``(k,)`` and rows ``(m,)`` that pulse in a slot
    where a line of the other kind pulses too, and the signed counts ``(k, m)`` (int64, ``|n| <= BL``) of that
    block; every other device gets no pulse. :func:`pulse_train_counts` is the full matrix. ``validate``: as
    :func:`pulse_probabilities`.
    """
    p, q, bl = pulse_probabilities(x, d, learning_rate, dw_min, config, validate=validate)
    dev = generator.device
    row_slots = torch.rand((bl, x.numel()), generator=generator, device=dev, dtype=x.dtype)
    col_slots = torch.rand((bl, d.numel()), generator=generator, device=dev, dtype=d.dtype)
    if dev != x.device:
        row_slots, col_slots = row_slots.to(x.device), col_slots.to(d.device)
    row_slots, col_slots = row_slots < p, col_slots < q
    rows = (row_slots & col_slots.any(dim=1, keepdim=True)).any(dim=0).nonzero().flatten()
    cols = (col_slots & row_slots.any(dim=1, keepdim=True)).any(dim=0).nonzero().flatten()
    signed_rows = row_slots[:, rows].to(x.dtype) * torch.sign(x[rows])
    signed_cols = col_slots[:, cols].to(d.dtype) * torch.sign(d[cols])
    return cols, rows, torch.round(signed_cols.t() @ signed_rows).to(torch.int64)


def pulse_train_counts(
    x: torch.Tensor,
    d: torch.Tensor,
    learning_rate: float,
    dw_min: float,
    config: PulseTrainConfig,
    generator: torch.Generator,
) -> torch.Tensor:
    """Signed pulse counts ``(n_out, n_in)`` (int64) of one stochastic pulse-train update ``learning_rate * d x^T``
    (:func:`pulse_train_block` written into a zero matrix; the same draws)."""
    cols, rows, block = pulse_train_block(x, d, learning_rate, dw_min, config, generator)
    counts = torch.zeros((d.numel(), x.numel()), dtype=torch.int64, device=x.device)
    counts[cols.unsqueeze(1), rows] = block
    return counts


def quantized_counts(
    change: torch.Tensor,
    dw_min: float,
    rounding: Literal["nearest", "stochastic"],
    generator: torch.Generator | None = None,
    max_pulses: int | None = None,
) -> torch.Tensor:
    """Signed pulse counts (int64, ``change``'s shape) of a desired weight change ``change`` (weight units).

    ``change / dw_min`` rounded to nearest or stochastically (``generator`` needed), then clipped to
    ``+-max_pulses`` (None: no limit).
    """
    if not isinstance(change, torch.Tensor) or not change.is_floating_point():
        raise ValueError(f"change must be a floating-point tensor, got {type(change).__name__}")
    if not torch.isfinite(change).all():
        raise ValueError("change holds NaN or infinite values")
    _check_rate(0.0, dw_min)
    if max_pulses is not None and (isinstance(max_pulses, bool) or not isinstance(max_pulses, int) or max_pulses < 1):
        raise ValueError(f"max_pulses = {max_pulses!r} must be an integer >= 1 or None")
    v = change / dw_min
    if rounding == "nearest":
        n = torch.round(v)
    elif rounding == "stochastic":
        if not isinstance(generator, torch.Generator):
            raise ValueError("stochastic rounding needs a torch.Generator")
        floor = torch.floor(v)
        u = torch.rand(v.shape, generator=generator, device=generator.device, dtype=v.dtype).to(v.device)
        n = floor + (u < (v - floor)).to(v.dtype)
    else:
        raise ValueError(f"rounding = {rounding!r}; allowed: 'nearest', 'stochastic'")
    if max_pulses is not None:
        n = n.clamp_(-max_pulses, max_pulses)
    return n.to(torch.int64)
