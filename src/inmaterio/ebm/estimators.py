r"""Gradient estimators of an energy-based network: EP (one-sided, random-sign, symmetric) and BPTT.

Every estimator fills the ``.grad`` of the network's parameters with an estimate of
:math:`\partial \mathcal{L}/\partial\theta`, :math:`\mathcal{L}` the batch mean of the cost :math:`\ell` at the end
of the free phase, so any :mod:`torch.optim` optimiser can take the step.

EP. Write :math:`F_\beta(s) = \frac1B\sum_{\mathrm{batch}} [\Phi(x, s, \theta) - \beta\,\ell(s, y, \theta)]` (the
function whose gradient in :math:`s` drives the nudged dynamics; :math:`\ell` depends on :math:`\theta` only
through the softmax readout). After a free phase of :math:`T` steps (:math:`s^0`) and nudged phases of :math:`K`
steps from :math:`s^0` at strengths :math:`\beta_1 \ne \beta_2` (:math:`s^{\beta_1}, s^{\beta_2}`),

.. math::

    \hat g = -\frac{1}{\beta_1 - \beta_2}\Big[\frac{\partial F_{\beta_1}}{\partial\theta}(s^{\beta_1})
             - \frac{\partial F_{\beta_2}}{\partial\theta}(s^{\beta_2})\Big].

- ``one_sided``: :math:`\beta_1 = \beta, \beta_2 = 0` (:math:`s^{\beta_2} = s^0`): bias :math:`O(\beta)`;
- ``random_sign``: the same with :math:`\beta_1 = \pm\beta`, the sign drawn per batch: the :math:`O(\beta)`
  bias averages out over batches;
- ``symmetric``: :math:`\beta_1 = \beta, \beta_2 = -\beta`: bias :math:`O(\beta^2)`;
- ``symmetric_kpvf``: ``symmetric`` on a vector-field network; each feedback weight receives the gradient of
  its forward weight (Kolen-Pollack; the leak is the optimiser's weight decay, :mod:`~inmaterio.ebm.kolen_pollack`).

BPTT: the free phase unrolled with autograd, :math:`\partial\mathcal{L}(s_T)/\partial\theta` by backpropagation.

Shapes: ``x`` ``(batch, *input_shape)``, ``y`` ``(batch,)`` int64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from inmaterio.ebm.dynamics import free_phase, nudged_phase, relax
from inmaterio.ebm.network import EnergyNetwork, States

__all__ = [
    "Estimator",
    "ESTIMATORS",
    "BatchResult",
    "ep_gradient",
    "assign_gradients",
    "ep_step",
    "bptt_step",
    "gradient_step",
    "draw_sign",
]

Estimator = Literal["bptt", "one_sided", "random_sign", "symmetric", "symmetric_kpvf"]
#: Every estimator, in the order of the study's tables.
ESTIMATORS: tuple[str, ...] = ("bptt", "one_sided", "random_sign", "symmetric", "symmetric_kpvf")


@dataclass(frozen=True)
class BatchResult:
    """What one estimate saw: ``loss`` the batch mean cost at the free state, ``correct`` the right predictions
    there, ``beta`` the signed strength of the first nudged phase (0 for BPTT)."""

    loss: float
    correct: int
    beta: float


def ep_gradient(
    model: EnergyNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    first: States,
    beta_first: float,
    second: States,
    beta_second: float,
    *,
    drive: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """The EP estimate :math:`\\hat g` of the module docstring, one tensor per parameter of ``model`` (in
    ``model.parameters()`` order; zeros for parameters :math:`F` does not depend on, e.g. feedback weights).
    ``drive``: the input drive computed *with* its autograd graph, shared by both terms (one backward pass through
    the input layer instead of two); None computes it here.

    Raises
    ------
    ValueError
        ``beta_first == beta_second`` (no contrast).
    """
    if beta_first == beta_second:
        raise ValueError(f"the two nudging strengths must differ, got beta {beta_first} twice")
    params = list(model.parameters())
    with torch.enable_grad():
        drive = model.input_drive(x) if drive is None else drive
        a = model.nudged_primitive(x, [s.detach() for s in first], y, beta_first, drive).mean()
        b = model.nudged_primitive(x, [s.detach() for s in second], y, beta_second, drive).mean()
        total = (b - a) / (beta_first - beta_second)
        grads = torch.autograd.grad(total, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def assign_gradients(model: EnergyNetwork, grads: list[torch.Tensor], *, kolen_pollack: bool = False) -> None:
    """Set ``p.grad`` of every parameter (in ``model.parameters()`` order); with ``kolen_pollack`` each feedback
    weight gets a copy of its forward weight's gradient."""
    for p, g in zip(model.parameters(), grads):
        p.grad = g.detach().clone()
    if kolen_pollack:
        for i in range(1, model.n_connections):
            model.feedback[i - 1].grad = model.weights[i].grad.clone()


@torch.no_grad()
def _free_stats(model: EnergyNetwork, states: States, y: torch.Tensor) -> tuple[float, int]:
    return float(model.cost(states, y).mean()), int((model.predict(states) == y).sum())


def ep_step(
    model: EnergyNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    T: int,
    K: int,
    beta: float,
    symmetric: bool,
    kolen_pollack: bool = False,
) -> BatchResult:
    """Free phase (``T`` steps), nudged phase(s) (``K`` steps at ``beta``, and at ``-beta`` when ``symmetric``),
    then the EP estimate into ``.grad``. ``beta`` may be negative (random sign)."""
    with torch.enable_grad():
        drive = model.input_drive(x)  # computed once: the phases use it detached, the estimate with its graph
    free = free_phase(model, x, T, drive=drive)
    loss, correct = _free_stats(model, free, y)
    first = nudged_phase(model, x, y, free, beta, K, drive=drive)
    if symmetric:
        second = nudged_phase(model, x, y, free, -beta, K, drive=drive)
        grads = ep_gradient(model, x, y, first, beta, second, -beta, drive=drive)
    else:
        grads = ep_gradient(model, x, y, first, beta, free, 0.0, drive=drive)
    assign_gradients(model, grads, kolen_pollack=kolen_pollack)
    return BatchResult(loss, correct, beta)


def bptt_step(model: EnergyNetwork, x: torch.Tensor, y: torch.Tensor, *, T: int) -> BatchResult:
    """The free phase unrolled over ``T`` steps with autograd; :math:`\\partial\\mathcal{L}(s_T)/\\partial\\theta` into ``.grad``."""
    params = list(model.parameters())
    with torch.enable_grad():
        states = relax(model, model.input_drive(x), model.initial_states(len(x)), T)
        loss = model.cost(states, y).mean()
        grads = torch.autograd.grad(loss, params, allow_unused=True)
    assign_gradients(model, [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)])
    return BatchResult(float(loss.detach()), int((model.predict([s.detach() for s in states]) == y).sum()), 0.0)


def draw_sign(generator: torch.Generator) -> float:
    """+1.0 or -1.0 with equal probability, from ``generator`` (one draw)."""
    return 1.0 if bool(torch.rand((), generator=generator) < 0.5) else -1.0


def gradient_step(
    model: EnergyNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    estimator: str,
    *,
    T: int,
    K: int,
    beta: float,
    sign: float = 1.0,
) -> BatchResult:
    """Fill ``.grad`` with ``estimator``'s estimate (``sign``: the drawn sign of ``random_sign``, else ignored).

    Raises
    ------
    ValueError
        An unknown estimator, or ``symmetric_kpvf`` on a network without separate feedback weights.
    """
    if estimator == "bptt":
        return bptt_step(model, x, y, T=T)
    if estimator == "one_sided":
        return ep_step(model, x, y, T=T, K=K, beta=beta, symmetric=False)
    if estimator == "random_sign":
        return ep_step(model, x, y, T=T, K=K, beta=sign * beta, symmetric=False)
    if estimator == "symmetric":
        return ep_step(model, x, y, T=T, K=K, beta=beta, symmetric=True)
    if estimator == "symmetric_kpvf":
        if not model.vector_field:
            raise ValueError("symmetric_kpvf needs a network built with vector_field=True (separate feedback weights)")
        return ep_step(model, x, y, T=T, K=K, beta=beta, symmetric=True, kolen_pollack=True)
    raise ValueError(f"estimator {estimator!r} is unknown; choose one of {', '.join(ESTIMATORS)}")
