r"""Plain pulsed SGD and Stochastic Hamiltonian Descent (SHD) on arrays of pulsed devices.

Reference: M. Onen, T. Gokmen, T. K. Todorov, T. Nowicki, J. A. del Alamo, J. Rozen, W. Haensch and
S. Kim, "Neural network training with asymmetric crosspoint elements", Frontiers in Artificial
Intelligence 5:891624 (2022), arXiv:2201.13377.

Every device change below is a signed pulse count handed to :func:`~inmaterio.crossbars.pulsed.pulse`:
a desired change :math:`x` (weight units) becomes :math:`n = Q(x / \delta w)` pulses, with
:math:`\delta w` the config's nominal ``dw_min`` (what the controller knows, not the device's drawn
step) and ``Q`` either stochastic rounding (:math:`\lfloor u\rfloor + \mathrm{Bernoulli}(u - \lfloor u\rfloor)`,
so :math:`E[n] = x/\delta w`) or rounding to nearest (ties to even), clipped to ``max_pulses``.

Plain pulsed SGD (:func:`sgd_step`), on one array ``W`` read as :math:`\bar W = W - r_W`
(:func:`~inmaterio.crossbars.pulsed.read_weights`):

.. math::

    W \leftarrow W \oplus \big(-\eta\, \partial E/\partial \bar W\big)

where :math:`\oplus x` means "apply the pulses of the desired change x". For a soft-bounds device
whose symmetry point is :math:`w^*` (symmetric steps, :math:`\Delta^\pm(w) = \delta w (1 \mp (w - w^*)/\tau)`),
the mean actual change of a desired change :math:`x` is :math:`x - |x|\,(w - w^*)/\tau`: every update,
whatever its sign, also pulls the state towards :math:`w^*`. With noisy gradients
(:math:`E|x| > 0` where :math:`E[x] = 0`) SGD therefore settles where the gradient's mean balances that
pull, between the optimum and the symmetry point (the bias grows with their distance and does not
shrink with :math:`\eta`).

SHD (:func:`shd_step`), after Onen et al. (the equations below are ours, derived from the paper's description
of minimising a Hamiltonian that includes the device asymmetry; its algorithm box was not available to us, so
the update order and the scale factors may differ from the paper's): two arrays, ``A`` and ``C``; the network weight is ``C``
(:math:`\bar C = C - r_C`) and ``A`` is read relative to its own symmetry point (``reference:
zero_shift``, the "zero-shifted" reference array of the paper's three-array version,
:math:`\bar A = A - A^*`). With :math:`\eta_A, \eta_C` > 0 one iteration is

.. math::

    A \leftarrow A \oplus \big(-\eta_A\, \partial E/\partial \bar C\big),\qquad
    C \leftarrow C \oplus \big(\eta_C\, \bar A\big)

(the gradient taken at the old :math:`\bar C`, the ``C`` update using the new :math:`\bar A`: a
symplectic-Euler step). With ideal (symmetric, linear) devices this integrates Hamilton's equations
:math:`\dot{\bar A} = -\partial H/\partial \bar C`, :math:`\dot{\bar C} = \partial H/\partial \bar A`
(per step, up to the factors :math:`\eta`) of

.. math::

    H(\bar A, \bar C) = E(\bar C) + \frac{\eta_C}{2\eta_A}\,\bar A^2 ,

which is conserved: for :math:`E = (\bar C - C_0)^2` the trajectories in the :math:`(\bar A, \bar C)`
plane are closed ellipses around :math:`(0, C_0)` with angular frequency
:math:`\sqrt{2\eta_A\eta_C}` per step, and SHD does not converge. With asymmetric devices, each
update of ``A`` also pulls :math:`\bar A` towards 0 by :math:`|x_A|\,\bar A/\tau_A`, a friction term
that makes :math:`dH \le 0` on the ``A`` side, and the ``C`` side's pull towards its own symmetry
point is odd in :math:`\bar A` over an oscillation; the trajectories become decaying spirals into
:math:`(\bar A, \bar C) = (0, C_0)`, where every desired change vanishes. The asymmetry that biases
SGD is what makes SHD converge. :func:`kinetic_energy` gives the second term of ``H``.

Everything is elementwise: any state shape, every device at once (the pulse loop of
:func:`~inmaterio.crossbars.pulsed.pulse` runs over the pulse index only).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from inmaterio.config import StrictModel
from inmaterio.crossbars.pulsed import PulsedArray, pulse, read_weights
from inmaterio.crossbars.updates import quantized_counts

__all__ = ["Rounding", "PulsedSGDConfig", "SHDConfig", "sgd_step", "shd_step", "kinetic_energy"]

Rounding = Literal["stochastic", "nearest"]
"""How a desired change in units of ``dw_min`` becomes a pulse count."""


class PulsedSGDConfig(StrictModel):
    """Plain pulsed SGD.

    lr : learning rate eta (> 0): desired change = -lr * gradient (weight units per unit of gradient).
    rounding : ``stochastic`` (unbiased) or ``nearest`` (ties to even) rounding of change / dw_min.
    max_pulses : the most pulses one device gets in one step (counts are clipped to +-max_pulses).
    """

    lr: float = Field(gt=0, le=1e6)
    rounding: Rounding = "stochastic"
    max_pulses: int = Field(1000, ge=1, le=1_000_000)


class SHDConfig(StrictModel):
    """Stochastic Hamiltonian Descent (Onen et al. 2022).

    lr_a : eta_A (> 0): desired change of A = -lr_a * gradient.
    lr_c : eta_C (> 0): desired change of C = lr_c * (A read relative to its reference).
    rounding : ``stochastic`` or ``nearest`` rounding of change / dw_min (both arrays).
    max_pulses : the most pulses one device gets in one step (counts are clipped to +-max_pulses).
    """

    lr_a: float = Field(gt=0, le=1e6)
    lr_c: float = Field(gt=0, le=1e6)
    rounding: Rounding = "stochastic"
    max_pulses: int = Field(1000, ge=1, le=1_000_000)


def sgd_step(
    array: PulsedArray, w: torch.Tensor, grad: torch.Tensor, config: PulsedSGDConfig, generator: torch.Generator
) -> torch.Tensor:
    """One pulsed SGD step: the new states ``(*shape)`` of ``array`` after the desired change -lr * grad.

    ``w`` ``(*shape)`` states; ``grad`` ``(*shape)`` dE/dW at the read weights ``read_weights(array, w)``.
    ``generator`` draws the rounding, then the pulses' cycle-to-cycle noise.
    """
    _check_same_shape(w, grad=grad)
    n = quantized_counts(-config.lr * grad, array.config.dw_min, config.rounding, generator, config.max_pulses)
    return pulse(array, w, n, generator)


def shd_step(
    a_array: PulsedArray,
    a: torch.Tensor,
    c_array: PulsedArray,
    c: torch.Tensor,
    grad: torch.Tensor,
    config: SHDConfig,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One SHD iteration (module docstring): the new states (A, C), each ``(*shape)``.

    Parameters
    ----------
    a_array, c_array : the devices of the two arrays, of the same shape (A should have
        ``reference: zero_shift``: it is read relative to its reference, which should be its symmetry point).
    a, c : ``(*shape)`` their states (weight units).
    grad : ``(*shape)`` dE/dW at the weights W = read_weights(c_array, c).
    config : the learning rates and the rounding.
    generator : draws, in order, A's rounding, A's pulse noise, C's rounding, C's pulse noise.
    """
    _check_same_shape(a, c=c, grad=grad)
    n_a = quantized_counts(-config.lr_a * grad, a_array.config.dw_min, config.rounding, generator, config.max_pulses)
    a = pulse(a_array, a, n_a, generator)
    n_c = quantized_counts(
        config.lr_c * read_weights(a_array, a), c_array.config.dw_min, config.rounding, generator, config.max_pulses
    )
    c = pulse(c_array, c, n_c, generator)
    return a, c


def kinetic_energy(a_read: torch.Tensor, config: SHDConfig) -> torch.Tensor:
    """Elementwise kinetic term eta_C / (2 eta_A) * A_read^2 of SHD's Hamiltonian (weight units squared).

    ``H = E(C_read) + kinetic_energy(A_read).sum()`` over the weights of one problem.
    """
    return (config.lr_c / (2.0 * config.lr_a)) * a_read.square()


def _check_same_shape(first: torch.Tensor, **others: torch.Tensor) -> None:
    for name, t in others.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a tensor, got {type(t).__name__}")
        if t.shape != first.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)}, the states have shape {tuple(first.shape)}")
