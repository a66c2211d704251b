"""How strongly each electrode drives the output: a global, one-electrode-at-a-time sensitivity.

Which electrodes should take data and which should be controls is a design
choice that depends on the device (on our virtual DNPU one electrode moves
the output five times more than any other). :func:`electrode_sensitivity`
measures it on any model of the device, without a task in sight.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from inmaterio.errors import ConfigError

__all__ = ["electrode_sensitivity"]


def electrode_sensitivity(
    model: Callable[[torch.Tensor], torch.Tensor],
    voltage_ranges_v: Sequence[tuple[float, float]],
    *,
    points: int = 2000,
    steps: int = 9,
    seed: int = 0,
) -> list[float]:
    """Mean standard deviation of the output (its unit, nA for a surrogate) when one electrode sweeps its range.

    ``points`` operating points are drawn uniformly inside ``voltage_ranges_v``
    (``n`` pairs ``(low, high)`` V, one per activation electrode); for each
    electrode ``e`` and each point, electrode ``e`` alone is swept over
    ``steps`` equally spaced voltages of its range, and the (unbiased)
    standard deviation of the ``steps`` outputs is taken. Returns the mean
    over the points, per electrode (length ``n``). ``model`` maps
    ``(batch, n)`` V to ``(batch,)`` or ``(batch, 1)``; it is called without
    gradient, in batches of ``points * steps``.
    """
    ranges = torch.as_tensor(voltage_ranges_v, dtype=torch.float32)
    if ranges.ndim != 2 or ranges.shape[1] != 2 or not bool((ranges[:, 1] > ranges[:, 0]).all()):
        raise ConfigError(f"voltage_ranges_v must be (low, high) pairs with high > low, got {voltage_ranges_v}")
    if points < 1 or steps < 2:
        raise ConfigError(f"points must be >= 1 and steps >= 2, got points={points}, steps={steps}")
    n = len(ranges)
    generator = torch.Generator().manual_seed(seed)
    base = ranges[:, 0] + (ranges[:, 1] - ranges[:, 0]) * torch.rand(points, n, generator=generator)
    out = []
    with torch.no_grad():
        for e in range(n):
            x = base[:, None, :].repeat(1, steps, 1)
            x[:, :, e] = torch.linspace(float(ranges[e, 0]), float(ranges[e, 1]), steps)
            y = model(x.reshape(-1, n)).reshape(points, steps)
            out.append(float(y.std(dim=1).mean()))
    return out
