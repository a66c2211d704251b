r"""A fully connected, layered energy-based network (784-512-10 by default).

Layers :math:`s_0 = x` (flattened input, ``sizes[0]`` units), hidden layers ``sizes[1:-1]`` and the classes
``sizes[-1]``. The primitive function is the sum over the connections inside the dynamics

.. math::

    \Phi(x, s, \theta) = \sum_i s_{i+1}^\top (W_i\,s_i + b_i),

so :math:`\partial\Phi/\partial s_n = W_{n-1} s_{n-1} + b_{n-1} + W_n^\top s_{n+1}` (no top-down term for the
last state layer). With ``loss: squared_error`` the classes are the last state layer (every connection is in
:math:`\Phi`); with ``loss: cross_entropy`` the last connection is the softmax readout, outside :math:`\Phi`.
With ``vector_field=True`` the top-down terms use ``feedback[n - 1]`` instead of :math:`W_n`.

Weights ``(out, in)`` as in :class:`torch.nn.Linear`; biases ``(out,)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from inmaterio.ebm.network import EnergyNetwork, Loss, States, uniform_init

__all__ = ["EnergyMLP"]


class EnergyMLP(EnergyNetwork):
    """Layered fully connected network.

    Parameters
    ----------
    sizes : units per layer, input first, classes last (at least two entries, each >= 1).
    activation : name of sigma (:mod:`~inmaterio.ebm.activations`).
    loss : ``cross_entropy`` (softmax readout) or ``squared_error`` (output units in the dynamics).
    vector_field : separate feedback weights for the top-down terms.
    seed : the initial weights, ``U(+-1/sqrt(fan_in))`` (feedback weights drawn independently).
    """

    def __init__(
        self,
        sizes: Sequence[int] = (784, 512, 10),
        *,
        activation: str = "hard_sigmoid",
        loss: Loss = "cross_entropy",
        vector_field: bool = False,
        seed: int = 0,
    ) -> None:
        sizes = tuple(int(n) for n in sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            from inmaterio.errors import ConfigError

            raise ConfigError(f"sizes must list >= 2 layer widths >= 1 (input first, classes last), got {list(sizes)}")
        if loss == "cross_entropy" and len(sizes) < 3:
            from inmaterio.errors import ConfigError

            raise ConfigError(f"a softmax readout needs at least one hidden layer, got sizes {list(sizes)}")
        super().__init__(activation_name=activation, loss=loss, n_classes=sizes[-1], vector_field=vector_field)
        self.sizes = sizes
        gen = torch.Generator().manual_seed(seed)
        for a, b in zip(sizes, sizes[1:]):
            self.weights.append(nn.Parameter(uniform_init((b, a), a, gen)))
            self.biases.append(nn.Parameter(uniform_init((b,), a, gen)))
        if vector_field:
            for a, b in zip(sizes[1:], sizes[2:]):
                self.feedback.append(nn.Parameter(uniform_init((b, a), a, gen)))
        in_dynamics = sizes[1:] if loss == "squared_error" else sizes[1:-1]
        self.state_shapes = tuple((n,) for n in in_dynamics)

    def input_drive(self, x: torch.Tensor) -> torch.Tensor:
        """``W_0 x + b_0``, ``(batch, sizes[1])``; ``x`` ``(batch, sizes[0])`` or ``(batch, ...)`` with ``sizes[0]``
        values per sample (flattened).

        Raises
        ------
        ValueError
            ``x`` without a batch dimension or with another number of values per sample (the shapes are named).
        """
        if x.dim() < 2 or x.shape[1:].numel() != self.sizes[0]:
            raise ValueError(f"x must be (batch, {self.sizes[0]}) inputs, or hold {self.sizes[0]} values per sample, "
                             f"got shape {tuple(x.shape)}")  # fmt: skip
        return x.flatten(1) @ self.weights[0].T + self.biases[0]

    def field(self, drive: torch.Tensor, states: States) -> States:
        n_states = len(states)
        fields = []
        for n in range(n_states):
            f = drive if n == 0 else states[n - 1] @ self.weights[n].T + self.biases[n]
            if n + 1 < n_states:
                f = f + states[n + 1] @ self.top_down(n + 1)
            fields.append(f)
        return fields

    def phi(self, x: torch.Tensor, states: States, drive: torch.Tensor | None = None) -> torch.Tensor:
        total = (states[0] * (self.input_drive(x) if drive is None else drive)).sum(1)
        for n in range(1, len(states)):
            total = total + (states[n] * (states[n - 1] @ self.weights[n].T + self.biases[n])).sum(1)
        return total
