"""The ring data set: geometry against the hand formulas of the two classes.

Truths used: the equal-area condition r_inner^2 = R^2 - (r_inner + gap)^2 (hand
solved below), and the law of a point uniform in area in an annulus
[a, b]: r^2 is uniform on [a^2, b^2], so E[r^2] = (a^2 + b^2) / 2 with standard
deviation (b^2 - a^2) / sqrt(12).
"""

import math

import pytest
import torch

from inmaterio.data.rings import make_rings, ring_radii
from inmaterio.errors import ConfigError

N = 20_000  # points per class for the statistical checks
TOL = 1e-6  # the points are float32: a radius computed from them is exact to ~1e-7


def _radii(x):
    return x.double().norm(dim=1)


@pytest.mark.parametrize("gap", [0.0, 0.1, 0.35])
def test_equal_areas_hand_formula(gap):
    r_inner, r_ring = ring_radii(gap)
    assert r_ring == pytest.approx(r_inner + gap, abs=1e-15)
    # disc of radius r_inner and ring [r_inner + gap, 1] cover the same area
    assert r_inner**2 == pytest.approx(1.0 - (r_inner + gap) ** 2, abs=1e-12)


def test_ring_radii_hand_values():
    # gap 0: the disc holds half the unit disc's area, r = 1/sqrt(2)
    assert ring_radii(0.0)[0] == pytest.approx(1 / math.sqrt(2), abs=1e-15)
    # gap 0.1 solved by hand: 2 r^2 + 0.2 r + 0.01 - 1 = 0 -> r = (-0.2 + sqrt(0.04 + 7.92)) / 4
    assert ring_radii(0.1)[0] == pytest.approx((-0.2 + math.sqrt(7.96)) / 4, abs=1e-15)
    # radius scales everything: radius 2, gap 0.2 is twice radius 1, gap 0.1
    r2, g2 = ring_radii(0.2, radius=2.0)
    r1, g1 = ring_radii(0.1)
    assert (r2, g2) == pytest.approx((2 * r1, 2 * g1), abs=1e-14)


@pytest.mark.parametrize("gap", [0.0, 0.1, 0.4])
def test_classes_are_balanced_and_in_their_regions(gap):
    n = 5000
    x, y = make_rings(n, gap=gap, seed=3)
    assert x.shape == (2 * n, 2) and y.shape == (2 * n,)
    assert x.dtype == torch.float32 and y.dtype == torch.float32
    assert set(y.tolist()) == {0.0, 1.0}
    assert int(y.sum()) == n
    r_inner, r_ring = ring_radii(gap)
    r = _radii(x)
    r0, r1 = r[y == 0], r[y == 1]
    assert bool((r0 < r_inner + TOL).all())
    assert bool((r1 >= r_ring - TOL).all()) and bool((r1 <= 1.0 + TOL).all())
    # the gap holds no point at all
    assert not bool(((r > r_inner + TOL) & (r < r_ring - TOL)).any())
    # the classes are shuffled together, not stacked
    assert 0 < int(y[:n].sum()) < n


def test_uniform_in_area():
    gap = 0.1
    x, y = make_rings(N, gap=gap, seed=11)
    r_inner, r_ring = ring_radii(gap)
    r2 = _radii(x) ** 2
    for values, a2, b2 in ((r2[y == 0], 0.0, r_inner**2), (r2[y == 1], r_ring**2, 1.0)):
        sem = (b2 - a2) / math.sqrt(12 * N)
        assert float(values.mean()) == pytest.approx((a2 + b2) / 2, abs=4 * sem)
        # half the area of each class lies below the mid value of r^2
        below = float((values < (a2 + b2) / 2).double().mean())
        assert below == pytest.approx(0.5, abs=4 * 0.5 / math.sqrt(N))
    # angles uniform: the mean point of each class is the centre
    for k in (0, 1):
        centre = x[y == k].double().mean(dim=0)
        assert float(centre.norm()) < 4 * 0.7 / math.sqrt(N)


def test_seed_reproducible():
    a = make_rings(100, gap=0.1, seed=5)
    b = make_rings(100, gap=0.1, seed=5)
    c = make_rings(100, gap=0.1, seed=6)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("gap", [-0.1, math.sqrt(2), 2.0, float("nan")])
def test_bad_gap_is_config_error(gap):
    with pytest.raises(ConfigError, match="ring gap must be in"):
        make_rings(10, gap=gap)


def test_bad_count_and_radius():
    with pytest.raises(ConfigError, match="n_per_class must be >= 1, got 0"):
        make_rings(0)
    with pytest.raises(ConfigError, match="for radius -1"):
        ring_radii(0.1, radius=-1.0)
