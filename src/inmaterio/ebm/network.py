r"""What every discrete-time energy-based network shares: states, readout, cost, nudging, one step of the dynamics.

A network holds state layers :math:`s = (s_1, \dots, s_N)` (hidden layers and, with ``loss: squared_error``,
the output layer), driven by a clamped input :math:`x = s_0` through a *primitive function*
:math:`\Phi(x, s, \theta)` (a sum of bilinear terms, one per connection; see :mod:`~inmaterio.ebm.mlp` and
:mod:`~inmaterio.ebm.convnet`). One step of the dynamics updates every layer at once:

.. math::

    s_{t+1} = \sigma\Big(\frac{\partial \Phi}{\partial s}(x, s_t, \theta) - \beta\,\frac{\partial \ell}{\partial s}(s_t, y)\Big),

with :math:`\beta = 0` in the free phase and :math:`\beta \ne 0` in the nudged phases (nudging inside
:math:`\sigma`, so the EP estimate after :math:`k` nudged steps equals the BPTT gradient truncated to :math:`k`
steps, to first order in :math:`\beta`: the GDU property). The cost :math:`\ell` is per sample:

- ``cross_entropy`` (the article's "softmax readout"): the logits :math:`o = W_L\,\mathrm{flat}(s_N) + b_L` are
  a linear function of the last state layer, computed *outside* the dynamics, and
  :math:`\ell = -\log \mathrm{softmax}(o)_y`; the nudge :math:`-\beta\,\partial\ell/\partial s_N
  = -\beta\,W_L^\top(\mathrm{softmax}(o) - e_y)` acts on the penultimate layer through the readout weights;
- ``squared_error`` (classic EP): the output layer :math:`s_N` (one unit per class) is part of the dynamics
  and :math:`\ell = \tfrac12\lVert s_N - e_y\rVert^2`.

Connections are numbered :math:`i = 0 \dots L-1` from layer :math:`i` to layer :math:`i+1` (layer 0 the input,
layer :math:`L` the classes: the logits or the output states); each has ``weights[i]`` and ``biases[i]``.
With ``vector_field=True`` every connection :math:`i \ge 1` also has its own feedback weights
``feedback[i - 1]`` (same shape as ``weights[i]``): the top-down terms of the dynamics (and the readout's
nudge) use them instead of the transposed forward weights, so the dynamics are a vector field, not a gradient
(the article's unidirectional architecture; :mod:`~inmaterio.ebm.kolen_pollack` aligns them).

Shapes: ``x`` ``(batch, *input_shape)``; ``states[n]`` ``(batch, *state_shapes[n])``; ``y`` ``(batch,)`` int64
class indices; costs and :math:`\Phi` per sample ``(batch,)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from inmaterio.ebm.activations import activation

__all__ = ["Loss", "EnergyNetwork", "uniform_init"]

Loss = Literal["cross_entropy", "squared_error"]

States = list[torch.Tensor]


def uniform_init(shape: Sequence[int], fan_in: int, generator: torch.Generator) -> torch.Tensor:
    """``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` of ``shape`` (torch's default for linear and conv layers), float32."""
    bound = 1.0 / fan_in**0.5
    return (torch.rand(tuple(shape), generator=generator) * 2.0 - 1.0) * bound


class EnergyNetwork(nn.Module):
    """Base class (see the module docstring). Subclasses set the parameters and define
    :meth:`input_drive`, :meth:`field` and :meth:`phi`.

    Attributes
    ----------
    state_shapes : per-sample shape of each state layer.
    n_classes : classes (logits or output units).
    loss : ``cross_entropy`` (softmax readout outside the dynamics) or ``squared_error`` (output layer inside).
    vector_field : True when the feedback weights are separate tensors.
    """

    state_shapes: tuple[tuple[int, ...], ...]

    def __init__(self, *, activation_name: str, loss: Loss, n_classes: int, vector_field: bool) -> None:
        super().__init__()
        if loss not in ("cross_entropy", "squared_error"):
            from inmaterio.errors import ConfigError

            raise ConfigError(f"loss {loss!r} is unknown; choose cross_entropy or squared_error")
        self.activation_name = activation_name
        self.sigma = activation(activation_name)
        self.loss = loss
        self.n_classes = n_classes
        self.vector_field = vector_field
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.feedback = nn.ParameterList()

    # ------------------------------------------------------------------ structure

    @property
    def n_connections(self) -> int:
        """L, the number of connections (weight layers), readout included."""
        return len(self.weights)

    def top_down(self, i: int) -> torch.Tensor:
        """The weights carrying layer ``i+1`` back to layer ``i`` (``i >= 1``): ``feedback[i-1]`` or ``weights[i]``."""
        return self.feedback[i - 1] if self.vector_field else self.weights[i]

    def layer_groups(self) -> list[dict[str, list[nn.Parameter]]]:
        """Per connection ``i``: ``{"weights": [weights[i], feedback[i-1]?], "biases": [biases[i]]}`` (optimiser groups)."""
        groups = []
        for i in range(self.n_connections):
            weights = [self.weights[i]] + ([self.feedback[i - 1]] if self.vector_field and i >= 1 else [])
            groups.append({"weights": weights, "biases": [self.biases[i]]})
        return groups

    def initial_states(self, batch: int) -> States:
        """Zero states, ``[(batch, *shape) for shape in state_shapes]``, in the parameters' dtype and device."""
        ref = self.weights[0]
        return [torch.zeros((batch, *shape), dtype=ref.dtype, device=ref.device) for shape in self.state_shapes]

    # ------------------------------------------------------------------ to be defined by subclasses

    def input_drive(self, x: torch.Tensor) -> torch.Tensor:
        """The part of :math:`\\partial\\Phi/\\partial s_1` that depends on the input only, shape of ``states[0]``."""
        raise NotImplementedError

    def field(self, drive: torch.Tensor, states: States) -> States:
        """:math:`\\partial\\Phi/\\partial s_n` for every layer (the vector field with separate feedback weights)."""
        raise NotImplementedError

    def phi(self, x: torch.Tensor, states: States, drive: torch.Tensor | None = None) -> torch.Tensor:
        """The primitive function :math:`\\Phi(x, s, \\theta)` per sample ``(batch,)`` (forward weights);
        ``drive``: :meth:`input_drive` of ``x`` if already computed (with its graph, for the parameter gradients)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ readout and cost

    def output(self, states: States) -> torch.Tensor:
        """``(batch, n_classes)``: the logits (``cross_entropy``) or the output states (``squared_error``)."""
        if self.loss == "squared_error":
            return states[-1]
        return states[-1].flatten(1) @ self.weights[-1].T + self.biases[-1]

    def cost(self, states: States, y: torch.Tensor) -> torch.Tensor:
        """:math:`\\ell(s, y)` per sample ``(batch,)``."""
        out = self.output(states)
        if self.loss == "squared_error":
            return 0.5 * (out - F.one_hot(y, self.n_classes).to(out.dtype)).pow(2).sum(1)
        return F.cross_entropy(out, y, reduction="none")

    def cost_field(self, states: States, y: torch.Tensor) -> torch.Tensor:
        """:math:`\\partial\\ell/\\partial s_N` per sample, shape of ``states[-1]`` (through the feedback readout
        weights in a vector-field network)."""
        last = states[-1]
        target = F.one_hot(y, self.n_classes).to(last.dtype)
        if self.loss == "squared_error":
            return last - target
        error = torch.softmax(self.output(states), dim=1) - target
        return (error @ self.top_down(self.n_connections - 1)).reshape(last.shape)

    # ------------------------------------------------------------------ dynamics

    def step(self, drive: torch.Tensor, states: States, y: torch.Tensor | None = None, beta: float = 0.0) -> States:
        """One synchronous step: :math:`s \\leftarrow \\sigma(\\partial\\Phi/\\partial s - \\beta\\,\\partial\\ell/\\partial s)`."""
        fields = self.field(drive, states)
        if beta != 0.0:
            if y is None:
                raise ValueError("a nudged step (beta != 0) needs the labels y")
            fields[-1] = fields[-1] - beta * self.cost_field(states, y)
        return [self.sigma(f) for f in fields]

    def forward(self, x: torch.Tensor, states: States) -> States:
        """One free step from ``states`` (the input drive recomputed): for :func:`torch.func.functional_call`."""
        return self.step(self.input_drive(x), states)

    def nudged_primitive(
        self, x: torch.Tensor, states: States, y: torch.Tensor, beta: float, drive: torch.Tensor | None = None
    ) -> torch.Tensor:
        """:math:`\\Phi(x, s, \\theta) - \\beta\\,\\ell(s, y, \\theta)` per sample ``(batch,)``: the function whose
        parameter derivatives EP contrasts (``drive`` as in :meth:`phi`)."""
        total = self.phi(x, states, drive)
        return total if beta == 0.0 else total - beta * self.cost(states, y)

    def predict(self, states: States) -> torch.Tensor:
        """The predicted class per sample ``(batch,)``."""
        return self.output(states).argmax(1)
