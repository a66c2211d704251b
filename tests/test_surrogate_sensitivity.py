"""electrode_sensitivity against hand formulas on models whose sensitivities are known exactly."""

import pytest
import torch

from inmaterio.errors import ConfigError
from inmaterio.surrogate import electrode_sensitivity


def test_linear_model_gives_weight_times_the_std_of_the_sweep():
    """y = w . v: sweeping electrode e alone moves y by w_e times the sweep, whatever the other voltages."""
    w = torch.tensor([3.0, -0.5, 0.0, 10.0])
    ranges = [(-1.2, 0.6), (-1.0, 1.0), (0.0, 1.0), (-0.1, 0.1)]
    got = electrode_sensitivity(lambda v: v @ w, ranges, points=50, steps=5)
    for e, (lo, hi) in enumerate(ranges):
        sweep = torch.linspace(lo, hi, 5)
        assert got[e] == pytest.approx(abs(float(w[e])) * float(sweep.std()), rel=1e-5, abs=1e-6)


def test_interaction_term_averages_over_the_other_electrode():
    """y = v0 * v1 with v1 uniform in [0, 1]: the mean of |v1| times the sweep's std (sample mean over points)."""
    got = electrode_sensitivity(lambda v: v[:, 0] * v[:, 1], [(-1.0, 1.0), (0.0, 1.0)], points=20000, steps=3)
    assert got[0] == pytest.approx(0.5 * 1.0, rel=0.02)  # std of (-1, 0, 1) is 1; E|v1| = 0.5
    assert got[1] == pytest.approx(0.5 * 0.5, rel=0.02)  # std of (0, .5, 1) is 0.5; E|v0| = 0.5


@pytest.mark.parametrize(("ranges", "kw", "match"), [
    ([(0.5, -0.5)], {}, "high > low"),
    ([(0.0, 1.0)], {"steps": 1}, "steps=1"),
    ([(0.0, 1.0)], {"points": 0}, "points=0"),
])  # fmt: skip
def test_bad_arguments(ranges, kw, match):
    with pytest.raises(ConfigError, match=match):
        electrode_sensitivity(lambda v: v.sum(1), ranges, **kw)


def test_the_bundled_surrogate_has_one_dominant_electrode():
    """The virtual DNPU's e0 drives the output several times harder than any other activation electrode."""
    from inmaterio.surrogate import load_default_surrogate

    s = load_default_surrogate()
    got = electrode_sensitivity(s, s.info.voltage_ranges_v, points=200)
    assert got[0] > 3 * max(got[1:])
