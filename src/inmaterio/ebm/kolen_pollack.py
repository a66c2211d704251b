r"""Kolen-Pollack alignment of the feedback weights of a vector-field network, and how far it has got.

In a vector-field network (``vector_field=True``) connection :math:`i \ge 1` has forward weights :math:`W_i` and
separate feedback weights :math:`B_i` (the top-down path). Kolen-Pollack gives both the same update plus the
same leak :math:`\lambda`:

.. math::

    W_i \leftarrow W_i - \eta\,(\hat g_i + \lambda W_i), \qquad B_i \leftarrow B_i - \eta\,(\hat g_i + \lambda B_i),

so :math:`W_i - B_i \leftarrow (1 - \eta\lambda)(W_i - B_i)` decays geometrically whatever :math:`\hat g_i` is
(with momentum :math:`\mu` the difference obeys the same linear recursion as a heavy ball on
:math:`\tfrac{\lambda}{2}\lVert W_i - B_i\rVert^2`). :func:`~inmaterio.ebm.estimators.assign_gradients` copies
:math:`\hat g_i` to :math:`B_i`; the leak is the optimiser's weight decay on both
(:func:`~inmaterio.ebm.training.layerwise_sgd`). :func:`weight_angles_deg` measures the alignment.
"""

from __future__ import annotations

import math

import torch

from inmaterio.ebm.network import EnergyNetwork

__all__ = ["weight_angle_deg", "weight_angles_deg"]


def weight_angle_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    """The angle between two tensors seen as vectors, degrees in [0, 180] (90 for a zero tensor)."""
    a, b = a.detach().flatten().double(), b.detach().flatten().double()
    norm = float(a.norm() * b.norm())
    if norm == 0.0:
        return 90.0
    return math.degrees(math.acos(max(-1.0, min(1.0, float(a @ b) / norm))))


def weight_angles_deg(model: EnergyNetwork) -> list[float]:
    """Angle between forward and feedback weights of every connection ``i >= 1``, degrees ([] without feedback weights)."""
    if not model.vector_field:
        return []
    return [weight_angle_deg(model.weights[i], model.feedback[i - 1]) for i in range(1, model.n_connections)]
