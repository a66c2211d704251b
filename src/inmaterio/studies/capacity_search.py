"""Max-margin search of DNPU control voltages for the capacity study: screen, refine, threshold.

The capacity question for one DNPU is geometric: a labelling ``t (N,)`` of
the points ``x (N, 2)`` is realisable when some control voltages ``c`` make
the readout currents ``y_i(c)`` of one class all lie above those of the
other. Its *margin* (:func:`~inmaterio.training.metrics.oriented_separation_na`)

.. math::

    m(c) = \\max\\left(\\min_{t_i=1} y_i - \\max_{t_i=0} y_i,\\;
                      \\min_{t_i=0} y_i - \\max_{t_i=1} y_i\\right)\\ \\text{nA}

is positive exactly when a threshold in the middle of the gap classifies
every point, and it says how much noise (device noise, surrogate error) the
classifier tolerates: ``m / 2`` nA on each side. Gradient descent on the
cross-entropy from a uniform start (the paper's recipe) misses many
realisable labellings: their regions of control space are small. This module
finds them in three steps, all vectorised over labellings:

1. :func:`screen_controls`: evaluate ``n_samples`` control vectors drawn
   uniformly in range on the surrogate (without noise) at the N points once,
   and keep, per labelling, the ``keep`` with the largest margin.
2. :func:`refine_margin`: from one of them per labelling, Adam on a smooth
   margin (soft minimum of the high class minus soft maximum of the low
   class, temperature ``temperature_na``), controls clamped to their ranges;
   the best hard margin seen is kept.
3. :func:`gap_threshold`: the threshold in the middle of the gap, from
   which the decision node (batch norm + logistic of
   :mod:`~inmaterio.studies.capacity_trial`) is set in closed form, so it
   applies unchanged on a device.

Constant labellings (all points in one class) have no gap; they are
separated by any control voltages with the threshold below (all ones) or
above (all zeros) every output, and their margin is reported as ``inf``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from inmaterio.denormals import flushed_denormals
from inmaterio.errors import ConfigError
from inmaterio.nn import DNPU
from inmaterio.training.metrics import oriented_separation_na

__all__ = ["ScreenResult", "constant_mask", "gap_threshold", "refine_margin", "screen_controls"]

#: Elements of the (labellings, samples, points) margin tensor evaluated at once while screening.
_SCREEN_ELEMENTS = 2**24


@dataclass(frozen=True)
class ScreenResult:
    """The best screened control vectors per labelling, best first.

    Attributes:
        margin_na: ``(L, keep)`` margins (nA, ``inf`` for constant labellings).
        high_class: ``(L, keep)`` int64, the class above the threshold (1 or 0).
        controls: ``(L, keep, n_controls)`` control voltages (V).
    """

    margin_na: torch.Tensor
    high_class: torch.Tensor
    controls: torch.Tensor


def constant_mask(labels: torch.Tensor) -> torch.Tensor:
    """``(L,)`` bool: the labellings ``(L, N)`` whose points are all in one class."""
    return (labels == labels[:, :1]).all(dim=1)


@torch.no_grad()
def screen_controls(
    probe: DNPU, x: torch.Tensor, labels: torch.Tensor, n_samples: int, keep: int, generator: torch.Generator
) -> ScreenResult:
    """Uniformly random control vectors of ``probe`` (a one-node DNPU), the ``keep`` best per labelling.

    Args:
        probe: one-node DNPU on a surrogate processor; evaluated without output noise.
        x: ``(N, n_inputs)`` data points.
        labels: ``(L, N)`` 0/1 labellings.
        n_samples: control vectors to draw (>= ``keep``).
        keep: best vectors kept per labelling.
        generator: the source of the uniform draws.

    Returns:
        :class:`ScreenResult`; for a constant labelling the first ``keep`` draws, margin ``inf``.
    """
    if probe.n_nodes != 1:
        raise ConfigError(f"screen_controls needs a one-node DNPU probe; got {probe.n_nodes} nodes")
    if not 1 <= keep <= n_samples:
        raise ConfigError(f"keep must be in [1, n_samples = {n_samples}]; got {keep}")
    low, high = probe.control_low[0], probe.control_high[0]
    n_labels, n_points = labels.shape
    varying = ~constant_mask(labels)
    targets = labels[varying].unsqueeze(1)  # (V, 1, N)
    best_margin = torch.full((n_labels, keep), -torch.inf)
    best_high = torch.ones((n_labels, keep), dtype=torch.long)
    best_controls = torch.empty((n_labels, keep, probe.n_controls))
    chunk = max(keep, _SCREEN_ELEMENTS // max(1, int(varying.sum()) * n_points))
    drawn = 0
    processor = probe.processor
    with processor.noise_off():
        while drawn < n_samples:
            count = min(chunk, n_samples - drawn)
            controls = low + torch.rand(count, probe.n_controls, generator=generator) * (high - low)
            if drawn == 0:  # constant labellings: any control vectors do; keep the first ones
                best_controls[~varying] = controls[:keep]
                best_margin[~varying] = torch.inf
            out = probe(x, controls.unsqueeze(1))[..., 0]  # (count, N) nA
            if varying.any():
                margin, high_class = oriented_separation_na(out.unsqueeze(0).expand(len(targets), -1, -1), targets)
                both_margin = torch.cat([best_margin[varying], margin], dim=1)
                top, index = both_margin.topk(keep, dim=1)  # (V, keep), into [kept, new]
                both_high = torch.cat([best_high[varying], high_class], dim=1)
                both_controls = torch.cat([best_controls[varying], controls.expand(len(targets), -1, -1)], dim=1)
                best_margin[varying] = top
                best_high[varying] = both_high.gather(1, index)
                best_controls[varying] = both_controls.gather(1, index.unsqueeze(-1).expand(-1, -1, probe.n_controls))
            drawn += count
    return ScreenResult(best_margin, best_high, best_controls)


def refine_margin(
    layer: DNPU,
    x: torch.Tensor,
    labels: torch.Tensor,
    high_class: torch.Tensor,
    *,
    steps: int = 500,
    lr: float = 0.01,
    temperature_na: float = 0.5,
) -> torch.Tensor:
    """Raise each node's margin by gradient ascent; leave ``layer.controls`` at the best seen; return it.

    Node ``l`` of ``layer`` (its controls are the starting point) classifies
    labelling ``labels[l]`` with class ``high_class[l]`` above the threshold.
    The ascent maximises the smooth margin

    .. math::

        \\tilde m = -\\tau \\log\\sum_{\\text{high}} e^{-y_i/\\tau} - \\tau \\log\\sum_{\\text{low}} e^{y_i/\\tau}

    (soft minimum of the high class minus soft maximum of the low class; it
    tends to the hard margin as ``tau`` -> 0) with Adam (``lr`` V), the
    controls clamped into their ranges after each step, on the surrogate
    without output noise.

    Args:
        layer: DNPU of ``L`` nodes on a surrogate processor (modified in place).
        x: ``(N, n_inputs)`` data points.
        labels: ``(L, N)`` 0/1 labellings; constant ones keep their controls
            and get margin ``inf``.
        high_class: ``(L,)`` int64 orientation per labelling.
        steps: Adam steps (>= 0; 0 only evaluates).
        lr: learning rate (V).
        temperature_na: ``tau`` (nA, > 0).

    Returns:
        ``(L,)`` hard margin (nA) of the controls left in ``layer``, in the given orientation.
    """
    if temperature_na <= 0:
        raise ConfigError(f"temperature_na must be > 0 nA; got {temperature_na}")
    high = labels == high_class.unsqueeze(1).to(labels.dtype)  # (L, N): points that must lie above
    varying = ~constant_mask(labels)
    inf = torch.tensor(torch.inf)

    def hard(out: torch.Tensor) -> torch.Tensor:
        gap = torch.where(high, out, inf).amin(dim=1) - torch.where(high, -inf, out).amax(dim=1)
        return torch.where(varying, gap, inf)

    optimiser = torch.optim.Adam([layer.controls], lr=lr)
    steps = steps if bool(varying.any()) else 0
    with layer.processor.noise_off(), flushed_denormals():  # the log-sum-exp tails go subnormal
        with torch.no_grad():
            best_margin = hard(layer(x).T)
        best_controls = layer.controls.detach().clone()
        for _ in range(steps):
            out = layer(x).T  # (L, N) nA
            soft_min_high = -temperature_na * torch.logsumexp(torch.where(high, -out, -inf) / temperature_na, dim=1)
            soft_max_low = temperature_na * torch.logsumexp(torch.where(high, -inf, out) / temperature_na, dim=1)
            optimiser.zero_grad(set_to_none=True)
            (soft_max_low - soft_min_high)[varying].sum().backward()
            optimiser.step()
            layer.constrain()
            with torch.no_grad():
                margin = hard(layer(x).T)
                better = margin > best_margin
                best_margin[better] = margin[better]
                best_controls[better] = layer.controls[better]
    with torch.no_grad():
        layer.controls.copy_(best_controls)
    return best_margin


@torch.no_grad()
def gap_threshold(outputs: torch.Tensor, labels: torch.Tensor, high_class: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The threshold in the middle of each labelling's gap and the sign that makes class 1 positive.

    Args:
        outputs: ``(N, L)`` features (nA) of the N points, one column per labelling.
        labels: ``(L, N)`` 0/1 labellings.
        high_class: ``(L,)`` int64, the class that lies above the threshold.

    Returns:
        ``threshold (L,)`` nA and ``sign (L,)`` (+1 where class 1 is high, -1
        where class 0 is), so that ``sign * (f - threshold) > 0`` predicts
        class 1. Constant labellings get a threshold one output span (plus
        1 nA) below their outputs (all ones) or above them (all zeros), sign +1.
    """
    out = outputs.T  # (L, N)
    high = labels == high_class.unsqueeze(1).to(labels.dtype)
    inf = torch.tensor(torch.inf, dtype=out.dtype)
    constant = constant_mask(labels)
    threshold = (torch.where(high, -inf, out).amax(dim=1) + torch.where(high, out, inf).amin(dim=1)) / 2
    span = out.amax(dim=1) - out.amin(dim=1) + 1.0
    ones = constant & (labels[:, 0] == 1)
    zeros = constant & (labels[:, 0] == 0)
    threshold[ones] = out[ones].amin(dim=1) - span[ones]
    threshold[zeros] = out[zeros].amax(dim=1) + span[zeros]
    sign = torch.where(constant | (high_class == 1), 1.0, -1.0).to(out.dtype)
    return threshold, sign
