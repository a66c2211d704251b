r"""Per-step EP estimates against truncated BPTT gradients: the GDU property (the article's Fig. 2).

After a free phase of :math:`T` steps that has reached its fixed point :math:`s^*`, let

- :math:`\hat g^{\mathrm{EP}}(k)` be the EP estimate (:func:`~inmaterio.ebm.estimators.ep_gradient`) after
  :math:`k` nudged steps from :math:`s^*` (one-sided: :math:`s^{\beta}_k` against :math:`s^*`; symmetric:
  :math:`s^{\beta}_k` against :math:`s^{-\beta}_k`);
- :math:`g^{\mathrm{BPTT}}(k)` be the gradient of :math:`\mathcal{L}(s_{K})` (:math:`K` free steps from
  :math:`s^*`, batch mean) through the *last* :math:`k` steps only, plus its direct dependence on the readout
  weights: :math:`g^{\mathrm{BPTT}}(k) = \partial_\theta \mathcal{L}|_{\mathrm{direct}} + \sum_{j=K-k}^{K-1}
  \partial\mathcal{L}/\partial\theta_j`, :math:`\theta_j` the copy of the parameters used by step :math:`j`.

Then :math:`\hat g^{\mathrm{EP}}(k) = g^{\mathrm{BPTT}}(k) + O(\beta)` (one-sided) or :math:`+ O(\beta^2)`
(symmetric) for every :math:`k` (Ernoult et al. 2019; Laborieux et al. 2021): with nudging inside
:math:`\sigma`, both equal :math:`\sum_{j<k} \partial_\theta\partial_s\Phi\,(D H)^j D\,\partial_s\ell`
(:math:`D = \mathrm{diag}\,\sigma'`, :math:`H = \partial^2_s\Phi`) to first order. The per-step copies
:math:`\theta_j` are passed with :func:`torch.func.functional_call`, so one backward pass gives every
:math:`\partial\mathcal{L}/\partial\theta_j`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import functional_call

from inmaterio.ebm.dynamics import free_phase, nudged_phase
from inmaterio.ebm.estimators import ep_gradient
from inmaterio.ebm.network import EnergyNetwork

__all__ = ["GDUCurves", "truncated_bptt", "ep_per_step", "gdu_curves"]


@dataclass(frozen=True)
class GDUCurves:
    """Per-step gradients, by parameter name: ``ep[name]`` and ``bptt[name]`` ``(K, *param.shape)``, row ``k-1``
    the estimate after ``k`` steps."""

    ep: dict[str, torch.Tensor]
    bptt: dict[str, torch.Tensor]

    def relative_error(self) -> dict[str, list[float]]:
        """Per parameter, per step: ``|ep(k) - bptt(k)| / |bptt(K)|`` (Euclidean norms)."""
        out = {}
        for name, bptt in self.bptt.items():
            scale = float(bptt[-1].norm()) or 1.0
            out[name] = [float((e - b).norm()) / scale for e, b in zip(self.ep[name], bptt)]
        return out


def truncated_bptt(model: EnergyNetwork, x: torch.Tensor, y: torch.Tensor, start, K: int) -> dict[str, torch.Tensor]:
    """:math:`g^{\\mathrm{BPTT}}(k)` for ``k = 1..K`` from the state ``start``, by name, ``(K, *shape)``."""
    names = [n for n, _ in model.named_parameters()]
    copies = [{n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()} for _ in range(K)]
    with torch.enable_grad():
        states = [s.detach() for s in start]
        for params in copies:
            states = functional_call(model, params, (x, states))
        loss = model.cost(states, y).mean()
        flat = [p for params in copies for p in params.values()] + list(model.parameters())
        grads = torch.autograd.grad(loss, flat, allow_unused=True)
    zero = lambda i: torch.zeros_like(flat[i])  # noqa: E731
    grads = [zero(i) if g is None else g.detach() for i, g in enumerate(grads)]
    n = len(names)
    per_step = [grads[j * n : (j + 1) * n] for j in range(K)]  # step j = 0 .. K-1
    direct = grads[K * n :]
    out = {}
    for i, name in enumerate(names):
        total, rows = direct[i].clone(), []
        for k in range(1, K + 1):
            total = total + per_step[K - k][i]
            rows.append(total.clone())
        out[name] = torch.stack(rows)
    return out


def ep_per_step(
    model: EnergyNetwork, x: torch.Tensor, y: torch.Tensor, start, K: int, beta: float, *, symmetric: bool
) -> dict[str, torch.Tensor]:
    """:math:`\\hat g^{\\mathrm{EP}}(k)` for ``k = 1..K`` from the free state ``start``, by name, ``(K, *shape)``."""
    names = [n for n, _ in model.named_parameters()]
    plus, minus = [s.clone() for s in start], [s.clone() for s in start]
    rows: list[list[torch.Tensor]] = []
    for _ in range(K):
        plus = nudged_phase(model, x, y, plus, beta, 1)
        if symmetric:
            minus = nudged_phase(model, x, y, minus, -beta, 1)
            rows.append(ep_gradient(model, x, y, plus, beta, minus, -beta))
        else:
            rows.append(ep_gradient(model, x, y, plus, beta, start, 0.0))
    return {name: torch.stack([r[i] for r in rows]) for i, name in enumerate(names)}


def gdu_curves(
    model: EnergyNetwork, x: torch.Tensor, y: torch.Tensor, *, T: int, K: int, beta: float, symmetric: bool
) -> GDUCurves:
    """Free phase of ``T`` steps, then the per-step EP estimates and truncated BPTT gradients over ``K`` steps."""
    start = free_phase(model, x, T)
    return GDUCurves(ep_per_step(model, x, y, start, K, beta, symmetric=symmetric), truncated_bptt(model, x, y, start, K))
