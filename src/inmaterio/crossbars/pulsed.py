r"""Pulsed-update device models: typed configs, presets, sampled device arrays and vectorised pulsing.

A resistive cross-point device stores one weight ``w`` (its *state*, in normalised weight units,
a linear image of its conductance). An update is a train of identical voltage pulses; each pulse
moves the state by a step that depends on the state and on the direction:

.. math::

    w \leftarrow \mathrm{clip}\big(w + \Delta^+(w) + \text{noise},\ w_{\min,i},\ w_{\max,i}\big)  \quad\text{(up pulse)}

    w \leftarrow \mathrm{clip}\big(w - \Delta^-(w) + \text{noise},\ w_{\min,i},\ w_{\max,i}\big)  \quad\text{(down pulse)}

where ``i`` indexes the device (every device has its own bounds and step sizes, drawn once from the
device-to-device spreads by :func:`sample_devices`). With :math:`R_i = w_{\max,i} - w_{\min,i}`,
:math:`x = (w - w_{\min,i}) / R_i \in [0, 1]` (the state clamped into the range) and the device's
nominal up/down steps :math:`\delta w^\pm_i` (see *Device-to-device spread*), the models are

``constant_step`` (linear; Gokmen & Vlasov 2016)
    :math:`\Delta^\pm(w) = \delta w^\pm_i`.

``soft_bounds`` (step proportional to the distance to the bound it moves towards)
    :math:`\Delta^+(w) = \delta w^+_i\,(w_{\max,i} - w)/h_i`,
    :math:`\Delta^-(w) = \delta w^-_i\,(w - w_{\min,i})/h_i`, with :math:`h_i = R_i/2`,
    so :math:`\delta w^\pm_i` is the step at the centre of the range. From :math:`w_0`, ``n`` up pulses
    give :math:`w_n = w_{\max} - (w_{\max} - w_0)(1 - \delta w^+/h)^n`.

``exp_step`` (NeuroSim's LTP/LTD curves, Chen, Peng & Yu 2018)
    The conductance after ``P`` potentiating pulses from the bottom of the range is
    :math:`G(P) = B\,(1 - e^{-P/A}) + G_{\min}` with :math:`B = (G_{\max} - G_{\min}) / (1 - e^{-P_{\max}/A})`,
    :math:`P_{\max} = R/\delta w` pulses over the full range. In normalised units (:math:`t = P/P_{\max}`,
    :math:`a = A/P_{\max}`) the curve is :math:`f_a(t) = (1 - e^{-t/a}) / (1 - e^{-1/a})`. An up pulse
    advances the pulse position by :math:`\delta^+_i = \delta w^+_i / R_i` on the up curve
    (:math:`a = a^+`), a down pulse moves it back by :math:`\delta^-_i = \delta w^-_i / R_i` on the down
    curve (:math:`a = a^-`), as NeuroSim does (``InvNonlinearWeight`` then ``NonlinearWeight``). Because
    :math:`1 - c\,f_a(t) = e^{-t/a}` with :math:`c_a = 1 - e^{-1/a}`, this is linear in the state:

    .. math::

        \Delta^+(w) = R_i\,(1/c_{a^+} - x)\,(1 - e^{-\delta^+_i/a^+}),\qquad
        \Delta^-(w) = R_i\,(1/c_{a^-} - x)\,(e^{\delta^-_i/a^-} - 1).

    ``nl_up`` / ``nl_down`` are NeuroSim's non-linearity labels, with NeuroSim's signs: the usual
    saturating device has ``nl_up > 0`` (potentiation slows towards :math:`w_{\max}`) and ``nl_down < 0``
    (depression slows towards :math:`w_{\min}`); 0 is linear (a constant step). The label maps to the
    normalised :math:`a` (sign of the label) by :func:`nonlinearity_to_a`: the largest vertical gap
    between the normalised curve and the straight line is :math:`0.07\sqrt{2}\,|NL|`,

    .. math::

        \max_{t\in[0,1]} \big(f_a(t) - t\big) = \frac{1}{c_a} - a + a \ln(a\,c_a) = 0.07\sqrt{2}\,|NL|

    (equivalently, the largest distance perpendicular to the diagonal is :math:`0.07\,|NL|`). NeuroSim
    ships this map only as a table (``getParamA`` in MLP_NeuroSim V3.0 ``formula.cpp``, NL 0.01 .. 9);
    the condition above was found by fitting that table and reproduces its entries to the printed
    precision (six decimals; checked for NL 0.01 .. 5.58, e.g. NL 2.40 -> a = 0.499181, NL -4.88 ->
    a = -0.200303; NeuroSim's own fit of the Ag:a-Si device, ``nonlinear_fit.m``, uses a = 0.5 / -0.2).

``pow_step`` (power-law step, Fusi & Abbott 2007 style)
    :math:`\Delta^+(w) = \delta w^+_i\,(2(1 - x))^{\gamma^+}`, :math:`\Delta^-(w) = \delta w^-_i\,(2x)^{\gamma^-}`:
    the step is :math:`\delta w^\pm_i` at the centre; :math:`\gamma = 1` is ``soft_bounds``, :math:`\gamma = 0`
    is ``constant_step``.

Cycle-to-cycle noise (a fresh standard normal :math:`\xi` per device and pulse, from the caller's
generator), with :math:`\sigma` = ``c2c_std``:

- ``c2c_kind: additive``: the step becomes :math:`\pm\Delta^\pm(w) + \sigma\,\delta w\,\xi`
  (:math:`\delta w` = the config's ``dw_min``: an absolute std in weight units, the same for every device;
  NeuroSim's "3.5 % of the conductance range" per pulse is :math:`\sigma = 0.035\,R/\delta w`);
- ``c2c_kind: multiplicative``: the step becomes :math:`\pm\Delta^\pm(w)\,(1 + \sigma\,\xi)`.

Device-to-device spread (drawn once per device by :func:`sample_devices`; :math:`\xi_k` standard normal,
:math:`h = (w_{\max} - w_{\min})/2` the nominal half range):

.. math::

    s_i = 1 + \sigma_{dw}\,\xi_1,\qquad \beta_i = \beta + \sigma_{\beta}\,\xi_2,\qquad
    \delta w^\pm_i = \delta w\,|s_i\,(1 \pm \beta_i)|,

    w_{\min,i} = w_{\min} + \sigma_{w_{\min}}\,h\,\xi_3,\qquad w_{\max,i} = w_{\max} + \sigma_{w_{\max}}\,h\,\xi_4

(``dw_min_dtod`` = :math:`\sigma_{dw}`, ``up_down`` = :math:`\beta`, ``up_down_dtod`` = :math:`\sigma_\beta`,
``w_min_dtod`` / ``w_max_dtod``; a device whose drawn bounds cross gets them swapped; the absolute value
keeps a step in its pulse's direction). ``up_down`` is the up/down asymmetry: the ratio of the nominal
steps is :math:`(1 + \beta)/(1 - \beta)`.

Symmetry point and reference (:func:`symmetry_point`): the state :math:`w^*` where :math:`\Delta^+(w^*) = \Delta^-(w^*)`,
towards which alternating up/down pulses drive a device whose :math:`\Delta^+ - \Delta^-` falls with
``w``. Closed forms: soft bounds :math:`w^* = (\delta w^+ w_{\max} + \delta w^- w_{\min})/(\delta w^+ + \delta w^-)`;
power step with :math:`\gamma^+ = \gamma^- = \gamma`: :math:`x^* = 1/(1 + (\delta w^-/\delta w^+)^{1/\gamma})`;
exponential step: the root of a linear function; otherwise a vectorised bisection. Where
:math:`\Delta^+ - \Delta^-` keeps one sign over the range (e.g. a constant step with
:math:`\delta w^+ > \delta w^-`) the point is the bound that sign drives towards (the centre if it is 0
everywhere). With ``reference: zero_shift`` each device's reference is its symmetry point, so the read
weight :math:`w - r_i` (:func:`read_weights`) is 0 there; with ``reference: none``, :math:`r_i = 0`.

Conductance: ``g_min_ns`` / ``g_max_ns`` (optional) map the nominal weight range linearly onto
conductances in nS (:func:`to_conductance_ns`, :func:`from_conductance_ns`).

Differences from NeuroSim: states are clipped after every pulse (NeuroSim clips once per write of
``n`` pulses, adding noise of std :math:`\sigma\sqrt{n}` at once); no device-to-device spread of the
non-linearity label itself.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Annotated, Any, Literal, Union

import torch
from pydantic import Field, ValidationInfo, field_validator

from inmaterio.config import StrictModel, validate_config
from inmaterio.errors import ConfigError

__all__ = [
    "ConstantStepDevice",
    "SoftBoundsDevice",
    "ExpStepDevice",
    "PowStepDevice",
    "PulsedDevice",
    "DEVICE_KINDS",
    "validate_device",
    "PRESETS",
    "preset",
    "nonlinearity_to_a",
    "number_of_states",
    "PulsedArray",
    "sample_devices",
    "step_sizes",
    "pulse",
    "symmetry_point",
    "read_weights",
    "to_conductance_ns",
    "from_conductance_ns",
]

# Largest vertical gap of NeuroSim's normalised curve from the diagonal per unit of |NL| (see module docstring).
_NL_GAP_PER_UNIT = 0.07 * math.sqrt(2.0)
_NL_MAX = 9.0  # the range of NeuroSim's table


# --------------------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------------------


class _PulsedDeviceBase(StrictModel):
    """Fields shared by every pulsed device (weights in normalised units; see the module docstring).

    w_min, w_max : nominal bounds of the state (w_min < w_max).
    dw_min : nominal step (> 0): the constant step, or the step at the centre of the range
        (soft bounds, power step), or range / pulses over the full range (exponential step).
    up_down : up/down asymmetry beta in (-1, 1): nominal up step dw_min (1 + beta), down step dw_min (1 - beta).
    dw_min_dtod : device-to-device std of the step scale (relative to 1).
    up_down_dtod : device-to-device std of beta (absolute).
    w_min_dtod, w_max_dtod : device-to-device std of each bound, relative to the nominal half range.
    c2c_std : cycle-to-cycle noise std per pulse: in units of dw_min (additive) or relative to the step
        (multiplicative).
    c2c_kind : ``additive`` or ``multiplicative``.
    reference : ``none`` (read weight = state) or ``zero_shift`` (read weight = state - the device's
        symmetry point).
    g_min_ns, g_max_ns : optional conductances (nS) of w_min and w_max (both or neither; 0 <= g_min_ns < g_max_ns).
    """

    w_min: float = -1.0
    w_max: float = 1.0
    dw_min: float = Field(0.001, gt=0)
    up_down: float = Field(0.0, gt=-1, lt=1)
    dw_min_dtod: float = Field(0.0, ge=0)
    up_down_dtod: float = Field(0.0, ge=0)
    w_min_dtod: float = Field(0.0, ge=0)
    w_max_dtod: float = Field(0.0, ge=0)
    c2c_std: float = Field(0.0, ge=0)
    c2c_kind: Literal["additive", "multiplicative"] = "additive"
    reference: Literal["none", "zero_shift"] = "none"
    g_min_ns: float | None = Field(None, ge=0)
    g_max_ns: float | None = Field(None, gt=0)

    @field_validator("w_max")
    @classmethod
    def _max_above_min(cls, value: float, info: ValidationInfo) -> float:
        w_min = info.data.get("w_min")
        if w_min is not None and not value > w_min:
            raise ValueError(f"w_max {value} must be greater than w_min {w_min}")
        return value

    @field_validator("dw_min")
    @classmethod
    def _step_within_range(cls, value: float, info: ValidationInfo) -> float:
        w_min, w_max = info.data.get("w_min"), info.data.get("w_max")
        if w_min is not None and w_max is not None and value > w_max - w_min:
            raise ValueError(f"dw_min {value} exceeds the weight range w_max - w_min = {w_max - w_min} (fewer than one state)")
        return value

    @field_validator("g_max_ns")
    @classmethod
    def _conductances_pair(cls, value: float | None, info: ValidationInfo) -> float | None:
        g_min = info.data.get("g_min_ns")
        if value is None and g_min is not None:
            raise ValueError(f"g_max_ns is missing while g_min_ns = {g_min} nS is given (give both or neither)")
        if value is not None and "g_min_ns" in info.data and g_min is None:
            raise ValueError(f"g_max_ns = {value} nS is given without g_min_ns (give both or neither)")
        if value is not None and g_min is not None and not value > g_min:
            raise ValueError(f"g_max_ns {value} nS must be greater than g_min_ns {g_min} nS")
        return value


class ConstantStepDevice(_PulsedDeviceBase):
    """Constant (linear) step: Δ±(w) = dw±_i up to hard bounds."""

    kind: Literal["constant_step"] = "constant_step"


class SoftBoundsDevice(_PulsedDeviceBase):
    """Soft bounds: Δ+(w) = dw+_i (w_max,i - w)/h_i, Δ-(w) = dw-_i (w - w_min,i)/h_i, h_i the half range."""

    kind: Literal["soft_bounds"] = "soft_bounds"


class ExpStepDevice(_PulsedDeviceBase):
    """NeuroSim-style exponential LTP/LTD curves with non-linearity labels.

    nl_up, nl_down : NeuroSim non-linearity labels in [-9, 9] (0 = linear); the usual saturating device
        has nl_up > 0 and nl_down < 0. Each maps to the normalised curve constant a by
        :func:`nonlinearity_to_a`; P_max = (w_max - w_min) / dw_min pulses span the range.
    """

    kind: Literal["exp_step"] = "exp_step"
    nl_up: float = Field(0.0, ge=-_NL_MAX, le=_NL_MAX)
    nl_down: float = Field(0.0, ge=-_NL_MAX, le=_NL_MAX)


class PowStepDevice(_PulsedDeviceBase):
    """Power-law step: Δ+(w) = dw+_i (2(1 - x))^gamma_up, Δ-(w) = dw-_i (2x)^gamma_down, x = (w - w_min,i)/R_i.

    gamma_up, gamma_down : exponents >= 0 (1 = soft bounds, 0 = constant step).
    """

    kind: Literal["pow_step"] = "pow_step"
    gamma_up: float = Field(1.0, ge=0, le=20)
    gamma_down: float = Field(1.0, ge=0, le=20)


PulsedDevice = Annotated[
    Union[ConstantStepDevice, SoftBoundsDevice, ExpStepDevice, PowStepDevice],
    Field(discriminator="kind"),
]
"""Any pulsed-device config, told apart by its ``kind`` (a field of a config model takes this type)."""

DEVICE_KINDS: Mapping[str, type[_PulsedDeviceBase]] = MappingProxyType(
    {
        "constant_step": ConstantStepDevice,
        "soft_bounds": SoftBoundsDevice,
        "exp_step": ExpStepDevice,
        "pow_step": PowStepDevice,
    }
)


def validate_device(data: Any, source: str = "<dict>") -> PulsedDevice:
    """The pulsed-device config described by ``data`` (a mapping with a ``kind`` key).

    Raises
    ------
    ConfigError
        If ``data`` is not a mapping, ``kind`` is missing or unknown, or a field does not validate
        (the message names the field, its value and the rule).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration in {source}: expected a mapping of keys to values, got {type(data).__name__}")
    kind = data.get("kind")
    if kind not in DEVICE_KINDS:
        what = "missing" if kind is None else f"{kind!r} is unknown"
        raise ConfigError(f"invalid configuration in {source}: field 'kind' {what}; allowed: {', '.join(DEVICE_KINDS)}")
    return validate_config(DEVICE_KINDS[kind], data, source=source)


def number_of_states(config: PulsedDevice) -> float:
    """Nominal number of states, (w_max - w_min) / dw_min (pulses over the full range for ``exp_step``)."""
    return (config.w_max - config.w_min) / config.dw_min


# --------------------------------------------------------------------------------------------------
# the NeuroSim non-linearity label
# --------------------------------------------------------------------------------------------------


def _curve_gap(a: float) -> float:
    """max_t (f_a(t) - t) of the normalised curve f_a(t) = (1 - e^{-t/a}) / (1 - e^{-1/a}), a > 0."""
    if a > 100.0:  # series; the closed form cancels catastrophically for large a
        return 1.0 / (8.0 * a) * (1.0 - 1.0 / (72.0 * a * a))
    c = -math.expm1(-1.0 / a)
    return 1.0 / c - a + a * math.log(a * c)


@functools.lru_cache(maxsize=256)
def nonlinearity_to_a(nl: float) -> float:
    """Normalised curve constant a = A / P_max of NeuroSim's non-linearity label ``nl`` (sign kept; inf for 0).

    Solves max_t (f_a(t) - t) = 0.07 sqrt(2) |nl| (see the module docstring), which reproduces
    NeuroSim's ``getParamA`` table; ``nl`` must lie in [-9, 9].
    """
    if not math.isfinite(nl) or abs(nl) > _NL_MAX:
        raise ValueError(f"non-linearity label {nl} outside [-{_NL_MAX}, {_NL_MAX}]")
    if nl == 0:
        return math.inf
    target = _NL_GAP_PER_UNIT * abs(nl)
    if target < _curve_gap(1e6):
        return math.copysign(1.0 / (8.0 * target), nl)
    lo, hi = math.log(1e-3), math.log(1e6)  # gap(1e-3) = 0.992 > 0.07 sqrt(2) * 9
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if _curve_gap(math.exp(mid)) > target:
            lo = mid
        else:
            hi = mid
    return math.copysign(math.exp(0.5 * (lo + hi)), nl)


# --------------------------------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------------------------------

PRESETS: Mapping[str, PulsedDevice] = MappingProxyType(
    {
        # Gokmen & Vlasov, Front. Neurosci. 10:333 (2016), the RPU baseline: dw_min = 0.001 on |w| <= 0.6
        # (1200 states), 30 % device-to-device spread of the step and of the bounds, up/down ratio 1 +- 2 %
        # across devices, 30 % cycle-to-cycle spread of each step.
        "gokmen_vlasov": ConstantStepDevice(
            w_min=-0.6,
            w_max=0.6,
            dw_min=0.001,
            dw_min_dtod=0.3,
            up_down=0.0,
            up_down_dtod=0.01,
            w_min_dtod=0.3,
            w_max_dtod=0.3,
            c2c_std=0.3,
            c2c_kind="multiplicative",
        ),
        # TaOx/HfOx ReRAM (Wu et al., VLSI 2017) as benchmarked with NeuroSim (Chen, Peng & Yu, IEEE TCAD 37(12),
        # 2018): 128 states, NL +0.04 / -0.63, cycle-to-cycle 3.7 % of the range per pulse.
        "reram_exp": ExpStepDevice(
            w_min=-1.0,
            w_max=1.0,
            dw_min=2.0 / 128,
            nl_up=0.04,
            nl_down=-0.63,
            c2c_std=0.037 * 128,
            c2c_kind="additive",
        ),
        # Idealised device: aihwkit's IdealizedPresetDevice (constant step, 10,000 states on [-1, 1],
        # symmetric up/down, 30 % spreads as in the other aihwkit presets).
        "idealized": ConstantStepDevice(
            w_min=-1.0,
            w_max=1.0,
            dw_min=2e-4,
            dw_min_dtod=0.3,
            up_down=0.0,
            up_down_dtod=0.0,
            w_min_dtod=0.3,
            w_max_dtod=0.3,
            c2c_std=0.3,
            c2c_kind="multiplicative",
        ),
        # Zhao et al. (low-rank / mini-batch training on NeuroSim devices): NeuroSim's Ag:a-Si device
        # (MLP_NeuroSim V3.0: NL +2.40 / -4.88, cycle-to-cycle 3.5 % of the conductance range per pulse)
        # with 500 pulses over the full range and G in [3, 38] nS; no device-to-device spread (NeuroSim's default).
        "zhao_neurosim": ExpStepDevice(
            w_min=-1.0,
            w_max=1.0,
            dw_min=2.0 / 500,
            nl_up=2.40,
            nl_down=-4.88,
            c2c_std=0.035 * 500,
            c2c_kind="additive",
            g_min_ns=3.0,
            g_max_ns=38.0,
        ),
    }
)


def preset(name: str, **overrides: Any) -> PulsedDevice:
    """The preset config ``name`` (a key of :data:`PRESETS`), with ``overrides`` of its fields validated.

    Raises
    ------
    ConfigError
        For an unknown name (the message lists the known ones) or overrides that do not validate.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown pulsed-device preset {name!r}; known presets: {', '.join(PRESETS)}")
    config = PRESETS[name]
    if not overrides:
        return config
    return validate_config(type(config), {**config.model_dump(), **overrides}, source=f"preset {name!r}")


# --------------------------------------------------------------------------------------------------
# sampled arrays
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PulsedArray:
    """Devices drawn from a config: one set of parameters per device, every tensor of shape ``shape``.

    config : the device config (model, noise).
    w_min, w_max : ``(*shape)`` per-device bounds of the state.
    dw_up, dw_down : ``(*shape)`` per-device nominal up/down steps δw±_i (>= 0, weight units).
    reference : ``(*shape)`` per-device reference subtracted on reading (0, or the symmetry point with
        ``reference: zero_shift``).
    """

    config: PulsedDevice
    w_min: torch.Tensor
    w_max: torch.Tensor
    dw_up: torch.Tensor
    dw_down: torch.Tensor
    reference: torch.Tensor

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.w_min.shape)

    @property
    def dtype(self) -> torch.dtype:
        return self.w_min.dtype

    @property
    def device(self) -> torch.device:
        return self.w_min.device

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> PulsedArray:
        """The same devices with tensors on ``device`` / in ``dtype`` (self if nothing changes)."""
        if (device is None or torch.device(device) == self.device) and (dtype is None or dtype == self.dtype):
            return self
        move = lambda t: t.to(device=device, dtype=dtype)
        return PulsedArray(
            self.config, move(self.w_min), move(self.w_max), move(self.dw_up), move(self.dw_down), move(self.reference)
        )


def _check_generator(generator: Any) -> None:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")


def sample_devices(
    config: PulsedDevice,
    shape: int | tuple[int, ...] | torch.Size,
    generator: torch.Generator,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> PulsedArray:
    """Draw ``shape`` devices from ``config``'s device-to-device spreads.

    The draws are made in float64 on ``generator``'s device (four standard normals per device, always,
    so a seed gives the same devices for any spread, dtype or target device), then cast to ``dtype``
    and moved to ``device`` (default: the generator's).
    """
    _check_generator(generator)
    if not isinstance(config, _PulsedDeviceBase):
        raise TypeError(f"config must be a pulsed-device config, got {type(config).__name__}")
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    if any((not isinstance(n, int)) or n < 0 for n in shape):
        raise ValueError(f"shape must be a tuple of non-negative integers, got {shape}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point dtype, got {dtype}")
    xi = torch.randn((4, *shape), generator=generator, device=generator.device, dtype=torch.float64)
    half = 0.5 * (config.w_max - config.w_min)
    scale = 1.0 + config.dw_min_dtod * xi[0]
    beta = config.up_down + config.up_down_dtod * xi[1]
    dw_up = config.dw_min * (scale * (1.0 + beta)).abs()
    dw_down = config.dw_min * (scale * (1.0 - beta)).abs()
    lo = config.w_min + config.w_min_dtod * half * xi[2]
    hi = config.w_max + config.w_max_dtod * half * xi[3]
    lo, hi = torch.minimum(lo, hi), torch.maximum(lo, hi)
    target = generator.device if device is None else device
    cast = lambda t: t.to(device=target, dtype=dtype)
    array = PulsedArray(config, cast(lo), cast(hi), cast(dw_up), cast(dw_down), torch.zeros(shape, dtype=dtype, device=target))
    if config.reference == "zero_shift":
        array = PulsedArray(config, array.w_min, array.w_max, array.dw_up, array.dw_down, symmetry_point(array))
    return array


# --------------------------------------------------------------------------------------------------
# steps and pulses
# --------------------------------------------------------------------------------------------------


def _step_lines(array: PulsedArray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """(p0, p1, q0, q1) with Δ+(x) = p0 + p1 x and Δ-(x) = q0 + q1 x (weight units, x the clamped relative
    state) for the models whose steps are linear in the state; None for the power step."""
    cfg = array.config
    zero = torch.zeros_like(array.dw_up)
    if cfg.kind == "constant_step":
        return array.dw_up, zero, array.dw_down, zero
    if cfg.kind == "soft_bounds":  # Δ+ = dw+ (w_max - w)/h = 2 dw+ (1 - x), Δ- = 2 dw- x
        return 2.0 * array.dw_up, -2.0 * array.dw_up, zero, 2.0 * array.dw_down
    if cfg.kind == "exp_step":  # Δ = R (1/c_a - x) k (module docstring)
        span = array.w_max - array.w_min
        p0, p1 = _exp_line(array.dw_up, span, nonlinearity_to_a(cfg.nl_up), +1)
        q0, q1 = _exp_line(array.dw_down, span, nonlinearity_to_a(cfg.nl_down), -1)
        return p0, p1, q0, q1
    return None


def _exp_line(dw: torch.Tensor, span: torch.Tensor, a: float, direction: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Intercept and slope (in x) of the exponential step Δ(x) = R (1/c_a - x) k, weight units."""
    if math.isinf(a):
        return dw, torch.zeros_like(dw)
    delta = dw / span
    k = -torch.expm1(-delta / a) if direction > 0 else torch.expm1(delta / a)
    inv_c = 1.0 / (-math.expm1(-1.0 / a))
    return span * inv_c * k, -span * k


def _relative_state(array: PulsedArray, w: torch.Tensor) -> torch.Tensor:
    """x = (w - w_min) / (w_max - w_min), clamped into [0, 1]."""
    return (w - array.w_min).div_(array.w_max - array.w_min).clamp_(0.0, 1.0)


def step_sizes(array: PulsedArray, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise-free step magnitudes (Δ+(w), Δ-(w)), each ``(*shape)``, of one up / one down pulse at state ``w`` ``(*shape)``.

    The state is clamped into each device's bounds first; the result is not clipped (a step may carry
    the state past a bound, which :func:`pulse` clips).
    """
    _check_state(array, w)
    array = array.to(w.device, w.dtype)
    x = _relative_state(array, w)
    lines = _step_lines(array)
    if lines is None:
        cfg = array.config
        return array.dw_up * (2.0 * (1.0 - x)).pow(cfg.gamma_up), array.dw_down * (2.0 * x).pow(cfg.gamma_down)
    p0, p1, q0, q1 = lines
    return p0 + p1 * x, q0 + q1 * x


def _check_state(array: PulsedArray, w: torch.Tensor) -> None:
    if not isinstance(w, torch.Tensor) or not w.is_floating_point():
        raise ValueError(f"w must be a floating-point tensor, got {type(w).__name__} {getattr(w, 'dtype', '')}".rstrip())
    if tuple(w.shape) != array.shape:
        raise ValueError(f"w has shape {tuple(w.shape)}, the device array has shape {array.shape}")


def pulse(array: PulsedArray, w: torch.Tensor, n_pulses: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Apply ``n_pulses`` pulses to the states ``w`` of the devices of ``array``.

    Parameters
    ----------
    array : the devices, of shape ``shape``.
    w : ``(*shape)`` states (weight units); the result has its dtype and device.
    n_pulses : ``(*shape)`` signed integer tensor: n > 0 up pulses, n < 0 down pulses, 0 untouched.
    generator : draws the cycle-to-cycle noise, one ``(*shape)`` standard normal per pulse index
        (drawn on the generator's device in w's dtype, then moved to w's device).

    Returns
    -------
    ``(*shape)`` new states, each within its device's [w_min, w_max] (a device with n = 0 keeps its state).

    The loop runs over the pulse index only (``max |n|`` iterations), every device at once; a noiseless constant
    step takes all its pulses at once (the same result: equal steps of one sign, then the clip).
    """
    _check_state(array, w)
    _check_generator(generator)
    if (
        not isinstance(n_pulses, torch.Tensor)
        or n_pulses.is_floating_point()
        or n_pulses.is_complex()
        or n_pulses.dtype == torch.bool
    ):
        raise ValueError(
            f"n_pulses must be a signed integer tensor, got {type(n_pulses).__name__} {getattr(n_pulses, 'dtype', '')}"
        )
    if tuple(n_pulses.shape) != array.shape:
        raise ValueError(f"n_pulses has shape {tuple(n_pulses.shape)}, the device array has shape {array.shape}")
    arr = array.to(w.device, w.dtype)
    n = n_pulses if n_pulses.device == w.device else n_pulses.to(w.device)
    count = n.abs()
    n_max = int(count.max()) if count.numel() else 0
    if n_max == 0:
        return w.clone()
    cfg = arr.config
    up = n > 0
    if cfg.kind == "constant_step" and cfg.c2c_std == 0:
        # equal steps of one sign from a state within the bounds: clipping after every pulse is clipping once
        # after all of them (the first pulse brings a state from outside the bounds in)
        step = torch.where(up, arr.dw_up, -arr.dw_down)
        first = torch.where(count > 0, (w + step).clamp_(arr.w_min, arr.w_max), w)
        rest = (count - 1).clamp_(min=0).to(w.dtype)
        return torch.addcmul(first, rest, step).clamp_(arr.w_min, arr.w_max)
    # the signed step of each device's own direction: s(x) = c0 + c1 x (linear models) or c0 * base(x)^gamma
    lines = _step_lines(arr)
    if lines is not None:
        p0, p1, q0, q1 = lines
        c0, c1 = torch.where(up, p0, -q0), torch.where(up, p1, -q1)
        constant = cfg.kind == "constant_step"
    else:
        c0 = torch.where(up, arr.dw_up, -arr.dw_down)
        gamma = torch.where(up, torch.full_like(w, cfg.gamma_up), torch.full_like(w, cfg.gamma_down))
        # base = 2 (1 - x) up, 2 x down: base = b0 + b1 x
        b0, b1 = torch.where(up, 2.0, 0.0).to(w.dtype), torch.where(up, -2.0, 2.0).to(w.dtype)
        constant = False
    sigma = cfg.c2c_std
    noise_scale = sigma * cfg.dw_min if cfg.c2c_kind == "additive" else sigma
    lo, hi = arr.w_min, arr.w_max
    out = w.clone()
    for k in range(n_max):
        if constant:
            step = c0.clone()
        elif lines is not None:
            step = torch.addcmul(c0, c1, _relative_state(arr, out))
        else:
            step = torch.addcmul(b0, b1, _relative_state(arr, out)).pow_(gamma).mul_(c0)
        if sigma > 0:
            xi = torch.randn(out.shape, generator=generator, device=generator.device, dtype=out.dtype)
            if xi.device != out.device:
                xi = xi.to(out.device)
            if cfg.c2c_kind == "additive":
                step.add_(xi, alpha=noise_scale)
            else:
                step.mul_(xi.mul_(noise_scale).add_(1.0))
        new = step.add_(out).clamp_(lo, hi)
        out = torch.where(count > k, new, out)
    return out


# --------------------------------------------------------------------------------------------------
# symmetry point, reading, conductance
# --------------------------------------------------------------------------------------------------


def _linear_sign_change(g0: torch.Tensor, g1: torch.Tensor) -> torch.Tensor:
    """x in [0, 1] where the linear g(x) = g0 + (g1 - g0) x changes sign; 1 if g > 0 throughout, 0 if g < 0, 1/2 if g = 0."""
    crosses = (g0 * g1 <= 0) & ((g0 != 0) | (g1 != 0))
    root = g0 / torch.where(crosses, g0 - g1, torch.ones_like(g0))
    one_sign = torch.where(
        g0 + g1 > 0, torch.ones_like(g0), torch.where(g0 + g1 < 0, torch.zeros_like(g0), torch.full_like(g0, 0.5))
    )
    return torch.where(crosses, root, one_sign)


def _bisect_sign_change(g: Callable[[torch.Tensor], torch.Tensor], like: torch.Tensor, iterations: int = 64) -> torch.Tensor:
    """x in [0, 1] where the monotone g(x) changes sign, per element (vectorised bisection); bounds as above."""
    zero, one = torch.zeros_like(like), torch.ones_like(like)
    g0, g1 = g(zero), g(one)
    lo, hi = zero, one
    rising = g1 > g0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        below = (g(mid) > 0) != rising  # the sign change lies above mid
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    root = 0.5 * (lo + hi)
    crosses = (g0 * g1 <= 0) & ((g0 != 0) | (g1 != 0))
    return torch.where(crosses, root, _linear_sign_change(g0, g1))


def symmetry_point(array: PulsedArray) -> torch.Tensor:
    """``(*shape)`` state w* of every device where Δ+(w*) = Δ-(w*) (module docstring), in the array's dtype/device.

    Closed forms for the constant, soft-bounds and exponential steps (Δ± linear in w) and for the
    power step with equal exponents; a vectorised bisection for the power step otherwise. If
    Δ+ - Δ- keeps one sign over [w_min, w_max] the point is the bound it drives towards.
    """
    cfg = array.config
    lo, hi = array.w_min, array.w_max
    span = hi - lo
    if cfg.kind == "pow_step" and cfg.gamma_up != cfg.gamma_down:
        up, down = array.dw_up, array.dw_down
        g = lambda x: up * (2.0 * (1.0 - x)).pow(cfg.gamma_up) - down * (2.0 * x).pow(cfg.gamma_down)
        x = _bisect_sign_change(g, lo)
    elif cfg.kind == "pow_step" and cfg.gamma_up > 0:
        ratio = (array.dw_down / array.dw_up).pow(1.0 / cfg.gamma_up)
        x = torch.where(torch.isnan(ratio), torch.full_like(lo, 0.5), 1.0 / (1.0 + ratio))
    elif cfg.kind == "pow_step":  # gamma 0 both ways: a constant step
        x = _linear_sign_change(array.dw_up - array.dw_down, array.dw_up - array.dw_down)
    else:  # Δ± linear in x: constant, soft bounds, exponential
        p0, p1, q0, q1 = _step_lines(array)
        x = _linear_sign_change(p0 - q0, p0 + p1 - q0 - q1)
    return lo + x * span


def read_weights(array: PulsedArray, w: torch.Tensor) -> torch.Tensor:
    """``(*shape)`` read weights w - reference of the states ``w`` ``(*shape)``."""
    _check_state(array, w)
    return w - array.reference.to(w.device, w.dtype)


def _conductance_range(config: PulsedDevice) -> tuple[float, float]:
    if config.g_min_ns is None or config.g_max_ns is None:
        raise ValueError(f"the {config.kind} config has no conductance range (g_min_ns, g_max_ns are not set)")
    return config.g_min_ns, config.g_max_ns


def to_conductance_ns(config: PulsedDevice, w: torch.Tensor) -> torch.Tensor:
    """Conductances (nS) of the states ``w``: g_min_ns + (w - w_min)/(w_max - w_min) (g_max_ns - g_min_ns), nominal bounds."""
    g_min, g_max = _conductance_range(config)
    return g_min + (w - config.w_min) / (config.w_max - config.w_min) * (g_max - g_min)


def from_conductance_ns(config: PulsedDevice, g_ns: torch.Tensor) -> torch.Tensor:
    """States of the conductances ``g_ns`` (nS): the inverse of :func:`to_conductance_ns`."""
    g_min, g_max = _conductance_range(config)
    return config.w_min + (g_ns - g_min) / (g_max - g_min) * (config.w_max - config.w_min)
