"""Losses and fitness functions of dopant-network (DNPU) training.

Every loss is vectorised over leading dimensions: ``output`` has shape
``(..., batch)`` (for instance ``(population, batch)`` for a genetic
algorithm, or ``(nodes, batch)`` for many independent problems trained at
once), ``target`` has shape ``(batch,)`` or any shape that broadcasts to
``output``, and the result has shape ``(...)``: one loss per leading index.
Outputs are currents in nA unless a loss says otherwise.

Lower is better for every loss; a genetic algorithm uses ``fitness = -loss``.
All losses are made of torch operations, so they are differentiable, and they
keep the dtype of ``output`` (float32 or float64).

Losses that need binary targets (:func:`fisher`, :func:`corrsig`, :func:`noise_margin`, :func:`bce`)
check them with :func:`validate_target` and raise
:class:`~inmaterio.errors.ConfigError` naming the problem. The registry
:data:`LOSSES` and :func:`get_loss` are the only place where a loss is looked
up by name (:data:`LossName` is the type of that name in configs).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from inmaterio.errors import ConfigError

__all__ = [
    "LOSSES",
    "LossName",
    "bce",
    "corrsig",
    "cross_entropy",
    "fisher",
    "get_loss",
    "mse",
    "noise_margin",
    "sigmoid_distance",
    "validate_target",
]

LossName = Literal["fisher", "corrsig", "noise_margin", "sigmoid_distance", "bce", "mse", "cross_entropy"]
"""Name of a loss in :data:`LOSSES`, for pydantic configs."""


def _check_broadcast(output_shape: torch.Size, target_shape: torch.Size, loss_name: str, what: str) -> None:
    """Raise :class:`ConfigError` unless ``target_shape`` broadcasts to ``output_shape`` (without growing it)."""
    try:
        shape = torch.broadcast_shapes(output_shape, target_shape)
    except RuntimeError:
        shape = None
    if shape != output_shape:
        raise ConfigError(
            f"{loss_name}: target shape {tuple(target_shape)} does not broadcast to {what} shape {tuple(output_shape)}"
        )


def validate_target(
    output: torch.Tensor,
    target: torch.Tensor,
    loss_name: str,
    *,
    binary: bool = False,
    both_classes: bool = False,
) -> torch.Tensor:
    """Check ``target`` against ``output`` and return it broadcast to ``output``'s shape and dtype.

    Args:
        output: ``(..., batch)`` outputs (nA).
        target: a tensor that broadcasts to ``output.shape``, typically ``(batch,)``.
        loss_name: name used in error messages, e.g. ``"fisher"``.
        binary: require every target to be 0 or 1.
        both_classes: require both classes 0 and 1 along the batch axis of
            every row of ``target`` (implies ``binary``).

    Returns:
        ``target`` expanded to ``output.shape`` with ``output.dtype``.

    Raises:
        ConfigError: the shapes do not broadcast ("... target shape (3,) does
            not broadcast to output shape (2, 4)"), targets are not 0/1, or a
            class is missing ("fisher needs both classes in target; got only 1").
    """
    target = torch.as_tensor(target, device=output.device)
    _check_broadcast(output.shape, target.shape, loss_name, "output")
    if binary or both_classes:
        not_binary = (target != 0) & (target != 1)
        if bool(not_binary.any()):
            bad = target[not_binary].flatten()[:3].tolist()
            raise ConfigError(f"{loss_name} needs binary targets (0 or 1); got values such as {bad}")
    if both_classes:
        rows = target.reshape(-1, target.shape[-1]) if target.dim() > 0 else target.reshape(1, 1)
        has_one = (rows == 1).any(dim=-1)
        has_zero = (rows == 0).any(dim=-1)
        missing = ~(has_one & has_zero)
        if bool(missing.any()):
            row = int(missing.nonzero()[0, 0])
            present = 1 if bool(has_one[row]) else 0
            where = "" if rows.shape[0] == 1 else f" (row {row} of the target)"
            raise ConfigError(f"{loss_name} needs both classes in target; got only {present}{where}")
    return target.to(output.dtype).expand(output.shape)


def fisher(output: torch.Tensor, target: torch.Tensor, *, eps_na2: float = 1e-10) -> torch.Tensor:
    r"""Negative Fisher linear discriminant of a binary task.

    With the class masks :math:`t_i \in \{0, 1\}` along the batch axis,

    .. math::

        n_1 = \sum_i t_i, \quad m_1 = \frac{1}{n_1} \sum_i t_i y_i, \quad
        s_1^2 = \frac{1}{n_1} \sum_i t_i (y_i - m_1)^2

    and likewise :math:`n_0, m_0, s_0^2` with masks :math:`1 - t_i`
    (population variances, i.e. ``unbiased=False``),

    .. math::

        L = -\frac{(m_1 - m_0)^2}{s_1^2 + s_0^2 + \varepsilon}.

    The classes are selected by multiplying with masks, not by boolean
    indexing, so every row of a population is computed at once.

    Args:
        output: ``(..., batch)`` currents :math:`y` (nA).
        target: ``(batch,)`` 0/1 classes, or a 0/1 tensor broadcasting to ``output``.
        eps_na2: :math:`\varepsilon` (nA²), keeps the ratio finite when both
            classes have zero spread.

    Returns:
        ``(...)`` loss (dimensionless); more negative means better separated classes.
    """
    t1 = validate_target(output, target, "fisher", binary=True, both_classes=True)
    t0 = 1 - t1
    n1 = t1.sum(dim=-1)
    n0 = t0.sum(dim=-1)
    m1 = (t1 * output).sum(dim=-1) / n1
    m0 = (t0 * output).sum(dim=-1) / n0
    var1 = (t1 * (output - m1.unsqueeze(-1)) ** 2).sum(dim=-1) / n1
    var0 = (t0 * (output - m0.unsqueeze(-1)) ** 2).sum(dim=-1) / n0
    return -((m1 - m0) ** 2) / (var1 + var0 + eps_na2)


#: Floor of -z in :func:`corrsig` (exp(80) is finite in float32).
_MIN_SEPARATION_Z = 80.0


def corrsig(
    output: torch.Tensor,
    target: torch.Tensor,
    separation_offset_na: float = 5.0,
    separation_scale_na: float = 3.0,
    *,
    eps_na2: float = 1e-12,
) -> torch.Tensor:
    r"""Correlation with sigmoid separation: the Boolean-gate fitness of DNPU research.

    This is the loss used to find Boolean gates on dopant networks since
    Chen et al., *Nature* 577, 341 (2020), in brains-py-style training.
    With the Pearson correlation of output and target along the batch axis

    .. math::

        \rho = \frac{\operatorname{cov}(y, t)}{\sqrt{\operatorname{var}(y)\,\operatorname{var}(t) + \varepsilon}}

    (population moments; :math:`\varepsilon` keeps :math:`\rho` and its
    gradient finite for a constant output, where :math:`\rho = 0`), and the
    separation between the classes

    .. math::

        \delta = \min_{i: t_i = 1} y_i - \max_{i: t_i = 0} y_i \quad \text{(nA)},

    the loss is

    .. math::

        L = \frac{1.1 - \rho}{\sigma\!\left(\frac{\delta - \delta_0}{s}\right)}

    with the logistic sigmoid :math:`\sigma`, offset :math:`\delta_0`
    (``separation_offset_na``) and scale :math:`s` (``separation_scale_na``).
    :math:`L > 0.1`; it approaches 0.1 when the output is perfectly
    correlated with the target and the classes are separated by well over
    :math:`\delta_0`. A negative :math:`\delta` means the classes overlap.
    It is computed as :math:`(1.1 - \rho)(1 + e^{-z})`, :math:`z = (\delta - \delta_0)/s`,
    with :math:`z` floored at -80 so that value and gradient stay finite in
    float32 when the classes overlap by hundreds of nA (below the floor only
    the correlation term has a gradient).

    Args:
        output: ``(..., batch)`` currents :math:`y` (nA).
        target: ``(batch,)`` 0/1 classes, or a 0/1 tensor broadcasting to ``output``.
        separation_offset_na: :math:`\delta_0` (nA).
        separation_scale_na: :math:`s` (nA).
        eps_na2: :math:`\varepsilon` (nA²).

    Returns:
        ``(...)`` loss (dimensionless).
    """
    t = validate_target(output, target, "corrsig", binary=True, both_classes=True)
    rho = _pearson(output, t, eps_na2)
    inf = torch.tensor(float("inf"), dtype=output.dtype, device=output.device)
    low_of_ones = torch.where(t == 1, output, inf).amin(dim=-1)
    high_of_zeros = torch.where(t == 0, output, -inf).amax(dim=-1)
    delta = low_of_ones - high_of_zeros
    # 1 / sigmoid(z) = 1 + exp(-z): the same value without the overflow of sigmoid(z)**2 in the
    # gradient; z is floored at -80 (exp(80) = 5.5e34 fits float32), far below any useful separation
    z = ((delta - separation_offset_na) / separation_scale_na).clamp(min=-_MIN_SEPARATION_Z)
    return (1.1 - rho) * (1.0 + torch.exp(-z))


def _pearson(output: torch.Tensor, t: torch.Tensor, eps_na2: float) -> torch.Tensor:
    """``(...)`` Pearson correlation of ``output`` and ``t`` along the last axis (population moments)."""
    yc = output - output.mean(dim=-1, keepdim=True)
    tc = t - t.mean(dim=-1, keepdim=True)
    cov = (yc * tc).mean(dim=-1)
    return cov / torch.sqrt((yc**2).mean(dim=-1) * (tc**2).mean(dim=-1) + eps_na2)


def noise_margin(
    output: torch.Tensor,
    target: torch.Tensor,
    noise_na: float = 1.0,
    margin: float = 8.0,
    softness: float = 0.5,
    *,
    eps_na2: float = 1e-12,
) -> torch.Tensor:
    r"""Class margin in units of the device noise: a robust objective for binary tasks on noisy hardware.

    A solution found on a surrogate keeps its classes apart on the device only
    if the gap between the nearest points of the two classes is several times
    the device's measurement noise (and the surrogate's error). This loss asks
    for that gap directly. With the Pearson correlation :math:`\rho` of output
    and target (as in :func:`corrsig`), the orientation
    :math:`s = \operatorname{sign}\rho` (+1 at :math:`\rho = 0`; held fixed in
    the gradient, so either class may end up on top, as a threshold read-out
    allows), the gaps of all pairs of a class-1 point :math:`i` and a class-0
    point :math:`j` in noise units

    .. math::

        g_{ij} = s\,\frac{y_i - y_j}{\sigma},

    and their soft minimum :math:`m = -\tau \log \sum_{ij} e^{-g_{ij}/\tau}`
    (:math:`m \le \min g_{ij}`, equal to it as :math:`\tau \to 0`), the loss is

    .. math::

        L = (1 - |\rho|) + \operatorname{softplus}(M - m).

    The correlation term orders the classes from any start; the margin term
    pushes the two nearest points of opposite classes apart until the gap
    exceeds :math:`M` noise units. Every pair near the minimum gets a gradient
    (not only the extreme two, as with a hard minimum).

    Args:
        output: ``(..., batch)`` currents :math:`y` (nA).
        target: ``(batch,)`` 0/1 classes, or a 0/1 tensor broadcasting to ``output``.
        noise_na: :math:`\sigma`, the device noise (nA, > 0): the standard error of one measurement.
        margin: :math:`M`, the gap wanted between the classes, in units of :math:`\sigma` (> 0).
        softness: :math:`\tau`, the temperature of the soft minimum, in units of :math:`\sigma` (> 0).
        eps_na2: :math:`\varepsilon` of the correlation (nA²).

    Returns:
        ``(...)`` loss (dimensionless), > 0; near 0 when the classes are perfectly
        correlated with the target and more than :math:`M` noise units apart.

    Raises:
        ConfigError: targets are not binary or a class is missing, or ``noise_na``,
            ``margin`` or ``softness`` is not a finite number > 0.
    """
    for name, value in (("noise_na", noise_na), ("margin", margin), ("softness", softness)):
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"noise_margin: {name} must be a finite number > 0, got {value}")
    t = validate_target(output, target, "noise_margin", binary=True, both_classes=True)
    rho = _pearson(output, t, eps_na2)
    orientation = torch.where(rho.detach() >= 0, 1.0, -1.0).to(output.dtype)
    z = output / noise_na
    gaps = orientation[..., None, None] * (z.unsqueeze(-1) - z.unsqueeze(-2))  # (..., i, j): y_i - y_j
    pairs = (t.unsqueeze(-1) == 1) & (t.unsqueeze(-2) == 0)
    # pairs that are not (class 1, class 0) drop out of the soft minimum: -inf in the log-sum-exp
    scaled = torch.where(pairs, -gaps / softness, torch.tensor(-math.inf, dtype=output.dtype, device=output.device))
    soft_min = -softness * torch.logsumexp(scaled.flatten(-2), dim=-1)
    return (1 - rho.abs()) + F.softplus(margin - soft_min)


def sigmoid_distance(output: torch.Tensor, target: torch.Tensor | None = None, scale_na: float = 1.0) -> torch.Tensor:
    r"""Sigmoid nearest-neighbour distance: separate every point from all others.

    Used to make a DNPU map each input to its own current (e.g. for
    capacity or "separate all points" tasks); ``target`` is ignored. Sort the
    ``B`` outputs of a row, :math:`y_{(1)} \le \dots \le y_{(B)}`, take the
    gaps :math:`g_j = y_{(j+1)} - y_{(j)}` and give every point the distance
    to its nearest neighbour in output value,

    .. math::

        d_1 = g_1, \quad d_B = g_{B-1}, \quad d_i = \min(g_{i-1}, g_i) \; (1 < i < B).

    The loss is

    .. math::

        L = -\frac{1}{B} \sum_{i=1}^{B} \left[ 2\,\sigma\!\left(\frac{d_i}{s}\right) - 1 \right]
          = -\frac{1}{B} \sum_{i=1}^{B} \tanh\!\left(\frac{d_i}{2 s}\right)

    with the logistic sigmoid :math:`\sigma` and scale :math:`s`
    (``scale_na``). Since :math:`d_i \ge 0`, every term is in :math:`[0, 1)`
    and :math:`L \in (-1, 0]`: 0 when all outputs are equal, towards -1 when
    every point is many :math:`s` away from its nearest neighbour.

    Args:
        output: ``(..., batch)`` currents :math:`y` (nA), ``batch >= 2``.
        target: ignored (accepted so that every loss is called ``loss(output, target)``).
        scale_na: :math:`s` (nA).

    Returns:
        ``(...)`` loss (dimensionless).
    """
    if output.dim() == 0 or output.shape[-1] < 2:
        raise ConfigError(
            f"sigmoid_distance needs at least 2 points along the batch axis; got output shape {tuple(output.shape)}"
        )
    ordered = torch.sort(output, dim=-1).values
    gaps = ordered[..., 1:] - ordered[..., :-1]
    nearest = torch.cat([gaps[..., :1], torch.minimum(gaps[..., :-1], gaps[..., 1:]), gaps[..., -1:]], dim=-1)
    return -(2 * torch.sigmoid(nearest / scale_na) - 1).mean(dim=-1)


def bce(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r"""Binary cross-entropy of logits, averaged over the batch.

    .. math::

        L = -\frac{1}{B} \sum_i \left[ t_i \log \sigma(y_i) + (1 - t_i) \log(1 - \sigma(y_i)) \right]

    The output is used as a logit as it is; scale a current in nA to a
    sensible logit range before calling (e.g. with a learnt affine map).

    Args:
        output: ``(..., batch)`` logits :math:`y`.
        target: ``(batch,)`` 0/1 classes, or a 0/1 tensor broadcasting to ``output``.

    Returns:
        ``(...)`` loss (nats).
    """
    t = validate_target(output, target, "bce", binary=True)
    return F.binary_cross_entropy_with_logits(output, t, reduction="none").mean(dim=-1)


def mse(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r"""Mean squared error over the batch, :math:`L = \frac{1}{B} \sum_i (y_i - t_i)^2`.

    Args:
        output: ``(..., batch)`` currents :math:`y` (nA).
        target: ``(batch,)`` target currents :math:`t` (nA), or broadcasting to ``output``.

    Returns:
        ``(...)`` loss (nA²).
    """
    t = validate_target(output, target, "mse")
    return ((output - t) ** 2).mean(dim=-1)


def cross_entropy(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r"""Multi-class cross-entropy of logits, averaged over the batch.

    .. math::

        L = \frac{1}{B} \sum_i \left[ \log \sum_c e^{y_{ic}} - y_{i t_i} \right]

    Args:
        output: ``(..., batch, classes)`` logits :math:`y`.
        target: ``(batch,)`` int64 class indices in ``[0, classes)``, or
            integer indices broadcasting to ``output.shape[:-1]``.

    Returns:
        ``(...)`` loss (nats).

    Raises:
        ConfigError: ``output`` has no class axis, ``target`` is not integer,
            its shape does not broadcast, or a class index is out of range.
    """
    if output.dim() < 2:
        raise ConfigError(f"cross_entropy needs output of shape (..., batch, classes); got shape {tuple(output.shape)}")
    target = torch.as_tensor(target, device=output.device)
    if target.dtype.is_floating_point or target.dtype.is_complex or target.dtype == torch.bool:
        raise ConfigError(f"cross_entropy needs integer class indices as target; got dtype {target.dtype}")
    _check_broadcast(output.shape[:-1], target.shape, "cross_entropy", "output (without the class axis)")
    n_classes = output.shape[-1]
    out_of_range = (target < 0) | (target >= n_classes)
    if bool(out_of_range.any()):
        bad = target[out_of_range].flatten()[:3].tolist()
        raise ConfigError(f"cross_entropy: class indices {bad} outside [0, {n_classes - 1}]")
    index = target.expand(output.shape[:-1]).unsqueeze(-1)
    log_p = torch.log_softmax(output, dim=-1).gather(-1, index).squeeze(-1)
    return -log_p.mean(dim=-1)


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "fisher": fisher,
    "corrsig": corrsig,
    "noise_margin": noise_margin,
    "sigmoid_distance": sigmoid_distance,
    "bce": bce,
    "mse": mse,
    "cross_entropy": cross_entropy,
}
"""Every loss by its :data:`LossName`; each is called as ``loss(output, target)``."""


def get_loss(name: str) -> Callable[..., torch.Tensor]:
    """Return the loss registered as ``name`` in :data:`LOSSES`.

    Raises:
        ConfigError: ``name`` is unknown ("unknown loss 'foo'; choose one of: bce, corrsig, ...").
    """
    try:
        return LOSSES[name]
    except KeyError:
        raise ConfigError(f"unknown loss {name!r}; choose one of: {', '.join(sorted(LOSSES))}") from None
