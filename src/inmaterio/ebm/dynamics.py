r"""The two phases of EP: relax the states for a number of steps, freely or nudged.

Free phase: :math:`T` steps of :math:`s_{t+1} = \sigma(\partial\Phi/\partial s(x, s_t, \theta))` from zero states.
Nudged phase: :math:`K` steps of :math:`s_{t+1} = \sigma(\partial\Phi/\partial s - \beta\,\partial\ell/\partial s)`
from the free state. Both run without autograd (EP needs no graph); BPTT unrolls the same steps with autograd
(:mod:`~inmaterio.ebm.estimators`).

Shapes: ``x`` ``(batch, *input_shape)``; ``y`` ``(batch,)``; states as :class:`~inmaterio.ebm.network.EnergyNetwork`.
"""

from __future__ import annotations

import torch

from inmaterio.ebm.network import EnergyNetwork, States

__all__ = ["relax", "free_phase", "nudged_phase", "step_residuals", "fixed_point_residual"]


def relax(
    model: EnergyNetwork,
    drive: torch.Tensor,
    states: States,
    steps: int,
    *,
    y: torch.Tensor | None = None,
    beta: float = 0.0,
) -> States:
    """``steps`` steps of the dynamics from ``states`` with the input drive ``drive`` (nudged when ``beta != 0``)."""
    for _ in range(steps):
        states = model.step(drive, states, y, beta)
    return states


@torch.no_grad()
def free_phase(model: EnergyNetwork, x: torch.Tensor, steps: int, *, drive: torch.Tensor | None = None) -> States:
    """The state after ``steps`` free steps from zero states (no autograd graph); ``drive``: the input drive
    if already computed."""
    drive = model.input_drive(x) if drive is None else drive.detach()
    return relax(model, drive, model.initial_states(len(x)), steps)


@torch.no_grad()
def nudged_phase(
    model: EnergyNetwork,
    x: torch.Tensor,
    y: torch.Tensor,
    start: States,
    beta: float,
    steps: int,
    *,
    drive: torch.Tensor | None = None,
) -> States:
    """The state after ``steps`` steps nudged with strength ``beta`` (either sign) from ``start``."""
    drive = model.input_drive(x) if drive is None else drive.detach()
    return relax(model, drive, [s.clone() for s in start], steps, y=y, beta=beta)


@torch.no_grad()
def step_residuals(model: EnergyNetwork, drive: torch.Tensor, states: States) -> torch.Tensor:
    """Per sample ``(batch,)``: ``max |F(s) - s|`` over every unit of every layer, ``F`` one free step with the input
    drive ``drive``. 0 at a fixed point; a state caught in a cycle of the synchronous dynamics (units flipping
    between 0 and 1 every step) gives up to the activation's range."""
    after = model.step(drive, states)
    return torch.stack([(a - s).abs().flatten(1).amax(1) for a, s in zip(after, states)]).amax(0)


@torch.no_grad()
def fixed_point_residual(model: EnergyNetwork, x: torch.Tensor, states: States) -> float:
    """``max |s - F(s)|`` over layers and samples: 0 at a fixed point of the free dynamics."""
    return float(step_residuals(model, model.input_drive(x), states).max())
