"""Metrics of DNPU classifiers: a logistic threshold on the output current, accuracies, confusion matrices.

A DNPU trained on a binary task outputs a current, not a class. As in DNPU
research, the current is turned into a class by a trained one-input
perceptron: :func:`fit_logistic_threshold` fits a 1-D logistic regression to
the (standardised) current, and :func:`threshold_accuracy` reports its
accuracy. :func:`best_threshold_accuracy` is the exact best accuracy that any
single threshold can reach, an upper bound of the former.

Binary metrics are vectorised like the losses: ``output`` has shape
``(..., batch)`` (nA), ``target`` ``(batch,)`` 0/1 or broadcasting to
``output``, and results have shape ``(...)``. None of these functions is
differentiable (they run under :func:`torch.no_grad`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from inmaterio.errors import ConfigError
from inmaterio.training.losses import validate_target

__all__ = [
    "AccuracyDifference",
    "LogisticThreshold",
    "accuracy",
    "best_threshold_accuracy",
    "confusion_matrix",
    "fit_logistic_threshold",
    "oriented_separation_na",
    "paired_accuracy_difference",
    "repeat_mean_separation_na",
    "separation_na",
    "separation_with_stderr_na",
    "threshold_accuracy",
]

_MAX_NEWTON_STEP = 4.0
"""Largest change of ``w`` or ``b`` in one Newton step (a trust region in standardised units)."""


@dataclass(frozen=True)
class LogisticThreshold:
    r"""A fitted logistic threshold on the output current, one per leading index.

    .. math::

        p(y) = \sigma(w z + b), \qquad z = \frac{y - \mu}{s}

    Attributes:
        mean: ``(...)`` :math:`\mu`, mean output over the batch (nA).
        std: ``(...)`` :math:`s`, population standard deviation of the
            output over the batch (nA); 1 nA where the output is constant.
        w: ``(...)`` weight (dimensionless, on the standardised current).
            Positive when class 1 has the higher current.
        b: ``(...)`` bias (dimensionless).
    """

    mean: torch.Tensor
    std: torch.Tensor
    w: torch.Tensor
    b: torch.Tensor

    def logit(self, output: torch.Tensor) -> torch.Tensor:
        """``(..., batch)`` logits :math:`w z + b` of ``(..., batch)`` currents (nA)."""
        z = (output - self.mean.unsqueeze(-1)) / self.std.unsqueeze(-1)
        return self.w.unsqueeze(-1) * z + self.b.unsqueeze(-1)

    def predict_proba(self, output: torch.Tensor) -> torch.Tensor:
        """``(..., batch)`` probabilities of class 1 for ``(..., batch)`` currents (nA)."""
        return torch.sigmoid(self.logit(output))

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        """``(..., batch)`` int64 classes (1 where :math:`p > 0.5`) for ``(..., batch)`` currents (nA)."""
        return (self.logit(output) > 0).to(torch.int64)

    @property
    def threshold_na(self) -> torch.Tensor:
        r"""``(...)`` current where :math:`p = 0.5`: :math:`\mu - b s / w` (nA); not finite where :math:`w = 0` (a constant output)."""
        return self.mean - self.b * self.std / self.w


def fit_logistic_threshold(
    output: torch.Tensor, target: torch.Tensor, l2: float = 1e-3, iterations: int = 50
) -> LogisticThreshold:
    r"""Fit a 1-D logistic regression to the output current of every leading index.

    The current is standardised per leading index, :math:`z_i = (y_i - \mu)/s`
    (mean and population standard deviation over the batch), then
    :math:`w, b` minimise the mean binary cross-entropy with an L2 penalty on
    :math:`w` (so that separable data keep a finite :math:`w`):

    .. math::

        J(w, b) = -\frac{1}{B} \sum_i \left[ t_i \log p_i + (1 - t_i) \log(1 - p_i) \right]
                  + \frac{\lambda}{2} w^2, \qquad p_i = \sigma(w z_i + b).

    :math:`J` is minimised by Newton's method from :math:`w = b = 0`, with
    gradient and Hessian (:math:`r_i = p_i (1 - p_i)`)

    .. math::

        g = \frac{1}{B} \begin{pmatrix} \sum (p_i - t_i) z_i + B \lambda w \\ \sum (p_i - t_i) \end{pmatrix},
        \qquad
        H = \frac{1}{B} \begin{pmatrix} \sum r_i z_i^2 + B \lambda & \sum r_i z_i \\ \sum r_i z_i & \sum r_i \end{pmatrix},

    the 2x2 system :math:`H \Delta = g` being solved in closed form for all
    leading indices at once; each component of the step is clipped to
    :math:`\pm 4` (a trust region that keeps the first steps on separable
    data from overshooting), and :math:`(w, b) \leftarrow (w, b) - \Delta`.

    Args:
        output: ``(..., batch)`` currents (nA).
        target: ``(batch,)`` 0/1 classes, or a 0/1 tensor broadcasting to ``output``.
        l2: :math:`\lambda`, the L2 penalty on :math:`w`.
        iterations: number of Newton steps.

    Returns:
        The fitted :class:`LogisticThreshold`, tensors of shape ``(...)``.
    """
    with torch.no_grad():
        output = output.detach()
        t = validate_target(output, target, "fit_logistic_threshold", binary=True)
        mean = output.mean(dim=-1)
        std = output.std(dim=-1, unbiased=False)
        std = torch.where(std > 0, std, torch.ones_like(std))
        z = (output - mean.unsqueeze(-1)) / std.unsqueeze(-1)
        w = torch.zeros_like(mean)
        b = torch.zeros_like(mean)
        tiny = torch.finfo(output.dtype).tiny
        for _ in range(iterations):
            p = torch.sigmoid(w.unsqueeze(-1) * z + b.unsqueeze(-1))
            r = p * (1 - p)
            residual = p - t
            g_w = (residual * z).mean(dim=-1) + l2 * w
            g_b = residual.mean(dim=-1)
            h_ww = (r * z * z).mean(dim=-1) + l2
            h_wb = (r * z).mean(dim=-1)
            h_bb = r.mean(dim=-1)
            det = (h_ww * h_bb - h_wb * h_wb).clamp_min(tiny)
            step_w = ((h_bb * g_w - h_wb * g_b) / det).clamp(-_MAX_NEWTON_STEP, _MAX_NEWTON_STEP)
            step_b = ((h_ww * g_b - h_wb * g_w) / det).clamp(-_MAX_NEWTON_STEP, _MAX_NEWTON_STEP)
            w = w - step_w
            b = b - step_b
    return LogisticThreshold(mean=mean, std=std, w=w, b=b)


def threshold_accuracy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Accuracy of the logistic threshold fitted to the same data.

    Args:
        output: ``(..., batch)`` currents (nA).
        target: ``(batch,)`` 0/1 classes, or a 0/1 tensor broadcasting to ``output``.

    Returns:
        ``(...)`` fraction of correctly classified points, in [0, 1], in ``output``'s dtype.
    """
    with torch.no_grad():
        t = validate_target(output, target, "threshold_accuracy", binary=True)
        predicted = fit_logistic_threshold(output, t).predict(output.detach())
        return (predicted == t).to(output.dtype).mean(dim=-1)


def best_threshold_accuracy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r"""Exact best accuracy of any single threshold on the current, in either orientation.

    Sort the ``B`` outputs of a row and cut them after the first ``k`` points
    (``k = 0 .. B``, only between two *different* currents, since a threshold
    cannot split equal currents). Calling the points below the cut 0 and the
    rest 1 classifies

    .. math::

        c_k = Z_k + (N_1 - O_k)

    points correctly, with :math:`Z_k, O_k` the numbers of targets 0 and 1
    among the first ``k`` points and :math:`N_1` the number of targets 1; the
    inverted orientation classifies :math:`B - c_k` correctly. The result is
    :math:`\max_k \max(c_k, B - c_k) / B`, an upper bound of
    :func:`threshold_accuracy`.

    Args:
        output: ``(..., batch)`` currents (nA).
        target: ``(batch,)`` 0/1 classes, or a 0/1 tensor broadcasting to ``output``.

    Returns:
        ``(...)`` best accuracy in [0.5, 1], in ``output``'s dtype.
    """
    with torch.no_grad():
        output = output.detach()
        t = validate_target(output, target, "best_threshold_accuracy", binary=True)
        ordered, order = torch.sort(output, dim=-1)
        ones = torch.gather(t, -1, order).to(torch.int64)
        zeros = 1 - ones
        start = torch.zeros(ones.shape[:-1] + (1,), dtype=torch.int64, device=output.device)
        ones_below = torch.cat([start, ones.cumsum(dim=-1)], dim=-1)
        zeros_below = torch.cat([start, zeros.cumsum(dim=-1)], dim=-1)
        n_ones = ones_below[..., -1:]
        correct = zeros_below + (n_ones - ones_below)
        correct = torch.maximum(correct, output.shape[-1] - correct)
        inner_cut_ok = ordered[..., 1:] > ordered[..., :-1]
        true_edge = torch.ones_like(start, dtype=torch.bool)
        cut_ok = torch.cat([true_edge, inner_cut_ok, true_edge], dim=-1)
        best = torch.where(cut_ok, correct, -1).amax(dim=-1)
        return best.to(output.dtype) / output.shape[-1]


def separation_na(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r"""``(...)`` margin between the classes along the output current (nA), either orientation.

    .. math::

        m = \max\left(\min_{t=1} y - \max_{t=0} y,\; \min_{t=0} y - \max_{t=1} y\right)

    Positive: one threshold separates the classes with a gap of ``m`` nA on
    each side of which the nearest points lie (what a noisy device must not
    close); negative: the classes overlap by ``-m`` nA. Both classes must be present.
    """
    return oriented_separation_na(output, target)[0]


@torch.no_grad()
def repeat_mean_separation_na(outputs: torch.Tensor, target: torch.Tensor) -> tuple[float, float | None]:
    """Class gap of the mean over repeated measurements, nA, and its standard error (None for one repeat).

    ``outputs (repeats, batch)`` are repeated measurements of the same points. The
    gap :func:`separation_na` of each repeat is biased low by the noise (the
    nearest points of each class are the extremes of noisy values); the gap of
    the per-point means estimates the device's own class gap with ``repeats``
    times less variance per point. Its standard error is that of
    :func:`separation_with_stderr_na`, with the standard errors of the means
    (spread over repeats, ``ddof = 1``, over ``sqrt(repeats)``).
    """
    if outputs.ndim != 2 or outputs.shape[0] < 1:
        raise ConfigError(f"outputs must have shape (repeats, batch) with repeats >= 1, got {tuple(outputs.shape)}")
    mean = outputs.mean(dim=0)
    if outputs.shape[0] == 1:
        return float(separation_na(mean, target)), None
    return separation_with_stderr_na(mean, outputs.std(dim=0, correction=1) / outputs.shape[0] ** 0.5, target)


@torch.no_grad()
def separation_with_stderr_na(output: torch.Tensor, stderr: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """:func:`separation_na` of ``output (batch,)`` nA and its standard error from the points' ``stderr (batch,)`` nA.

    The gap is set by two points, the nearest of each class; its standard
    error combines theirs in quadrature (independent measurements).
    """
    if output.ndim != 1 or stderr.shape != output.shape:
        raise ConfigError(f"output and stderr must both have shape (batch,), got {tuple(output.shape)} and {tuple(stderr.shape)}")
    gap, high_class = oriented_separation_na(output, target)
    t = validate_target(output, target, "separation_with_stderr_na", binary=True, both_classes=True)
    inf = torch.tensor(float("inf"), dtype=output.dtype, device=output.device)
    upper = t == int(high_class)
    nearest_high = int(torch.argmin(torch.where(upper, output, inf)))  # lowest point of the upper class
    nearest_low = int(torch.argmax(torch.where(~upper, output, -inf)))  # highest point of the lower class
    return float(gap), float(torch.hypot(stderr[nearest_high], stderr[nearest_low]))


def oriented_separation_na(output: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`separation_na` and its orientation: ``(margin (...) nA, high_class (...) int64)``.

    ``high_class`` is 1 where the larger of the two margins puts class 1
    above class 0 (ties count as 1), else 0. The threshold that separates the
    classes with the full margin lies in the middle of the gap.
    """
    t = validate_target(output, target, "separation_na", binary=True, both_classes=True)
    inf = torch.tensor(float("inf"), dtype=output.dtype, device=output.device)
    min1 = torch.where(t == 1, output, inf).amin(dim=-1)
    max1 = torch.where(t == 1, output, -inf).amax(dim=-1)
    min0 = torch.where(t == 0, output, inf).amin(dim=-1)
    max0 = torch.where(t == 0, output, -inf).amax(dim=-1)
    one_high, zero_high = min1 - max0, min0 - max1
    return torch.maximum(one_high, zero_high), (one_high >= zero_high).long()


def accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Multi-class accuracy of logits: the fraction of points whose largest logit is the target class.

    Args:
        logits: ``(..., batch, classes)`` logits.
        target: ``(batch,)`` int64 class indices, or broadcasting to ``logits.shape[:-1]``.

    Returns:
        ``(...)`` accuracy in [0, 1], in ``logits``' dtype.
    """
    if logits.dim() < 2:
        raise ConfigError(f"accuracy needs logits of shape (..., batch, classes); got shape {tuple(logits.shape)}")
    with torch.no_grad():
        return (logits.argmax(dim=-1) == target).to(logits.dtype).mean(dim=-1)


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Counts of (true class, predicted class) pairs.

    Args:
        pred: ``(batch,)`` predicted class indices.
        target: ``(batch,)`` true class indices.
        n_classes: number of classes; every index must lie in ``[0, n_classes)``.

    Returns:
        ``(n_classes, n_classes)`` int64 matrix ``m`` with ``m[i, j]`` the
        number of points of true class ``i`` predicted as class ``j``
        (rows are true classes).
    """
    if pred.shape != target.shape or pred.dim() != 1:
        raise ConfigError(
            f"confusion_matrix needs pred and target of the same shape (batch,); "
            f"got {tuple(pred.shape)} and {tuple(target.shape)}"
        )
    for name, values in (("pred", pred), ("target", target)):
        bad = (values < 0) | (values >= n_classes)
        if bool(bad.any()):
            raise ConfigError(
                f"confusion_matrix: {name} has class indices {values[bad][:3].tolist()} outside [0, {n_classes - 1}]"
            )
    pairs = target.to(torch.int64) * n_classes + pred.to(torch.int64)
    return torch.bincount(pairs, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


@dataclass(frozen=True)
class AccuracyDifference:
    """Difference of two classifiers' accuracies on the same test points, with a confidence interval.

    All three numbers are fractions in [-1, 1]: ``difference`` = accuracy of a
    - accuracy of b; ``low`` and ``high`` bound its ``level`` confidence interval.
    """

    difference: float
    low: float
    high: float
    level: float
    points: int

    def __str__(self) -> str:
        return (
            f"{100 * self.difference:+.2f} points ({100 * self.level:.0f}% CI "
            f"{100 * self.low:+.2f} to {100 * self.high:+.2f}, {self.points} paired points)"
        )


def paired_accuracy_difference(
    correct_a: torch.Tensor, correct_b: torch.Tensor, *, level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> AccuracyDifference:
    r"""Accuracy of a minus accuracy of b on the same points, with a paired bootstrap interval.

    Per point :math:`i`, :math:`d_i = \bar a_i - \bar b_i` with :math:`\bar a_i`
    the fraction of a's repeated measurements that classify point :math:`i`
    correctly. The difference is :math:`\bar d`; its interval is the
    percentile interval of :math:`\bar d` over ``resamples`` resamplings of the
    points with replacement (the points, not the repeats, are the sample, so
    the interval covers the test set's sampling error). Pairing the points
    removes the spread that both classifiers share (points both get right or
    both get wrong), so the interval is narrower than comparing two unpaired
    accuracies.

    Args:
        correct_a, correct_b: ``(points,)`` or ``(repeats, points)`` 0/1 correctness
            (the repeats may differ between a and b; the points must be the same).
        level: confidence level in (0, 1).
        resamples: bootstrap resamplings (>= 100).
        seed: seed of the resampling.
    """
    a, b = (torch.as_tensor(c, dtype=torch.float64) for c in (correct_a, correct_b))
    for name, c in (("correct_a", a), ("correct_b", b)):
        if c.dim() not in (1, 2) or c.shape[-1] == 0:
            raise ConfigError(
                f"paired_accuracy_difference: {name} must have shape (points,) or (repeats, points); got {tuple(c.shape)}"
            )
        if not bool(((c == 0) | (c == 1)).all()):
            raise ConfigError(f"paired_accuracy_difference: {name} must hold only 0 and 1 (correct or not)")
    if a.shape[-1] != b.shape[-1]:
        raise ConfigError(
            f"paired_accuracy_difference: a and b must be measured on the same points; got {a.shape[-1]} and {b.shape[-1]} points"
        )
    if not 0.0 < level < 1.0:
        raise ConfigError(f"paired_accuracy_difference: level must lie in (0, 1); got {level}")
    if resamples < 100:
        raise ConfigError(f"paired_accuracy_difference: resamples must be >= 100; got {resamples}")
    d = a.reshape(-1, a.shape[-1]).mean(dim=0) - b.reshape(-1, b.shape[-1]).mean(dim=0)
    generator = torch.Generator().manual_seed(seed)
    means = torch.empty(resamples, dtype=torch.float64)
    for start in range(0, resamples, 1000):  # chunks bound the memory at 1000 x points
        count = min(1000, resamples - start)
        index = torch.randint(d.numel(), (count, d.numel()), generator=generator)
        means[start : start + count] = d[index].mean(dim=1)
    tail = (1.0 - level) / 2.0
    low, high = torch.quantile(means, torch.tensor([tail, 1.0 - tail], dtype=torch.float64)).tolist()
    return AccuracyDifference(difference=float(d.mean()), low=low, high=high, level=level, points=d.numel())
