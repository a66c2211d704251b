r"""PCM inference statistics: programming noise, conductance drift and 1/f read noise.

The phenomenological phase-change-memory (PCM) model of Nandakumar et al. (ICECS 2019) and
Joshi et al. (Nat. Commun. 11, 2473, 2020), fitted on measurements of about a million IBM PCM
devices, and used by Spoon et al. (Front. Comput. Neurosci. 15, 675741, 2021) with the noise
scaled by :math:`\gamma = 1` or :math:`0.5`. A weight is stored on a differential pair of devices
(:func:`weights_to_conductances`); each device goes through

.. code-block:: text

    g_T (target) --program--> g_prog --drift(nu, t)--> g_drift(t) --read--> g(t)

Conductances are in microsiemens (``*_us``), times in seconds (``*_s``); below
:math:`g = G / g_\max` is a conductance normalised by ``g_max_us``, and every function works
elementwise on tensors of any shape (a whole tile at once).

**Time.** ``t_s`` is the time of inference counted from the end of programming, the moment
:math:`g_\text{prog}` has been verified (as aihwkit's ``t_inference``). That moment lies ``t0_s``
after the last programming pulse, so the time since that pulse is :math:`\tau = t_0 + t`.
:math:`g_\text{prog}` is, by the definition of the drift fit, the conductance at
:math:`\tau = t_c` (``t_c_s``). With the default ``t0_s = t_c_s = 20 s`` there is no drift at
``t_s = 0``.

**Programming noise** (closed-loop program-and-verify):

.. math::

    g_\text{prog} = \max\bigl(g_T + \gamma_\text{prog}\,\sigma_\text{prog}\,\xi,\ 0\bigr),\quad
    \sigma_\text{prog} = \max(-1.1731\,g_T^2 + 1.9650\,g_T + 0.26348,\ 0)\ \mu S
    \cdot \frac{g_\max}{25\ \mu S},\quad \xi \sim \mathcal N(0, 1).

The polynomial is the fit in µS at :math:`g_\max = 25` µS; at another :math:`g_\max` the noise is
scaled with it (the relative noise is kept), as aihwkit does.

**Drift**: :math:`g_\text{drift}(t) = g_\text{prog}\,(\tau/t_c)^{-\nu}`, with one exponent per
device drawn once at programming,

.. math::

    \nu = s\,\bigl|\mu_\nu + \sigma_\nu\,\xi\bigr|,\quad
    \mu_\nu = \operatorname{clip}(-0.0155 \ln g + 0.0244,\ 0.049,\ 0.1),\quad
    \sigma_\nu = \operatorname{clip}(-0.0125 \ln g - 0.0059,\ 0.008,\ 0.045),

``s = drift_scale``. The papers write :math:`\nu \sim \mathcal N(\mu_\nu, \sigma_\nu)`; the
normal draw is folded at zero (a device never drifts upwards), as aihwkit does. At most 2.6 % of
the draws are negative (:math:`\mu_\nu / \sigma_\nu \ge 1.94`, least at :math:`g = 0.017`), so
the fold raises the mean exponent by at most 9e-4 (1 %) over :math:`\mu_\nu`.

**1/f read noise** accumulated over the time since programming:

.. math::

    g(t) = \max\bigl(g_\text{drift}(t) + \sigma_{nG}(t)\,\xi,\ 0\bigr),\quad
    \sigma_{nG}(t) = \gamma_\text{read}\,g_\text{drift}(t)\,Q_s
    \sqrt{\ln\frac{\tau + t_\text{read}}{2\,t_\text{read}}},\quad
    Q_s = \min(0.0088 / g^{0.65},\ 0.2),

with :math:`t_\text{read} = 250` ns the read pulse width and :math:`g` in :math:`Q_s` the
programmed state of the device (see :meth:`PCMNoiseModel.read_noise_std_us`).

**Where this differs from aihwkit's** ``PCMLikeNoiseModel`` (1.1.0; written from the equations,
not from its code):

- aihwkit has one time ``t_0`` for both the drift reference and the start of inference;
  here they are ``t_c_s`` and ``t0_s`` (equal by default, which is aihwkit's model).
- :math:`\sigma_\text{prog}` is clipped at 0 as in the papers; aihwkit does not clip (the two
  differ only for :math:`g_T > 1.8\,g_\max`, outside the programmable range).
- aihwkit evaluates :math:`Q_s` at :math:`g_\text{prog}`, the papers at :math:`g_T`; here it is
  evaluated at the ``g_prog_us`` the caller passes (either), and at :math:`g_\text{drift}` only
  when none is given.
- aihwkit takes :math:`|g|` of any conductance; here negative, NaN or infinite conductances are
  errors. For :math:`\tau < t_\text{read}` (possible only with ``t0_s`` below the read pulse
  width) the logarithm is clipped at 0 here, where aihwkit gives NaN.
- aihwkit's ``apply_noise`` draws new drift exponents at every inference time (an expected
  value, not a trajectory); here the caller draws them once (:meth:`~PCMNoiseModel.sample_drift_exponents`)
  and reuses them at every time, so one device follows one trajectory.
- Every random draw takes an explicit :class:`torch.Generator` (aihwkit uses the global one).
- The weight mapping takes an explicit ``w_max`` (aihwkit scales by the largest :math:`|w|` of
  the tile) and has no ``g_min`` offset.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType

import torch
from pydantic import Field
from torch import Tensor

from inmaterio.config import StrictModel
from inmaterio.errors import ConfigError

__all__ = [
    "PCMNoiseModel",
    "PCM_PRESETS",
    "pcm_preset",
    "weights_to_conductances",
    "conductances_to_weights",
    "PROG_NOISE_COEFFS_US",
    "PROG_NOISE_FIT_G_MAX_US",
]

#: Programming-noise polynomial :math:`c_0 + c_1 g + c_2 g^2` in µS, fitted at 25 µS (Nandakumar 2019;
#: the papers print :math:`c_0` rounded to 0.2635).
PROG_NOISE_COEFFS_US: tuple[float, float, float] = (0.26348, 1.9650, -1.1731)
#: The :math:`g_\max` of the devices the programming-noise polynomial was fitted on, µS.
PROG_NOISE_FIT_G_MAX_US = 25.0

# Drift-exponent fits: mean = clip(a ln g + b, lo, hi), std likewise (Joshi 2020).
_NU_MEAN = (-0.0155, 0.0244, 0.049, 0.1)
_NU_STD = (-0.0125, -0.0059, 0.008, 0.045)
# 1/f noise amplitude: Q_s = min(a / g^p, hi).
_QS = (0.0088, 0.65, 0.2)


class PCMNoiseModel(StrictModel):
    """The PCM inference statistics (see the module docstring for the equations).

    A frozen config; the methods are pure functions of it and of their arguments. Every random
    method takes a :class:`torch.Generator`; the numbers are drawn on the generator's device
    and moved to the data's, so a CPU generator serves CUDA tensors and gives the same draws.
    """

    g_max_us: float = Field(25.0, gt=0, description="conductance of the full weight |w| = w_max, µS")
    prog_noise_scale: float = Field(1.0, ge=0, description="γ of the programming noise (1 in Joshi 2020; 1 or 0.5 in Spoon 2021)")
    read_noise_scale: float = Field(1.0, ge=0, description="γ of the 1/f read noise (1 in Joshi 2020; 1 or 0.5 in Spoon 2021)")
    drift_scale: float = Field(1.0, ge=0, description="factor on every drift exponent ν (0: no drift)")
    t_c_s: float = Field(20.0, gt=0, description="time after the last programming pulse at which g_prog is defined, s")
    t_read_s: float = Field(250e-9, gt=0, description="read pulse width of the 1/f noise integral, s")
    t0_s: float = Field(20.0, gt=0, description="time after the last programming pulse at which inference time t_s = 0 starts, s")

    # ----------------------------------------------------------------- closed forms

    def programming_noise_std_us(self, g_target_us: Tensor) -> Tensor:
        r"""Standard deviation of the programming noise, µS, before the clip at 0.

        :math:`\gamma_\text{prog} \max(c_0 + c_1 g_T + c_2 g_T^2, 0)\,g_\max / 25` µS.

        ``g_target_us``: target conductances, any shape, µS, finite and >= 0. Returns the same shape.
        """
        _check_conductance("g_target_us", g_target_us)
        g = g_target_us / self.g_max_us
        c0, c1, c2 = PROG_NOISE_COEFFS_US
        poly = (c0 + g * (c1 + g * c2)).clamp(min=0.0)
        return poly * (self.prog_noise_scale * self.g_max_us / PROG_NOISE_FIT_G_MAX_US)

    def drift_exponent_mean(self, g_us: Tensor) -> Tensor:
        r""":math:`s\,\mu_\nu(g)`: mean of the normal that the drift exponent is folded from.

        ``g_us``: conductances (the target :math:`g_T` in the papers and aihwkit), any shape, µS,
        finite and >= 0. Returns the same shape. The mean of the folded :math:`\nu` itself is
        larger by at most 9e-4 (at :math:`g = 0.017`).
        """
        return self.drift_scale * _clipped_log_fit(_check_conductance("g_us", g_us) / self.g_max_us, _NU_MEAN)

    def drift_exponent_std(self, g_us: Tensor) -> Tensor:
        r""":math:`s\,\sigma_\nu(g)`: standard deviation of the normal that the drift exponent is folded from.

        ``g_us``: as in :meth:`drift_exponent_mean`. Returns the same shape.
        """
        return self.drift_scale * _clipped_log_fit(_check_conductance("g_us", g_us) / self.g_max_us, _NU_STD)

    def read_noise_std_us(self, g_drift_us: Tensor, t_s: float, g_prog_us: Tensor | None = None) -> Tensor:
        r"""Standard deviation :math:`\sigma_{nG}(t)` of the accumulated 1/f read noise, µS.

        ``g_drift_us``: drifted conductances at ``t_s``, any shape, µS. ``t_s``: inference time,
        s, >= 0. ``g_prog_us``: the programmed state that sets :math:`Q_s`, broadcastable to
        ``g_drift_us``: pass :math:`g_\text{prog}` to match aihwkit or :math:`g_T` to match the
        papers; ``None`` evaluates :math:`Q_s` at ``g_drift_us`` itself, which after drift
        overestimates it by :math:`(g_\text{prog} / g_\text{drift})^{0.65}` (up to 1.5x at one
        month). Returns the broadcast shape.
        """
        _check_conductance("g_drift_us", g_drift_us)
        g_state = g_drift_us if g_prog_us is None else _check_conductance("g_prog_us", g_prog_us)
        _check_broadcast("g_prog_us", g_state, "g_drift_us", g_drift_us)
        return g_drift_us * self._q_s(g_state) * (self.read_noise_scale * self._one_over_f_factor(t_s))

    # ----------------------------------------------------------------- deterministic evolution

    def drift(self, g_prog_us: Tensor, nu: Tensor, t_s: float) -> Tensor:
        r"""Drifted conductance :math:`g_\text{prog}\,((t_0 + t) / t_c)^{-\nu}`, µS.

        ``g_prog_us``: programmed conductances, any shape, µS. ``nu``: drift exponents,
        broadcastable to it (from :meth:`sample_drift_exponents`). ``t_s``: inference time, s,
        >= 0. Returns the broadcast shape; equals ``g_prog_us`` where ``t0_s + t_s == t_c_s``.
        """
        _check_conductance("g_prog_us", g_prog_us)
        _check_finite("nu", nu)
        _check_broadcast("nu", nu, "g_prog_us", g_prog_us)
        tau_s = self.t0_s + _check_time(t_s)
        return g_prog_us * torch.pow(tau_s / self.t_c_s, -nu)

    # ----------------------------------------------------------------- random draws

    def program(self, g_target_us: Tensor, generator: torch.Generator) -> Tensor:
        r"""Programmed conductances :math:`g_\text{prog}`: target plus programming noise, clipped at 0, µS.

        ``g_target_us``: any shape, µS, finite and >= 0. Returns the same shape and dtype.
        """
        sigma = self.programming_noise_std_us(g_target_us)
        return (g_target_us + sigma * _randn_like(g_target_us, generator)).clamp(min=0.0)

    def sample_drift_exponents(self, g_prog_us: Tensor, generator: torch.Generator) -> Tensor:
        r"""One drift exponent per device, :math:`\nu = |\mathcal N(s\mu_\nu, s\sigma_\nu)| \ge 0`.

        ``g_prog_us``: the conductances whose state sets :math:`\mu_\nu, \sigma_\nu`, any shape,
        µS; the papers and aihwkit use the target :math:`g_T` (pass it to match them), the
        programmed value is an equally valid reading. Returns the same shape and dtype.
        """
        mean = self.drift_exponent_mean(g_prog_us)
        std = self.drift_exponent_std(g_prog_us)
        return (mean + std * _randn_like(mean, generator)).abs()

    def read(self, g_drift_us: Tensor, t_s: float, generator: torch.Generator, g_prog_us: Tensor | None = None) -> Tensor:
        r"""Conductances read at ``t_s``: drifted value plus 1/f read noise, clipped at 0, µS.

        ``g_drift_us``: drifted conductances (from :meth:`drift`), any shape, µS. ``t_s``:
        inference time, s, >= 0. ``g_prog_us``: the state that sets :math:`Q_s`, see
        :meth:`read_noise_std_us` (pass it). Every call draws new noise. Returns the broadcast shape.
        """
        sigma = self.read_noise_std_us(g_drift_us, t_s, g_prog_us)
        return (g_drift_us + sigma * _randn_like(sigma, generator)).clamp(min=0.0)

    def conductance_at(self, g_prog_us: Tensor, nu: Tensor, t_s: float, generator: torch.Generator) -> Tensor:
        r"""Drift then read at ``t_s`` with :math:`Q_s` at :math:`g_\text{prog}`: aihwkit's
        ``apply_drift_noise_to_conductance``, µS.

        ``g_prog_us``: programmed conductances, any shape, µS; ``nu``: their drift exponents,
        broadcastable; ``t_s``: inference time, s, >= 0. Returns the broadcast shape.
        """
        return self.read(self.drift(g_prog_us, nu, t_s), t_s, generator, g_prog_us=g_prog_us)

    # ----------------------------------------------------------------- helpers

    def _q_s(self, g_state_us: Tensor) -> Tensor:
        r"""1/f amplitude :math:`Q_s = \min(0.0088 / g^{0.65}, 0.2)` (0.2 at g = 0), same shape as ``g_state_us``."""
        a, p, hi = _QS
        return (a / (g_state_us / self.g_max_us).pow(p)).clamp(max=hi)

    def _one_over_f_factor(self, t_s: float) -> float:
        r""":math:`\sqrt{\max(\ln((\tau + t_\text{read}) / (2 t_\text{read})), 0)}` with :math:`\tau = t_0 + t`."""
        tau_s = self.t0_s + _check_time(t_s)
        return math.sqrt(max(math.log((tau_s + self.t_read_s) / (2.0 * self.t_read_s)), 0.0))


# --------------------------------------------------------------------- weight mapping


def weights_to_conductances(w: Tensor, w_max: Tensor | float, g_max_us: float) -> tuple[Tensor, Tensor]:
    r"""Target conductances of the differential pair that stores ``w``: :math:`w \propto G^+ - G^-`.

    :math:`G^+ = g_\max \min(\max(w, 0), w_\max) / w_\max`, :math:`G^- = g_\max \min(\max(-w, 0), w_\max) / w_\max`:
    a positive weight on the ``plus`` device (the other at 0), a negative one on the ``minus``
    device, ``|w| <= w_max`` linearly, larger magnitudes saturated at ``g_max_us``.

    ``w``: weights, any shape, finite. ``w_max``: the weight mapped to ``g_max_us``, a number or
    a tensor broadcastable to ``w`` (e.g. ``(out, 1)`` for one scale per row), finite and > 0.
    ``g_max_us``: µS, > 0. Returns ``(g_plus_us, g_minus_us)``, each of the broadcast shape and
    in ``[0, g_max_us]``. Differentiable in ``w`` (zero gradient where saturated).
    """
    _check_finite("w", w)
    scale = _check_scale(w_max, g_max_us, w)
    return (w * scale).clamp(0.0, g_max_us), (-w * scale).clamp(0.0, g_max_us)


def conductances_to_weights(g_plus_us: Tensor, g_minus_us: Tensor, w_max: Tensor | float, g_max_us: float) -> Tensor:
    r"""Weights stored by a differential pair: :math:`(G^+ - G^-)\,w_\max / g_\max`.

    ``g_plus_us``, ``g_minus_us``: conductances, broadcastable, µS, finite and >= 0. ``w_max``,
    ``g_max_us``: as in :func:`weights_to_conductances`. Returns the broadcast shape. The inverse
    of :func:`weights_to_conductances` for ``|w| <= w_max``.
    """
    _check_conductance("g_plus_us", g_plus_us)
    _check_conductance("g_minus_us", g_minus_us)
    _check_broadcast("g_minus_us", g_minus_us, "g_plus_us", g_plus_us)
    scale = _check_scale(w_max, g_max_us, g_plus_us)
    return (g_plus_us - g_minus_us) / scale


# --------------------------------------------------------------------- presets

#: Named models. ``joshi2020``: the measured statistics at γ = 1 (aihwkit's ``PCMLikeNoiseModel()``).
#: ``spoon2021``: the same model, as Spoon et al. (2021) use it at γ = 1 (identical values; named
#: so that a study cites its source). ``spoon2021_gamma_half``: programming and read noise halved
#: (γ = 0.5), drift unchanged. ``noiseless``: γ = 0 and no drift, for checks of the periphery.
PCM_PRESETS: Mapping[str, PCMNoiseModel] = MappingProxyType(
    {
        "joshi2020": PCMNoiseModel(),
        "spoon2021": PCMNoiseModel(),
        "spoon2021_gamma_half": PCMNoiseModel(prog_noise_scale=0.5, read_noise_scale=0.5),
        "noiseless": PCMNoiseModel(prog_noise_scale=0.0, read_noise_scale=0.0, drift_scale=0.0),
    }
)


def pcm_preset(name: str) -> PCMNoiseModel:
    """The preset called ``name`` (a frozen config; derive others with ``model_copy(update=...)``).

    Raises
    ------
    ConfigError
        For an unknown name, listing the known ones.
    """
    try:
        return PCM_PRESETS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown PCM preset {name!r}; known presets: {', '.join(sorted(PCM_PRESETS))}") from None


# --------------------------------------------------------------------- checks


def _clipped_log_fit(g: Tensor, fit: tuple[float, float, float, float]) -> Tensor:
    """``clip(a ln g + b, lo, hi)`` of normalised conductances (``g = 0`` gives the bound of ``ln 0 = -inf``)."""
    a, b, lo, hi = fit
    return (a * g.clamp(min=torch.finfo(g.dtype).tiny).log() + b).clamp(lo, hi)


def _first_bad(name: str, x: Tensor, ok: Tensor) -> str:
    """``"name[i, j] = value"`` of the first element where ``ok`` is false."""
    index = tuple(int(i) for i in torch.nonzero(~ok)[0])
    value = x[index].item()
    where = f"[{', '.join(map(str, index))}]" if index else ""
    return f"{name}{where} = {value}"


def _check_tensor(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise ConfigError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ConfigError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def _check_finite(name: str, x: Tensor) -> Tensor:
    """``x`` if it is a floating tensor of finite numbers; else a ConfigError naming the first bad element."""
    ok = torch.isfinite(_check_tensor(name, x))
    if not bool(ok.all()):
        raise ConfigError(f"{name} must be finite: {_first_bad(name, x, ok)}")
    return x


def _check_conductance(name: str, g: Tensor) -> Tensor:
    """``g`` if it holds finite conductances >= 0 µS; else a ConfigError naming the first bad element."""
    ok = (_check_tensor(name, g) >= 0) & torch.isfinite(g)
    if not bool(ok.all()):
        raise ConfigError(f"{name} must be finite conductances in [0, inf) µS: {_first_bad(name, g, ok)} µS")
    return g


def _check_time(t_s: float) -> float:
    """``t_s`` as a float if it is a finite time >= 0 s."""
    try:
        if isinstance(t_s, bool | str):
            raise TypeError
        t = float(t_s)
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"t_s must be a number of seconds >= 0, got {t_s!r}") from None
    if not (math.isfinite(t) and t >= 0):
        raise ConfigError(f"t_s = {t} s outside the allowed range [0, inf) s (time since the end of programming)")
    return t


def _check_broadcast(name: str, x: Tensor, other_name: str, other: Tensor) -> None:
    try:
        torch.broadcast_shapes(x.shape, other.shape)
    except RuntimeError:
        raise ConfigError(
            f"{name} of shape {tuple(x.shape)} does not broadcast to {other_name} of shape {tuple(other.shape)}"
        ) from None


def _check_scale(w_max: Tensor | float, g_max_us: float, like: Tensor) -> Tensor | float:
    """``g_max_us / w_max`` (µS per unit weight) after checking both."""
    if isinstance(g_max_us, bool) or not isinstance(g_max_us, int | float) or not (math.isfinite(g_max_us) and g_max_us > 0):
        raise ConfigError(f"g_max_us = {g_max_us!r} outside the allowed range (0, inf) µS")
    if isinstance(w_max, Tensor):
        ok = (_check_tensor("w_max", w_max) > 0) & torch.isfinite(w_max)
        if not bool(ok.all()):
            raise ConfigError(f"w_max must be finite and > 0: {_first_bad('w_max', w_max, ok)}")
        _check_broadcast("w_max", w_max, "the weights", like)
        return g_max_us / w_max
    if isinstance(w_max, bool) or not isinstance(w_max, int | float) or not (math.isfinite(w_max) and w_max > 0):
        raise ConfigError(f"w_max = {w_max!r} outside the allowed range (0, inf)")
    return g_max_us / w_max


def _randn_like(x: Tensor, generator: torch.Generator) -> Tensor:
    """Standard normal numbers of ``x``'s shape and dtype, drawn on ``generator``'s device, on ``x``'s device."""
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device).to(x.device)
