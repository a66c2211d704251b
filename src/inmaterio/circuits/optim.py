"""Optimisers of circuit parameters (conductances, bias voltages) with clipping to their bounds.

Parameters live on very different scales (conductances of 1e-7..1e-5 S,
biases of volts), so learning rates are *relative to each parameter's bound
width* ``w = high - low``:

* :class:`SGD`: ``θ -= lr w² g`` (``g`` in loss units per parameter unit, so
  ``w² g`` has the parameter's unit);
* :class:`Momentum`: ``m = μ m + w² g``, ``θ -= lr m``;
* :class:`Adam`: ``θ -= lr w m̂ / (sqrt(v̂) + ε)``, a step of about ``lr w``.

After every step each parameter is clipped to its bounds. Optimisers update
``model.parameters`` in place and have ``state_dict`` / ``load_state_dict``
(tensors and numbers only: they load without pickle).
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from .graph import Model

__all__ = ["OPTIMIZERS", "Adam", "Momentum", "SGD", "make_optimizer"]


class _Optimizer:
    def __init__(self, model: Model, lr: float) -> None:
        if not (isinstance(lr, int | float) and lr > 0):
            raise ConfigError(f"learning rate must be a number > 0, got {lr!r}")
        self.model = model
        self.lr = float(lr)
        self.steps = 0
        self.width = {k: float(hi - lo) for k, (lo, hi) in model.bounds.items()}

    def step(self, gradients: dict[str, torch.Tensor]) -> None:
        """Apply one update from batch-mean ``gradients`` (name -> tensor) and clip to the bounds."""
        unknown = set(gradients) - set(self.model.parameters)
        if unknown:
            raise ConfigError(f"gradients for unknown parameters {sorted(unknown)}")
        self.steps += 1
        for key, g in gradients.items():
            if not torch.isfinite(g).all():
                raise ConfigError(f"gradient of {key!r} is not finite; parameters left unchanged")
        for key, g in gradients.items():
            p = self.model.parameters[key]
            lo, hi = self.model.bounds[key]
            self.model.parameters[key] = (p - self._delta(key, g.to(p))).clamp(lo, hi)

    def _delta(self, key: str, g: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "lr": self.lr}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.steps = int(state["steps"])
        self.lr = float(state["lr"])


class SGD(_Optimizer):
    """Plain gradient descent, ``θ -= lr w² g``."""

    def _delta(self, key, g):
        return self.lr * self.width[key] ** 2 * g


class Momentum(_Optimizer):
    """Heavy-ball momentum: ``m = μ m + w² g``, ``θ -= lr m``."""

    def __init__(self, model: Model, lr: float, momentum: float = 0.9) -> None:
        super().__init__(model, lr)
        if not 0 <= momentum < 1:
            raise ConfigError(f"momentum must lie in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.buffers: dict[str, torch.Tensor] = {}

    def _delta(self, key, g):
        m = self.buffers.get(key, torch.zeros_like(g))
        m = self.momentum * m + self.width[key] ** 2 * g
        self.buffers[key] = m
        return self.lr * m

    def state_dict(self):
        return {**super().state_dict(), "buffers": dict(self.buffers)}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.buffers = dict(state["buffers"])


class Adam(_Optimizer):
    """Adam (Kingma & Ba) with a step of about ``lr`` times the bound width."""

    def __init__(self, model: Model, lr: float, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        super().__init__(model, lr)
        b1, b2 = (float(b) for b in betas)
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ConfigError(f"Adam betas must lie in [0, 1), got {betas!r}")
        self.betas, self.eps = (b1, b2), float(eps)
        self.m: dict[str, torch.Tensor] = {}
        self.v: dict[str, torch.Tensor] = {}

    def _delta(self, key, g):
        b1, b2 = self.betas
        gs = g * self.width[key]  # dimensionless gradient (loss per bound width)
        m = b1 * self.m.get(key, torch.zeros_like(g)) + (1 - b1) * gs
        v = b2 * self.v.get(key, torch.zeros_like(g)) + (1 - b2) * gs**2
        self.m[key], self.v[key] = m, v
        m_hat = m / (1 - b1**self.steps)
        v_hat = v / (1 - b2**self.steps)
        return self.lr * self.width[key] * m_hat / (v_hat.sqrt() + self.eps)

    def state_dict(self):
        return {**super().state_dict(), "m": dict(self.m), "v": dict(self.v)}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.m, self.v = dict(state["m"]), dict(state["v"])


OPTIMIZERS = {"sgd": SGD, "momentum": Momentum, "adam": Adam}


def make_optimizer(name: str, model: Model, lr: float, **options: Any) -> _Optimizer:
    """An optimiser by name (one of :data:`OPTIMIZERS`)."""
    try:
        cls = OPTIMIZERS[name]
    except KeyError:
        raise ConfigError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}") from None
    return cls(model, lr, **options)
