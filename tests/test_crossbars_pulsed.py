"""Pulsed-update device models against closed forms, published numbers and sampling statistics.

Truths used: hand-derived trajectories (constant step: w0 + n dw clipped; soft bounds: the distance to the
bound shrinks by (1 - dw/h) per pulse; power step: the scalar recurrence iterated in plain Python),
NeuroSim's LTP/LTD curve G(P) = B (1 - exp(-P/A)) + G_min with A from NeuroSim's published getParamA
table (MLP_NeuroSim V3.0 formula.cpp), the symmetry point bracketed by the 2-cycle of alternating pulses,
and the mean/std of sampled noise within 3 standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inmaterio.config import StrictModel, validate_config
from inmaterio.crossbars.pulsed import (
    DEVICE_KINDS,
    PRESETS,
    ConstantStepDevice,
    ExpStepDevice,
    PowStepDevice,
    PulsedDevice,
    SoftBoundsDevice,
    from_conductance_ns,
    nonlinearity_to_a,
    number_of_states,
    preset,
    pulse,
    read_weights,
    sample_devices,
    step_sizes,
    symmetry_point,
    to_conductance_ns,
    validate_device,
)
from inmaterio.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DTYPES = [torch.float64, torch.float32]
TOL = {torch.float64: 1e-10, torch.float32: 2e-5}


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def within_3se(sample: torch.Tensor, mean: float, std: float) -> None:
    """The sample's mean and std agree with (mean, std) within 3 standard errors (normal SEs)."""
    n = sample.numel()
    s = sample.double()
    assert abs(s.mean().item() - mean) < 3 * std / math.sqrt(n) + 1e-15, (s.mean().item(), mean)
    assert abs(s.std().item() - std) < 3 * std / math.sqrt(2 * (n - 1)) + 1e-15, (s.std().item(), std)


# ------------------------------------------------------------------------------------------------
# trajectories without noise
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_constant_step_is_w0_plus_n_steps_clipped(dtype):
    cfg = ConstantStepDevice(w_min=-0.6, w_max=0.6, dw_min=0.01, up_down=0.2, dw_min_dtod=0.2, w_min_dtod=0.1, w_max_dtod=0.1)
    arr = sample_devices(cfg, (4, 50), gen(1), dtype=dtype)
    g = gen(2)
    w0 = (torch.rand(arr.shape, generator=g, dtype=torch.float64) - 0.5).to(dtype) * 0.8
    w0 = torch.clamp(w0, arr.w_min, arr.w_max)
    n = torch.randint(-150, 151, arr.shape, generator=g)
    n[0, 0], n[0, 1] = 0, 150
    w = pulse(arr, w0, n, gen(3))
    step = torch.where(n > 0, arr.dw_up, -arr.dw_down)
    expected = torch.clamp(w0 + n.abs().to(dtype) * step, arr.w_min, arr.w_max)
    torch.testing.assert_close(w, expected, rtol=0, atol=50 * TOL[dtype])
    assert w[0, 0] == w0[0, 0]
    # nominal steps: dw (1 +- up_down) with no spread
    nominal = sample_devices(cfg.model_copy(update={"dw_min_dtod": 0.0}), 3, gen(1), dtype=torch.float64)
    torch.testing.assert_close(nominal.dw_up, torch.full((3,), 0.012, dtype=torch.float64))
    torch.testing.assert_close(nominal.dw_down, torch.full((3,), 0.008, dtype=torch.float64))


@pytest.mark.parametrize("dtype", DTYPES)
def test_soft_bounds_matches_the_geometric_closed_form(dtype):
    """Δ+ = dw+ (w_max - w)/h: w_max - w_{k+1} = (w_max - w_k)(1 - dw+/h), so w_n = w_max - (w_max - w0)(1 - dw+/h)^n;
    down: w_n = w_min + (w0 - w_min)(1 - dw-/h)^n (h = half range; for [-1, 1], h = w_max = 1)."""
    cfg = SoftBoundsDevice(w_min=-1.0, w_max=1.0, dw_min=0.01, up_down=-0.3)
    arr = sample_devices(cfg, (401,), gen(0), dtype=dtype)
    n = torch.arange(-200, 201)
    w0 = torch.full((401,), 0.25, dtype=dtype)
    w = pulse(arr, w0, n, gen(1)).double()
    dw_up, dw_down, h, w_max, w_min = 0.01 * 0.7, 0.01 * 1.3, 1.0, 1.0, -1.0
    nd = n.double()
    up = w_max - (w_max - 0.25) * (1 - dw_up / h) ** nd
    down = w_min + (0.25 - w_min) * (1 - dw_down / h) ** (-nd)
    expected = torch.where(n > 0, up, torch.where(n < 0, down, torch.full_like(nd, 0.25)))
    torch.testing.assert_close(w, expected, rtol=0, atol=200 * TOL[dtype])


def test_soft_bounds_with_shifted_range_and_per_device_bounds():
    """The soft bound is each device's own: w_n = w_max,i - (w_max,i - w0)(1 - dw+_i/h_i)^n, h_i = (w_max,i - w_min,i)/2."""
    cfg = SoftBoundsDevice(w_min=0.0, w_max=2.0, dw_min=0.02, dw_min_dtod=0.2, w_min_dtod=0.05, w_max_dtod=0.05)
    arr = sample_devices(cfg, (300,), gen(5), dtype=torch.float64)
    w0 = torch.clamp(torch.full((300,), 1.0, dtype=torch.float64), arr.w_min, arr.w_max)
    n = torch.full((300,), 37)
    w = pulse(arr, w0, n, gen(1))
    h = (arr.w_max - arr.w_min) / 2
    expected = arr.w_max - (arr.w_max - w0) * (1 - arr.dw_up / h) ** 37
    torch.testing.assert_close(w, expected, rtol=0, atol=1e-12)


# NeuroSim's published normalised A (getParamA, MLP_NeuroSim V3.0 formula.cpp): label -> A / P_max
NEUROSIM_TABLE = {0.01: 126.268958, 0.5: 2.519877, 1.0: 1.251653, 2.40: 0.499181, 3.0: 0.386830, 4.88: 0.200303}


@pytest.mark.parametrize(("label", "a"), sorted(NEUROSIM_TABLE.items()))
def test_nonlinearity_label_maps_to_neurosims_table(label, a):
    assert nonlinearity_to_a(label) == pytest.approx(a, rel=2e-6, abs=1e-6)
    assert nonlinearity_to_a(-label) == pytest.approx(-a, rel=2e-6, abs=1e-6)


@pytest.mark.parametrize("label", [0.3, 2.4, -4.88, 7.5])
def test_nonlinearity_label_is_the_largest_gap_from_linear(label):
    """The documented property: max_t (f_a(t) - t) = 0.07 sqrt(2) |NL| for the normalised curve of the up
    pulses (a > 0) and, mirrored, the same gap for a down curve (a < 0)."""
    a = abs(nonlinearity_to_a(label))
    t = np.linspace(0.0, 1.0, 2_000_001)
    f = -np.expm1(-t / a) / -math.expm1(-1.0 / a)
    assert (f - t).max() == pytest.approx(0.07 * math.sqrt(2) * abs(label), rel=1e-6)
    assert nonlinearity_to_a(0.0) == math.inf


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_step_pulses_sample_neurosims_ltp_and_ltd_curves(dtype):
    """From G_min, P up pulses give G(P) = B (1 - exp(-P/A)) + G_min, B = (G_max - G_min)/(1 - exp(-P_max/A));
    from G_max, P down pulses give the LTD curve at position P_max - P (NeuroSim's RealDevice::Write)."""
    cfg = preset("zhao_neurosim", c2c_std=0.0)
    p_max = 500
    arr = sample_devices(cfg, (p_max + 1,), gen(0), dtype=dtype)
    pulses = torch.arange(p_max + 1)
    g_min, g_max = 3.0, 38.0
    tol = 1e-6 if dtype == torch.float64 else 2e-3  # nS

    ltp = to_conductance_ns(cfg, pulse(arr, torch.full((p_max + 1,), cfg.w_min, dtype=dtype), pulses, gen(1))).double()
    A = NEUROSIM_TABLE[2.40] * p_max
    B = (g_max - g_min) / (1 - math.exp(-p_max / A))
    expected = B * (1 - torch.exp(-pulses.double() / A)) + g_min
    torch.testing.assert_close(ltp, expected, rtol=0, atol=tol + 1e-4)
    # half the pulses: the normalised curve 1 / (1 + exp(-1/(2a))), about 0.731 for NL 2.40
    half = (ltp[250] - g_min) / (g_max - g_min)
    assert half.item() == pytest.approx(1 / (1 + math.exp(-1 / (2 * NEUROSIM_TABLE[2.40]))), abs=1e-5)

    ltd = to_conductance_ns(cfg, pulse(arr, torch.full((p_max + 1,), cfg.w_max, dtype=dtype), -pulses, gen(1))).double()
    A_d = -NEUROSIM_TABLE[4.88] * p_max
    B_d = (g_max - g_min) / (1 - math.exp(-p_max / A_d))
    expected = B_d * (1 - torch.exp(-(p_max - pulses.double()) / A_d)) + g_min
    torch.testing.assert_close(ltd, expected, rtol=0, atol=tol + 1e-4)
    # saturating both ways: potentiation slows towards G_max, depression slows towards G_min
    assert (ltp[1] - ltp[0]) > 3 * (ltp[-1] - ltp[-2])
    assert (ltd[0] - ltd[1]) > 3 * (ltd[-2] - ltd[-1])


def test_exp_step_with_zero_labels_is_the_constant_step():
    exp = ExpStepDevice(dw_min=0.01, up_down=0.1, dw_min_dtod=0.2)
    const = ConstantStepDevice(dw_min=0.01, up_down=0.1, dw_min_dtod=0.2)
    n = torch.randint(-120, 121, (200,), generator=gen(4))
    w0 = torch.zeros(200, dtype=torch.float64)
    a = pulse(sample_devices(exp, 200, gen(3), dtype=torch.float64), w0, n, gen(1))
    b = pulse(sample_devices(const, 200, gen(3), dtype=torch.float64), w0, n, gen(1))
    torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize(("gamma_up", "gamma_down"), [(2.0, 0.5), (0.7, 3.0)])
def test_pow_step_follows_its_recurrence(gamma_up, gamma_down):
    """Each pulse x <- clip(x + δ+ (2(1 - x))^γ+) (up) or clip(x - δ- (2x)^γ-) (down), δ± = dw±/R, iterated in Python."""
    cfg = PowStepDevice(w_min=-1.0, w_max=1.0, dw_min=0.01, up_down=0.15, gamma_up=gamma_up, gamma_down=gamma_down)
    counts = [-200, -37, -1, 0, 1, 5, 80, 300]
    arr = sample_devices(cfg, (len(counts),), gen(0), dtype=torch.float64)
    w0 = 0.3
    w = pulse(arr, torch.full((len(counts),), w0, dtype=torch.float64), torch.tensor(counts), gen(1))
    dw_up, dw_down, span = 0.01 * 1.15, 0.01 * 0.85, 2.0
    for got, n in zip(w.tolist(), counts):
        x = (w0 + 1.0) / span
        for _ in range(abs(n)):
            x = (
                min(1.0, x + dw_up / span * (2 * (1 - x)) ** gamma_up)
                if n > 0
                else max(0.0, x - dw_down / span * (2 * x) ** gamma_down)
            )
        assert got == pytest.approx(-1.0 + span * x, abs=1e-12), n


def test_pow_step_reduces_to_soft_bounds_and_constant_step():
    n = torch.randint(-150, 151, (100,), generator=gen(6))
    w0 = torch.zeros(100, dtype=torch.float64)
    common = {"dw_min": 0.01, "up_down": -0.2, "dw_min_dtod": 0.2, "w_max_dtod": 0.1}
    run = lambda cfg: pulse(sample_devices(cfg, 100, gen(3), dtype=torch.float64), w0, n, gen(1))
    torch.testing.assert_close(
        run(PowStepDevice(**common, gamma_up=1, gamma_down=1)), run(SoftBoundsDevice(**common)), atol=1e-12, rtol=0
    )
    torch.testing.assert_close(
        run(PowStepDevice(**common, gamma_up=0, gamma_down=0)), run(ConstantStepDevice(**common)), atol=1e-12, rtol=0
    )


def test_step_sizes_are_the_model_equations():
    x = torch.linspace(0, 1, 11, dtype=torch.float64)
    w = -1 + 2 * x
    soft = sample_devices(SoftBoundsDevice(dw_min=0.01, up_down=0.2), 11, gen(), dtype=torch.float64)
    up, down = step_sizes(soft, w)
    torch.testing.assert_close(up, 0.012 * (1 - w) / 1.0)
    torch.testing.assert_close(down, 0.008 * (w + 1) / 1.0)
    power = sample_devices(PowStepDevice(dw_min=0.01, gamma_up=2.5, gamma_down=0.5), 11, gen(), dtype=torch.float64)
    up, down = step_sizes(power, w)
    torch.testing.assert_close(up, 0.01 * (2 * (1 - x)) ** 2.5)
    torch.testing.assert_close(down, 0.01 * (2 * x) ** 0.5)


# ------------------------------------------------------------------------------------------------
# symmetry point
# ------------------------------------------------------------------------------------------------


def test_soft_bounds_symmetry_point_closed_form():
    """dw+ (w_max - w*) = dw- (w* - w_min)  =>  w* = (dw+ w_max + dw- w_min) / (dw+ + dw-), per device."""
    cfg = SoftBoundsDevice(
        w_min=-1.0, w_max=1.5, dw_min=0.01, up_down=0.3, dw_min_dtod=0.2, up_down_dtod=0.1, w_min_dtod=0.1, w_max_dtod=0.1
    )
    arr = sample_devices(cfg, (50, 20), gen(8), dtype=torch.float64)
    expected = (arr.dw_up * arr.w_max + arr.dw_down * arr.w_min) / (arr.dw_up + arr.dw_down)
    torch.testing.assert_close(symmetry_point(arr), expected)
    # nominal device: -1 + 2.5 * 1.3 / 2
    nominal = sample_devices(
        cfg.model_copy(update={"dw_min_dtod": 0.0, "up_down_dtod": 0.0, "w_min_dtod": 0.0, "w_max_dtod": 0.0}), 1, gen()
    )
    assert symmetry_point(nominal).item() == pytest.approx(-1 + 2.5 * 1.3 / 2, abs=1e-6)


def test_pow_step_symmetry_point_closed_form_and_root():
    cfg = PowStepDevice(dw_min=0.01, up_down=0.25, dw_min_dtod=0.1, up_down_dtod=0.1, gamma_up=2.0, gamma_down=2.0)
    arr = sample_devices(cfg, 500, gen(9), dtype=torch.float64)
    r = (arr.dw_down / arr.dw_up) ** 0.5
    torch.testing.assert_close(symmetry_point(arr), arr.w_min + (arr.w_max - arr.w_min) / (1 + r))
    # unequal exponents (bisection): the steps are equal there
    arr = sample_devices(cfg.model_copy(update={"gamma_up": 3.0, "gamma_down": 0.6}), 500, gen(9), dtype=torch.float64)
    up, down = step_sizes(arr, symmetry_point(arr))
    torch.testing.assert_close(up, down, rtol=1e-9, atol=1e-15)


def _alternate(arr, w0, cycles):
    """States after the up and after the down pulse of the last of ``cycles`` up/down pairs."""
    ones = torch.ones(arr.shape, dtype=torch.int64)
    w = w0
    for _ in range(cycles):
        w_up = pulse(arr, w, ones, gen())
        w = pulse(arr, w_up, -ones, gen())
    return w, w_up


@pytest.mark.parametrize(
    "cfg",
    [
        SoftBoundsDevice(dw_min=0.04, up_down=0.3, dw_min_dtod=0.3, up_down_dtod=0.1, w_max_dtod=0.2),
        ExpStepDevice(dw_min=0.04, nl_up=2.40, nl_down=-4.88, dw_min_dtod=0.2, up_down_dtod=0.1),
        PowStepDevice(dw_min=0.04, up_down=-0.2, gamma_up=1.8, gamma_down=0.7, dw_min_dtod=0.2),
        ConstantStepDevice(dw_min=0.04, up_down=0.3, up_down_dtod=0.05, dw_min_dtod=0.2),
        ConstantStepDevice(dw_min=0.04, up_down=-0.3, up_down_dtod=0.05, w_min_dtod=0.2),
    ],
    ids=lambda c: c.kind,
)
def test_alternating_pulses_converge_to_the_symmetry_point(cfg):
    """With Δ+ falling and Δ- rising in w, the 2-cycle (w_a, w_b = w_a + Δ+(w_a)) of alternating pulses brackets w*
    (Δ+(w_a) = Δ-(w_b) gives Δ+(w_a) >= Δ-(w_a) and Δ+(w_b) <= Δ-(w_b)), from either bound."""
    arr = sample_devices(cfg, 64, gen(11), dtype=torch.float64)
    star = symmetry_point(arr)
    for start in (arr.w_min, arr.w_max):
        w_a, w_b = _alternate(arr, start.clone(), 250)
        assert torch.all(w_a <= star + 1e-9) and torch.all(star <= w_b + 1e-9)
        assert torch.all(w_b - w_a <= torch.maximum(arr.dw_up, arr.dw_down) * 2.5)


def test_exp_step_symmetry_point_of_the_zhao_device():
    """Δ+ and Δ- are linear in x: (1/c+ - x) k+ R = (1/c- - x) k- R has one root, checked by the step sizes."""
    cfg = preset("zhao_neurosim", c2c_std=0.0)
    arr = sample_devices(cfg, 3, gen(), dtype=torch.float64)
    star = symmetry_point(arr)
    up, down = step_sizes(arr, star)
    torch.testing.assert_close(up, down, rtol=1e-12, atol=0)
    assert torch.all((star > cfg.w_min) & (star < 0))  # the steep depression pulls it below the centre


def test_zero_shift_reference_reads_zero_at_the_symmetry_point():
    cfg = SoftBoundsDevice(dw_min=0.01, up_down=0.2, dw_min_dtod=0.3, up_down_dtod=0.1, reference="zero_shift")
    arr = sample_devices(cfg, (10, 10), gen(3))
    torch.testing.assert_close(arr.reference, symmetry_point(arr))
    torch.testing.assert_close(read_weights(arr, symmetry_point(arr)), torch.zeros(10, 10))
    plain = sample_devices(cfg.model_copy(update={"reference": "none"}), (10, 10), gen(3))
    assert torch.equal(plain.reference, torch.zeros(10, 10))
    w = torch.rand(10, 10)
    torch.testing.assert_close(read_weights(plain, w), w)


def test_constant_step_symmetry_point_is_the_bound_of_the_larger_step():
    arr = sample_devices(ConstantStepDevice(dw_min=0.01, up_down_dtod=0.1), 1000, gen(2), dtype=torch.float64)
    expected = torch.where(arr.dw_up > arr.dw_down, arr.w_max, arr.w_min)
    torch.testing.assert_close(symmetry_point(arr), expected)
    even = sample_devices(ConstantStepDevice(w_min=-0.5, w_max=1.5), 4, gen())
    torch.testing.assert_close(symmetry_point(even), torch.full((4,), 0.5))


# ------------------------------------------------------------------------------------------------
# noise and spreads
# ------------------------------------------------------------------------------------------------

N_STAT = 200_000


@pytest.mark.parametrize("direction", [+1, -1])
@pytest.mark.parametrize("c2c_kind", ["additive", "multiplicative"])
def test_cycle_to_cycle_noise_of_one_pulse(c2c_kind, direction):
    """One pulse from w = 0.2 on identical soft-bounds devices: mean Δ±(0.2); std σ dw_min (additive) or σ Δ± (multiplicative)."""
    sigma = 0.6
    cfg = SoftBoundsDevice(dw_min=0.01, up_down=0.25, c2c_std=sigma, c2c_kind=c2c_kind)
    arr = sample_devices(cfg, N_STAT, gen(1), dtype=torch.float64)
    w0 = torch.full((N_STAT,), 0.2, dtype=torch.float64)
    step = pulse(arr, w0, torch.full((N_STAT,), direction), gen(2)) - w0
    delta = 0.0125 * (1 - 0.2) if direction > 0 else 0.0075 * (0.2 + 1)
    std = sigma * 0.01 if c2c_kind == "additive" else sigma * delta
    within_3se(step, direction * delta, std)


def test_additive_noise_of_n_pulses_grows_as_sqrt_n():
    """Constant step, n = 25 pulses: mean 25 dw, std sqrt(25) σ dw (NeuroSim's sqrt(|numPulse|) c2c)."""
    cfg = ConstantStepDevice(dw_min=0.001, c2c_std=2.0, c2c_kind="additive")
    arr = sample_devices(cfg, N_STAT // 4, gen(1), dtype=torch.float64)
    w0 = torch.zeros(N_STAT // 4, dtype=torch.float64)
    dw = pulse(arr, w0, torch.full((N_STAT // 4,), 25), gen(5))
    within_3se(dw, 25 * 0.001, 5 * 2.0 * 0.001)


def test_device_to_device_spreads():
    cfg = ConstantStepDevice(w_min=-1.0, w_max=1.0, dw_min=0.01, dw_min_dtod=0.1, up_down=0.2, w_min_dtod=0.1, w_max_dtod=0.2)
    arr = sample_devices(cfg, (400, 500), gen(12), dtype=torch.float64)
    within_3se(arr.dw_up, 0.012, 0.0012)  # dw (1 + 0.1 ξ)(1 + 0.2)
    within_3se(arr.dw_down, 0.008, 0.0008)
    torch.testing.assert_close(arr.dw_up / arr.dw_down, torch.full((400, 500), 1.5, dtype=torch.float64))
    within_3se(arr.w_min, -1.0, 0.1)  # relative to the half range, 1
    within_3se(arr.w_max, 1.0, 0.2)
    cfg = SoftBoundsDevice(w_min=0.0, w_max=4.0, dw_min=0.01, up_down=-0.1, up_down_dtod=0.05, w_max_dtod=0.1)
    arr = sample_devices(cfg, (400, 500), gen(13), dtype=torch.float64)
    within_3se((arr.dw_up - arr.dw_down) / (2 * 0.01), -0.1, 0.05)  # beta_i
    torch.testing.assert_close(arr.dw_up + arr.dw_down, torch.full((400, 500), 0.02, dtype=torch.float64))
    within_3se(arr.w_max, 4.0, 0.2)
    assert torch.all(arr.w_min == 0.0)


def test_spread_free_devices_are_nominal():
    arr = sample_devices(PRESETS["zhao_neurosim"], (3, 4), gen())
    assert torch.all(arr.w_min == -1) and torch.all(arr.w_max == 1)
    torch.testing.assert_close(arr.dw_up, torch.full((3, 4), 0.004))


# ------------------------------------------------------------------------------------------------
# bounds, reproducibility, dtypes
# ------------------------------------------------------------------------------------------------

BOUNDS_CASES = [
    *PRESETS.values(),
    PowStepDevice(dw_min=0.02, gamma_up=2.0, gamma_down=0.5, c2c_std=3.0, dw_min_dtod=0.3, w_max_dtod=0.3),
]


@pytest.mark.parametrize("cfg", BOUNDS_CASES, ids=[*PRESETS, "pow_noisy"])
def test_bounds_hold_under_random_pulses(cfg):
    """256 devices, 20 random signed trains of up to 100 pulses (~10^5 pulses in all): never outside [w_min,i, w_max,i]."""
    g = gen(21)
    arr = sample_devices(cfg, 256, g)
    w = arr.reference.clone().clamp(arr.w_min, arr.w_max)
    total = 0
    for _ in range(20):
        scale = max(1, int(0.25 * number_of_states(cfg)))
        n = torch.randint(-min(scale, 100), min(scale, 100) + 1, (256,), generator=g)
        total += int(n.abs().sum())
        w = pulse(arr, w, n, g)
        assert torch.all(w >= arr.w_min) and torch.all(w <= arr.w_max)
    assert total > 10_000


def test_bounds_hold_for_ten_thousand_pulses_per_device():
    cfg = PRESETS["zhao_neurosim"]  # c2c of 17.5 steps per pulse: the bounds are hit all the time
    g = gen(22)
    arr = sample_devices(cfg, 32, g)
    n = torch.where(torch.rand(32, generator=g) < 0.5, -1, 1) * 10_000
    w = pulse(arr, torch.zeros(32), n, g)
    assert torch.all(w >= arr.w_min) and torch.all(w <= arr.w_max)
    assert w[n > 0].mean() > w[n < 0].mean() + 0.5  # the drift still shows through the noise


def test_same_seed_same_devices_and_pulses():
    cfg = PRESETS["gokmen_vlasov"]

    def run(seed):
        g = gen(seed)
        arr = sample_devices(cfg, (8, 8), g)
        return arr, pulse(arr, torch.zeros(8, 8), torch.randint(-20, 21, (8, 8), generator=g), g)

    (a1, w1), (a2, w2), (a3, w3) = run(7), run(7), run(8)
    assert torch.equal(a1.dw_up, a2.dw_up) and torch.equal(a1.w_max, a2.w_max) and torch.equal(w1, w2)
    assert not torch.equal(a1.dw_up, a3.dw_up) and not torch.equal(w1, w3)
    # a seed gives the same devices in any dtype
    a64 = sample_devices(cfg, (8, 8), gen(7), dtype=torch.float64)
    torch.testing.assert_close(a64.dw_up.float(), a1.dw_up)


def test_dtype_and_device_follow_w():
    arr = sample_devices(PRESETS["reram_exp"], 5, gen())  # float32 array
    w = pulse(arr, torch.zeros(5, dtype=torch.float64), torch.tensor([3, -3, 0, 1, 2]), gen())
    assert w.dtype == torch.float64
    assert symmetry_point(arr).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_pulse_on_cuda_matches_cpu():
    cfg = PRESETS["zhao_neurosim"]
    arr = sample_devices(cfg, 100, gen(1), dtype=torch.float64)
    n = torch.randint(-30, 31, (100,), generator=gen(2))
    w_cpu = pulse(arr, torch.zeros(100, dtype=torch.float64), n, gen(3))
    w_gpu = pulse(arr.to("cuda"), torch.zeros(100, dtype=torch.float64, device="cuda"), n.cuda(), gen(3))
    torch.testing.assert_close(w_gpu.cpu(), w_cpu)


def test_call_time_errors_name_the_argument():
    arr = sample_devices(PRESETS["idealized"], (2, 3), gen())
    with pytest.raises(ValueError, match="n_pulses must be a signed integer tensor"):
        pulse(arr, torch.zeros(2, 3), torch.zeros(2, 3), gen())
    with pytest.raises(ValueError, match=r"n_pulses has shape \(3,\), the device array has shape \(2, 3\)"):
        pulse(arr, torch.zeros(2, 3), torch.zeros(3, dtype=torch.int64), gen())
    with pytest.raises(ValueError, match=r"w has shape \(6,\)"):
        pulse(arr, torch.zeros(6), torch.zeros(2, 3, dtype=torch.int64), gen())
    with pytest.raises(ValueError, match="w must be a floating-point tensor"):
        pulse(arr, torch.zeros(2, 3, dtype=torch.int64), torch.zeros(2, 3, dtype=torch.int64), gen())
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        pulse(arr, torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.int64), 0)
    with pytest.raises(ValueError, match="shape must be a tuple of non-negative integers"):
        sample_devices(PRESETS["idealized"], (2, -1), gen())
    with pytest.raises(ValueError, match="no conductance range"):
        to_conductance_ns(PRESETS["idealized"], torch.zeros(1))


# ------------------------------------------------------------------------------------------------
# presets and config validation
# ------------------------------------------------------------------------------------------------


def test_presets_validate_and_have_their_documented_states():
    states = {"gokmen_vlasov": 1200, "reram_exp": 128, "idealized": 10_000, "zhao_neurosim": 500}
    assert set(PRESETS) == set(states)
    for name, cfg in PRESETS.items():
        assert validate_device(cfg.model_dump(mode="json")) == cfg
        assert number_of_states(cfg) == pytest.approx(states[name])
        assert preset(name) is cfg
    gv = PRESETS["gokmen_vlasov"]
    assert (gv.dw_min_dtod, gv.w_max_dtod, gv.c2c_std) == (0.3, 0.3, 0.3)
    zhao = PRESETS["zhao_neurosim"]
    assert (zhao.nl_up, zhao.nl_down) == (2.40, -4.88)
    assert zhao.c2c_std * zhao.dw_min == pytest.approx(0.035 * (zhao.w_max - zhao.w_min))  # 3.5 % of the range
    g = to_conductance_ns(zhao, torch.tensor([zhao.w_min, 0.0, zhao.w_max], dtype=torch.float64))
    torch.testing.assert_close(g, torch.tensor([3.0, 20.5, 38.0], dtype=torch.float64))
    torch.testing.assert_close(from_conductance_ns(zhao, g), torch.tensor([-1.0, 0.0, 1.0], dtype=torch.float64))


def test_preset_overrides_and_unknown_names():
    assert number_of_states(preset("gokmen_vlasov", dw_min=0.004)) == pytest.approx(300)
    with pytest.raises(ConfigError, match="unknown pulsed-device preset 'nope'; known presets: gokmen_vlasov, reram_exp"):
        preset("nope")
    with pytest.raises(ConfigError, match="field 'dw_min' = -0.1"):
        preset("gokmen_vlasov", dw_min=-0.1)


BAD = [
    (
        {"kind": "soft_bounds", "w_min": 1.0, "w_max": 1.0},
        "field 'w_max' = 1.0: Value error, w_max 1.0 must be greater than w_min 1.0",
    ),
    ({"kind": "constant_step", "w_min": 0.5, "w_max": -0.5}, "field 'w_max' = -0.5"),
    ({"kind": "constant_step", "dw_min": 0.0}, "field 'dw_min' = 0.0: Input should be greater than 0"),
    ({"kind": "constant_step", "dw_min": -0.01}, "field 'dw_min' = -0.01"),
    ({"kind": "constant_step", "dw_min": 3.0}, "dw_min 3.0 exceeds the weight range"),
    ({"kind": "exp_step", "dw_min_dtod": -0.1}, "field 'dw_min_dtod' = -0.1: Input should be greater than or equal to 0"),
    ({"kind": "pow_step", "w_max_dtod": -1}, "field 'w_max_dtod' = -1"),
    ({"kind": "soft_bounds", "c2c_std": -0.5}, "field 'c2c_std' = -0.5"),
    ({"kind": "soft_bounds", "up_down": 1.0}, "field 'up_down' = 1.0"),
    ({"kind": "soft_bounds", "dw_min": float("nan")}, "field 'dw_min' = nan"),
    ({"kind": "soft_bounds", "w_min": float("nan")}, "field 'w_min' = nan"),
    ({"kind": "soft_bounds", "dw_min": "0.1"}, "field 'dw_min' = '0.1': expected a number, not str"),
    ({"kind": "soft_bounds", "foo": 1}, "unknown key 'foo'"),
    ({"kind": "soft_bounds", "c2c_kind": "gaussian"}, "field 'c2c_kind' = 'gaussian'"),
    ({"kind": "soft_bounds", "reference": "sym"}, "field 'reference' = 'sym'"),
    ({"kind": "exp_step", "nl_up": 12.0}, "field 'nl_up' = 12.0"),
    ({"kind": "pow_step", "gamma_down": -1.0}, "field 'gamma_down' = -1.0"),
    ({"kind": "soft_bounds", "g_min_ns": 3.0}, "g_max_ns is missing while g_min_ns = 3.0 nS is given"),
    ({"kind": "soft_bounds", "g_min_ns": 40.0, "g_max_ns": 38.0}, "g_max_ns 38.0 nS must be greater than g_min_ns 40.0 nS"),
    ({"kind": "soft_bounds", "g_max_ns": 38.0}, "g_max_ns = 38.0 nS is given without g_min_ns"),
    ({"kind": "linear_step"}, "field 'kind' 'linear_step' is unknown; allowed: constant_step, soft_bounds, exp_step, pow_step"),
    ({"dw_min": 0.1}, "field 'kind' missing"),
]


@pytest.mark.parametrize(("data", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_bad_configs_name_the_field(data, message):
    with pytest.raises(ConfigError) as info:
        validate_device(data, source="device.yaml")
    assert message in str(info.value)
    assert "device.yaml" in str(info.value)


def test_device_kinds_registry_and_non_mapping():
    assert {k: c().kind for k, c in DEVICE_KINDS.items()} == {k: k for k in DEVICE_KINDS}

    class Holder(StrictModel):
        device: PulsedDevice

    held = validate_config(Holder, {"device": {"kind": "pow_step", "gamma_up": 2.0}})
    assert isinstance(held.device, PowStepDevice) and held.device.gamma_up == 2.0
    with pytest.raises(ConfigError, match="device.exp_step.nl_down"):
        validate_config(Holder, {"device": {"kind": "exp_step", "nl_down": -10}})
    with pytest.raises(ConfigError, match="expected a mapping"):
        validate_device(["soft_bounds"])
    with pytest.raises(ValueError, match="non-linearity label 9.5 outside"):
        nonlinearity_to_a(9.5)
