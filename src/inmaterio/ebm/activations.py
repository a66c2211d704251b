r"""The neuron nonlinearities sigma of the energy-based networks, by name.

All three map a pre-activation (the field :math:`\partial\Phi/\partial s`) to a bounded state:

- ``hard_sigmoid``: :math:`\sigma(u) = \min(\max(u, 0), 1)`, the clipped identity of Laborieux et al.
  (2021); piecewise linear, so the dynamics are piecewise linear in the states;
- ``sigmoid``: :math:`\sigma(u) = 1 / (1 + e^{-4(u - 1/2)})`, the logistic function rescaled to slope 1 at
  :math:`u = 1/2` and range (0, 1) like the hard sigmoid, but smooth (Ernoult et al. 2019's MNIST MLP);
- ``tanh``: :math:`\sigma(u) = \tanh(u)`, range (-1, 1).

Each is elementwise on a tensor of any shape; torch's autograd differentiates them (BPTT).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

__all__ = ["Activation", "ACTIVATIONS", "activation"]

Activation = Literal["hard_sigmoid", "sigmoid", "tanh"]


def _hard_sigmoid(u: torch.Tensor) -> torch.Tensor:
    return u.clamp(0.0, 1.0)


def _sigmoid(u: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(4.0 * u - 2.0)


#: Name -> elementwise function (tensor -> tensor of the same shape).
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "hard_sigmoid": _hard_sigmoid,
    "sigmoid": _sigmoid,
    "tanh": torch.tanh,
}


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function named ``name`` (one of :data:`ACTIVATIONS`).

    Raises
    ------
    ConfigError
        An unknown name (the choices are listed).
    """
    if name not in ACTIVATIONS:
        from inmaterio.errors import ConfigError

        raise ConfigError(f"activation {name!r} is unknown; choose one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]
