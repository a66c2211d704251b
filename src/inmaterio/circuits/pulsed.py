r"""A torch optimiser that stores every parameter of a circuit model on a pulsed device.

EP (:mod:`inmaterio.circuits.ep`) puts its gradient estimate on the ``.grad`` of a :class:`~inmaterio.circuits.graph.Model`'s
*normalised* parameters :math:`u \in [0, 1]` (a conductance or bias across its bounds). :class:`PulsedDeviceOptimizer`
keeps one sampled pulsed device (:mod:`inmaterio.crossbars.pulsed`, one config for all, each device with its own
device-to-device draws) per parameter element and changes it only by pulses.

Mapping: the device config's *nominal* range maps linearly onto the parameter's bounds,

.. math::

    w = w_{\min} + u\,R,\qquad u = \mathrm{clip}\big((w - w_{\min}) / R,\ 0,\ 1\big),\qquad R = w_{\max} - w_{\min},

so ``number_of_states(device)`` = :math:`R/\delta w` pulses span a conductance's whole bound width. A device
whose drawn bounds (``w_min_dtod``, ``w_max_dtod``) reach beyond the nominal range is read clipped to
``[0, 1]`` (the circuit's bounds); one whose bounds fall inside it never reaches the parameter's bounds. The
initial parameter values are programmed exactly into the devices (within each device's own bounds), and after
every step each parameter is overwritten with the reading of its device: the device state is the truth, the
parameter its image.

Rules (``rule``), with the parameter group's learning rate :math:`\eta` (``lr``, per unit of :math:`u`, as for
the floating-point optimisers of :class:`~inmaterio.circuits.fit.EPTrainConfig`) and :math:`g = \partial L/\partial u`:

``sgd``
    plain pulsed SGD (:func:`inmaterio.crossbars.shd.sgd_step`): the desired change :math:`-\eta g` of
    :math:`u` (i.e. :math:`-\eta g R` in device units) becomes :math:`Q(-\eta g R / \delta w)` pulses
    (``rounding``: stochastic or nearest, clipped to ``max_pulses``), applied with
    :func:`~inmaterio.crossbars.pulsed.pulse`.
``shd``
    Stochastic Hamiltonian Descent (:func:`inmaterio.crossbars.shd.shd_step`, Onen et al. 2022), a
    Tiki-Taka-style split over two arrays: ``A`` (the same device config, read relative to its symmetry point,
    ``reference: zero_shift``; every A device starts at its symmetry point) receives the gradient,
    :math:`A \leftarrow A \oplus (-\eta g R)`, and the parameter's own array ``C`` receives
    :math:`C \leftarrow C \oplus (\eta_C \bar A)` (``lr_c``), where :math:`\oplus x` means "the pulses of the
    desired change x". The parameter is ``C``.

In :mod:`inmaterio.crossbars.shd`'s units (weights :math:`w`) the gradient is :math:`\partial L/\partial w = g/R`
and its learning rate is :math:`\eta R^2`, so that :math:`-\eta R^2 \cdot g / R = -\eta g R`.

Randomness: one ``torch.Generator`` seeded with ``seed`` draws the devices (at construction, parameter by
parameter: C then A), then every update's rounding and cycle-to-cycle noise. Its state, the device states
and the devices' drawn parameters are in :meth:`~PulsedDeviceOptimizer.state_dict`, so a loaded optimiser
continues bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from inmaterio.config import StrictModel
from inmaterio.crossbars.pulsed import PulsedArray, PulsedDevice, sample_devices
from inmaterio.crossbars.shd import PulsedSGDConfig, Rounding, SHDConfig, sgd_step, shd_step
from inmaterio.errors import ConfigError

__all__ = ["PulsedOptimizerConfig", "PulsedDeviceOptimizer"]

_ARRAY_FIELDS = ("w_min", "w_max", "dw_up", "dw_down", "reference")


class PulsedOptimizerConfig(StrictModel):
    """Pulsed-device training of a circuit model's parameters (module docstring).

    device : the pulsed-device config of every parameter element (and of SHD's A array); its nominal
        ``[w_min, w_max]`` maps onto each parameter's bounds; ``reference`` must be ``none`` (the parameter is
        the device state; SHD's A array is zero-shifted by the optimiser itself).
    rule : ``sgd`` (plain pulsed SGD) or ``shd`` (the A/C split of Stochastic Hamiltonian Descent).
    rounding : ``stochastic`` (unbiased) or ``nearest`` rounding of a desired change / dw_min to pulses.
    max_pulses : the most pulses one device gets in one step.
    lr_c : SHD's eta_C (> 0): desired change of C = lr_c * (A read relative to its symmetry point).
    """

    device: PulsedDevice
    rule: Literal["sgd", "shd"] = "sgd"
    rounding: Rounding = "stochastic"
    max_pulses: int = Field(1000, ge=1, le=1_000_000)
    lr_c: float = Field(0.1, gt=0, le=1e6)

    @field_validator("device")
    @classmethod
    def _state_is_the_parameter(cls, device: Any) -> Any:
        if device.reference != "none":
            raise ValueError(
                f"reference is {device.reference!r}; the parameter is the device state itself, so use reference: none "
                "(SHD's A array is read relative to its symmetry point by the optimiser)"
            )
        return device


class PulsedDeviceOptimizer(torch.optim.Optimizer):
    """Pulsed-device updates of a model's normalised parameters (module docstring).

    Args:
        params: the parameters (values in [0, 1]) or parameter groups, as for any ``torch.optim`` optimiser.
        config: :class:`PulsedOptimizerConfig`.
        lr: learning rate per unit of the normalised parameter (> 0); a group may set its own.
        seed: seeds the device draws and the updates' random numbers.

    Per-parameter state: ``w`` (the C / only array's states, device units), ``a`` (SHD's A states), and the
    drawn devices (``c_w_min``, ``c_w_max``, ``c_dw_up``, ``c_dw_down``, ``c_reference`` and the same with
    ``a_``), all of the parameter's shape.
    """

    def __init__(self, params: Iterable[Any], config: PulsedOptimizerConfig, lr: float = 0.01, *, seed: int = 0) -> None:
        if not isinstance(config, PulsedOptimizerConfig):
            raise ConfigError(f"config must be a PulsedOptimizerConfig, got {type(config).__name__}")
        _check_lr(lr)
        super().__init__(params, {"lr": lr})
        for group in self.param_groups:
            _check_lr(group["lr"])
        self.config = config
        self._a_device = config.device.model_copy(update={"reference": "zero_shift"})
        self.generator = torch.Generator().manual_seed(int(seed))
        device = config.device
        span = device.w_max - device.w_min
        with torch.no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if not p.is_floating_point():
                        raise ConfigError(f"parameters must be floating-point tensors, got {p.dtype}")
                    state = self.state[p]
                    c = sample_devices(device, tuple(p.shape), self.generator, dtype=p.dtype, device=p.device)
                    state.update({f"c_{k}": getattr(c, k) for k in _ARRAY_FIELDS})
                    state["w"] = torch.minimum(torch.maximum(device.w_min + p.detach().clamp(0, 1) * span, c.w_min), c.w_max)
                    if config.rule == "shd":
                        a = sample_devices(self._a_device, tuple(p.shape), self.generator, dtype=p.dtype, device=p.device)
                        state.update({f"a_{k}": getattr(a, k) for k in _ARRAY_FIELDS})
                        state["a"] = a.reference.clone()  # A starts at its symmetry point (reads 0)
                    p.copy_(self._read(state["w"]))

    def _read(self, w: torch.Tensor) -> torch.Tensor:
        """Normalised parameter values of device states ``w`` (nominal range onto [0, 1], clipped)."""
        d = self.config.device
        return ((w - d.w_min) / (d.w_max - d.w_min)).clamp(0.0, 1.0)

    def _array(self, state: dict[str, torch.Tensor], prefix: str) -> PulsedArray:
        config = self.config.device if prefix == "c" else self._a_device
        return PulsedArray(config, *(state[f"{prefix}_{k}"] for k in _ARRAY_FIELDS))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        """Pulse every parameter that has a gradient, then write the devices' readings into the parameters."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        cfg, device = self.config, self.config.device
        span = device.w_max - device.w_min
        for group in self.param_groups:
            lr_w = group["lr"] * span * span  # shd.py's learning rate in device units (module docstring)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                grad_w = p.grad.detach().to(state["w"].dtype) / span
                if cfg.rule == "sgd":
                    rule = PulsedSGDConfig(lr=lr_w, rounding=cfg.rounding, max_pulses=cfg.max_pulses)
                    state["w"] = sgd_step(self._array(state, "c"), state["w"], grad_w, rule, self.generator)
                else:
                    rule = SHDConfig(lr_a=lr_w, lr_c=cfg.lr_c, rounding=cfg.rounding, max_pulses=cfg.max_pulses)
                    state["a"], state["w"] = shd_step(
                        self._array(state, "a"), state["a"], self._array(state, "c"), state["w"], grad_w, rule, self.generator
                    )
                p.copy_(self._read(state["w"]))
        return loss

    def state_dict(self) -> dict[str, Any]:
        """torch's optimiser state (device states and draws per parameter, groups) plus the generator's state."""
        state = super().state_dict()
        state["generator"] = self.generator.get_state()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict` (ValueError if it lacks the generator state or does not fit the parameters)."""
        if not isinstance(state_dict, dict) or "generator" not in state_dict:
            raise ValueError("not a PulsedDeviceOptimizer state (no 'generator' entry)")
        state_dict = dict(state_dict)
        generator = state_dict.pop("generator")
        needed = {"w", *(f"c_{k}" for k in _ARRAY_FIELDS)}
        if self.config.rule == "shd":
            needed |= {"a", *(f"a_{k}" for k in _ARRAY_FIELDS)}
        for index, saved in state_dict.get("state", {}).items():
            if not isinstance(saved, dict) or not needed <= set(saved):
                raise ValueError(f"the state of parameter {index} lacks {sorted(needed - set(saved or {}))} (another rule?)")
        super().load_state_dict(state_dict)
        self.generator.set_state(generator)


def _check_lr(lr: Any) -> None:
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr) or not lr > 0:
        raise ConfigError(f"lr = {lr!r} must be a finite number > 0")
