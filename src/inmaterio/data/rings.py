"""The ring classification task: two concentric classes separated by a gap.

Points lie in the disc of radius ``radius`` (data units). Class 0 is the inner
disc ``r < r_inner``; class 1 is the outer ring ``r_inner + gap <= r <= radius``.
``r_inner`` is chosen so that both classes cover the same area,
``r_inner**2 = radius**2 - (r_inner + gap)**2``, i.e.::

    r_inner = (-gap + sqrt(2 radius**2 - gap**2)) / 2

which makes uniform sampling of the disc give balanced classes (the task of
Ruiz Euler et al., Neuromorph. Comput. Eng. 2021, which asks a classifier to
separate a disc from a surrounding ring, something no single threshold on a
linear projection can do).
"""

from __future__ import annotations

import math

import torch

from inmaterio.errors import ConfigError

__all__ = ["make_rings", "ring_radii"]


def ring_radii(gap: float, radius: float = 1.0) -> tuple[float, float]:
    """``(r_inner, r_outer_start)`` of the two classes for a ``gap`` (same units as ``radius``)."""
    if not (radius > 0 and 0 <= gap < radius * math.sqrt(2)):
        raise ConfigError(f"ring gap must be in [0, {radius * math.sqrt(2):.3g}) for radius {radius}, got {gap}")
    r_inner = 0.5 * (-gap + math.sqrt(2 * radius**2 - gap**2))
    return r_inner, r_inner + gap


def make_rings(n_per_class: int, gap: float = 0.1, radius: float = 1.0, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample the ring task: ``n_per_class`` points of each class, uniform in area.

    Returns
    -------
    x : ``(2 * n_per_class, 2)`` float32 points, classes interleaved in random order.
    y : ``(2 * n_per_class,)`` float32 labels, 0 = inner disc, 1 = outer ring.
    """
    if n_per_class < 1:
        raise ConfigError(f"n_per_class must be >= 1, got {n_per_class}")
    r_inner, r_ring = ring_radii(gap, radius)
    g = torch.Generator().manual_seed(seed)
    # inverse-CDF sampling of the radius: uniform density per unit area
    u0 = torch.rand(n_per_class, generator=g, dtype=torch.float64)
    u1 = torch.rand(n_per_class, generator=g, dtype=torch.float64)
    r0 = r_inner * torch.sqrt(u0)
    r1 = torch.sqrt(r_ring**2 + u1 * (radius**2 - r_ring**2))
    phi = 2 * math.pi * torch.rand(2 * n_per_class, generator=g, dtype=torch.float64)
    r = torch.cat([r0, r1])
    x = torch.stack([r * torch.cos(phi), r * torch.sin(phi)], dim=1)
    y = torch.cat([torch.zeros(n_per_class), torch.ones(n_per_class)])
    order = torch.randperm(2 * n_per_class, generator=g)
    return x[order].float(), y[order].float()
