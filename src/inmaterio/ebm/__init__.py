r"""Discrete-time energy-based networks trained with Equilibrium Propagation beyond circuits.

Laborieux et al., *Scaling Equilibrium Propagation to Deep ConvNets by Drastically Reducing its Gradient
Estimator Bias*, Front. Neurosci. 15, 633674 (2021), written from the maths:

- :mod:`~inmaterio.ebm.network`: states, readout (softmax outside the dynamics, or squared error inside), nudging,
  one step :math:`s_{t+1} = \sigma(\partial\Phi/\partial s - \beta\,\partial\ell/\partial s)`;
- :mod:`~inmaterio.ebm.mlp`, :mod:`~inmaterio.ebm.convnet`: the primitive functions :math:`\Phi` of a layered
  MLP and of a ConvNet with max-pooling;
- :mod:`~inmaterio.ebm.activations`: hard sigmoid, smooth sigmoid, tanh;
- :mod:`~inmaterio.ebm.dynamics`: free and nudged phases;
- :mod:`~inmaterio.ebm.estimators`: one-sided, random-sign and symmetric EP, Kolen-Pollack vector field, BPTT,
  each filling ``.grad`` with an estimate of :math:`\partial\mathcal{L}/\partial\theta`;
- :mod:`~inmaterio.ebm.kolen_pollack`: the angle between forward and feedback weights;
- :mod:`~inmaterio.ebm.gdu`: per-step EP estimates against truncated BPTT (the GDU property);
- :mod:`~inmaterio.ebm.training`: layer-wise SGD, one epoch, the error rate.

The study that trains them on MNIST is :mod:`inmaterio.studies.ep_ebm` (``inmaterio run examples/ep_ebm/...``).
"""

from inmaterio.ebm.activations import ACTIVATIONS, Activation, activation
from inmaterio.ebm.convnet import EnergyConvNet, conv_state_shapes
from inmaterio.ebm.dynamics import fixed_point_residual, free_phase, nudged_phase, relax, step_residuals
from inmaterio.ebm.estimators import (
    ESTIMATORS,
    BatchResult,
    Estimator,
    assign_gradients,
    bptt_step,
    draw_sign,
    ep_gradient,
    ep_step,
    gradient_step,
)
from inmaterio.ebm.gdu import GDUCurves, ep_per_step, gdu_curves, truncated_bptt
from inmaterio.ebm.kolen_pollack import weight_angle_deg, weight_angles_deg
from inmaterio.ebm.mlp import EnergyMLP
from inmaterio.ebm.network import EnergyNetwork, Loss
from inmaterio.ebm.training import EpochResult, evaluate, layerwise_sgd, train_epoch

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "activation",
    "EnergyNetwork",
    "Loss",
    "EnergyMLP",
    "EnergyConvNet",
    "conv_state_shapes",
    "relax",
    "free_phase",
    "nudged_phase",
    "fixed_point_residual",
    "step_residuals",
    "ESTIMATORS",
    "Estimator",
    "BatchResult",
    "ep_gradient",
    "assign_gradients",
    "ep_step",
    "bptt_step",
    "gradient_step",
    "draw_sign",
    "GDUCurves",
    "gdu_curves",
    "ep_per_step",
    "truncated_bptt",
    "weight_angle_deg",
    "weight_angles_deg",
    "EpochResult",
    "layerwise_sgd",
    "train_epoch",
    "evaluate",
]
