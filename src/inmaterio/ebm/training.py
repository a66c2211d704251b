r"""Training and testing an energy-based network: the layer-wise SGD optimiser, one epoch, the error rate.

:func:`layerwise_sgd` makes one :class:`torch.optim.SGD` group per connection (its forward and feedback weights)
and one for its bias, each with its own learning rate (the article's per-layer rates); the weight decay of the
weight groups adds the Kolen-Pollack leak. :func:`train_epoch` runs one pass over shuffled batches with any
estimator of :mod:`~inmaterio.ebm.estimators`; the shuffle and the random signs come from explicit generators, so
an epoch is a pure function of the weights, the optimiser state and the generators' seeds. :func:`evaluate`
gives, at the end of the free phase, the error rate, the mean cost and the fraction of samples not yet settled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from inmaterio.ebm.dynamics import free_phase, step_residuals
from inmaterio.ebm.estimators import draw_sign, gradient_step
from inmaterio.ebm.network import EnergyNetwork

__all__ = ["EpochResult", "layerwise_sgd", "train_epoch", "evaluate"]


def layerwise_sgd(
    model: EnergyNetwork,
    learning_rates: Sequence[float],
    *,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    kp_decay: float = 0.0,
) -> torch.optim.SGD:
    """SGD with one learning rate per connection (``learning_rates[i]`` for ``weights[i]``, its feedback
    weights and ``biases[i]``); ``weight_decay`` on every parameter, ``kp_decay`` added on the weights.

    Raises
    ------
    ValueError
        ``learning_rates`` without one entry per connection.
    """
    groups = model.layer_groups()
    if len(learning_rates) != len(groups):
        raise ValueError(f"learning_rates has {len(learning_rates)} entries; the network has {len(groups)} weight layers")
    param_groups = []
    for lr, group in zip(learning_rates, groups):
        param_groups.append({"params": group["weights"], "lr": float(lr), "weight_decay": weight_decay + kp_decay})
        param_groups.append({"params": group["biases"], "lr": float(lr), "weight_decay": weight_decay})
    return torch.optim.SGD(param_groups, lr=float(learning_rates[0]), momentum=momentum)


@dataclass(frozen=True)
class EpochResult:
    """One epoch: mean cost and error rate at the free states of the training batches (running, before each
    update), and the fraction of batches nudged with a positive beta."""

    loss: float
    error: float
    positive_beta_fraction: float


def train_epoch(
    model: EnergyNetwork,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    estimator: str,
    *,
    T: int,
    K: int,
    beta: float,
    batch_size: int,
    shuffle: torch.Generator,
    signs: torch.Generator,
    on_batch=None,
) -> EpochResult:
    """One pass over ``x`` ``(n, *input_shape)``, ``y`` ``(n,)`` in batches of ``batch_size`` (the last one smaller),
    order drawn from ``shuffle``, random signs from ``signs``; ``on_batch(n_done)`` after each update."""
    order = torch.randperm(len(x), generator=shuffle)
    total_loss, total_wrong, positive, batches = 0.0, 0, 0, 0
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        sign = draw_sign(signs) if estimator == "random_sign" else 1.0
        optimizer.zero_grad(set_to_none=True)
        result = gradient_step(model, x[idx], y[idx], estimator, T=T, K=K, beta=beta, sign=sign)
        optimizer.step()
        total_loss += result.loss * len(idx)
        total_wrong += len(idx) - result.correct
        positive += result.beta > 0
        batches += 1
        if on_batch is not None:
            on_batch(len(idx))
    return EpochResult(total_loss / len(x), total_wrong / len(x), positive / batches)


@torch.no_grad()
def evaluate(
    model: EnergyNetwork, x: torch.Tensor, y: torch.Tensor, *, T: int, batch_size: int = 1000, settle_tol: float = 1e-3
) -> dict[str, float]:
    """At the end of a ``T``-step free phase: ``{"error": fraction misclassified, "loss": mean cost, "unsettled":
    fraction of samples whose state one more free step would still move by more than ``settle_tol`` in some unit}``
    (:func:`~inmaterio.ebm.dynamics.step_residuals`; units of the state, whose activations lie in [0, 1]). EP's
    estimate assumes a fixed point; BPTT differentiates the ``T``-step trajectory whether it settled or not.

    Raises
    ------
    ValueError
        ``settle_tol`` negative or not finite.
    """
    if not 0.0 <= settle_tol < float("inf"):
        raise ValueError(f"settle_tol must be a finite step >= 0 (units of the state), got {settle_tol}")
    wrong, loss, unsettled = 0, 0.0, 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size], y[start : start + batch_size]
        drive = model.input_drive(xb)
        states = free_phase(model, xb, T, drive=drive)
        wrong += int((model.predict(states) != yb).sum())
        loss += float(model.cost(states, yb).sum())
        unsettled += int((step_residuals(model, drive, states) > settle_tol).sum())
    return {"error": wrong / len(x), "loss": loss / len(x), "unsettled": unsettled / len(x)}
