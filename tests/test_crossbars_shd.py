"""Pulsed SGD and Stochastic Hamiltonian Descent on device arrays, against closed forms and ideal recurrences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from inmaterio.config import validate_config
from inmaterio.crossbars.pulsed import ConstantStepDevice, SoftBoundsDevice, read_weights, sample_devices, symmetry_point
from inmaterio.crossbars.shd import PulsedSGDConfig, SHDConfig, kinetic_energy, sgd_step, shd_step
from inmaterio.crossbars.updates import quantized_counts
from inmaterio.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = torch.float64


def arrays(device, shape, seed=0):
    """(C array, A array zero-shifted, generator) drawn from ``device``."""
    g = torch.Generator().manual_seed(seed)
    c = sample_devices(device, shape, g, dtype=F64)
    a = sample_devices(device.model_copy(update={"reference": "zero_shift"}), shape, g, dtype=F64)
    return c, a, g


# --------------------------------------------------------------------------------------------------
# configs and pulse counts
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cls", "data", "field"),
    [
        (SHDConfig, {"lr_a": 0.0, "lr_c": 0.1}, "lr_a"),
        (SHDConfig, {"lr_a": 0.1, "lr_c": -1.0}, "lr_c"),
        (SHDConfig, {"lr_a": 0.1, "lr_c": 0.1, "rounding": "floor"}, "rounding"),
        (PulsedSGDConfig, {"lr": 0.1, "max_pulses": 0}, "max_pulses"),
        (PulsedSGDConfig, {"lr": 0.1, "momentum": 0.9}, "momentum"),
    ],
)
def test_bad_configs_name_the_field(cls, data, field):
    with pytest.raises(ConfigError, match=field):
        validate_config(cls, data)


def test_stochastic_rounding_is_unbiased_and_nearest_rounds_and_counts_are_clipped():
    g = torch.Generator().manual_seed(1)
    change = torch.full((200_000,), 0.3 * 0.01, dtype=F64)
    n = quantized_counts(change, 0.01, "stochastic", g, 100)
    assert n.dtype == torch.int64 and set(n.unique().tolist()) == {0, 1}
    assert abs(n.double().mean().item() - 0.3) < 4 * math.sqrt(0.3 * 0.7 / n.numel())
    neg = quantized_counts(-change * 11, 0.01, "stochastic", g, 100)  # -3.3 dw_min: -3 or -4, mean -3.3
    assert set(neg.unique().tolist()) == {-4, -3} and abs(neg.double().mean().item() + 3.3) < 0.01
    assert quantized_counts(torch.tensor([0.3, 0.6, -1.5, -2.5]) * 0.01, 0.01, "nearest", g, 100).tolist() == [0, 1, -2, -2]
    assert quantized_counts(torch.tensor([5.0, -5.0]), 0.01, "nearest", g, 7).tolist() == [7, -7]
    with pytest.raises(ValueError, match="NaN"):
        quantized_counts(torch.tensor([float("nan")]), 0.01, "nearest", g, 7)


# --------------------------------------------------------------------------------------------------
# ideal devices: the algorithms' float recurrences
# --------------------------------------------------------------------------------------------------


def test_on_ideal_devices_sgd_and_shd_follow_their_float_recurrences():
    """Symmetric constant-step devices with a fine step: SGD is w <- w - eta g, SHD the symplectic Euler map."""
    device = ConstantStepDevice(w_min=-2.0, w_max=2.0, dw_min=1e-4)
    c_arr, a_arr, g = arrays(device, (3,))
    c0 = torch.tensor([0.5, -0.3, 0.0], dtype=F64)
    # SGD on E = (w - c0)^2: w_k - c0 = (1 - 2 eta)^k (w_0 - c0)
    sgd = PulsedSGDConfig(lr=0.05)
    w = torch.zeros(3, dtype=F64)
    for _ in range(40):
        w = sgd_step(c_arr, w, 2 * (w - c0), sgd, g)
    assert torch.allclose(w - c0, (1 - 2 * 0.05) ** 40 * (0 - c0), atol=5e-4)
    # SHD: a <- a - eta_A g(c); c <- c + eta_C a (new a), over about one period
    cfg = SHDConfig(lr_a=0.05, lr_c=0.05)
    a, c = symmetry_point(a_arr).clone(), torch.zeros(3, dtype=F64)
    a_f, c_f = np.zeros(3), np.zeros(3)
    explicit_a, explicit_c = np.zeros(3), np.zeros(3)  # the wrong (explicit Euler) order, which gains energy
    steps = int(2 * math.pi / math.sqrt(2 * 0.05 * 0.05))
    for _ in range(steps):
        a, c = shd_step(a_arr, a, c_arr, c, 2 * (c - c0), cfg, g)
        a_f = a_f - 0.05 * 2 * (c_f - c0.numpy())
        c_f = c_f + 0.05 * a_f
        explicit_a, explicit_c = explicit_a - 0.05 * 2 * (explicit_c - c0.numpy()), explicit_c + 0.05 * explicit_a
    assert np.allclose(read_weights(a_arr, a).numpy(), a_f, atol=3e-3) and np.allclose(c.numpy(), c_f, atol=3e-3)
    assert np.abs(c.numpy() - explicit_c).max() > 0.03  # the check can tell the orders apart
    assert np.abs(c_f - c0.numpy()).max() > 0.2  # and the ideal trajectory is far from having converged


# --------------------------------------------------------------------------------------------------
# plain SGD's fixed point on an asymmetric soft-bounds device
# --------------------------------------------------------------------------------------------------


def _sgd_fixed_point(c0, sigma, lr, dw, up_down, lo=-1.0, hi=1.0):
    """Root of the mean drift of pulsed SGD on E = (w - y)^2, y ~ N(c0, sigma^2), soft bounds, stochastic rounding.

    Desired change x ~ N(mu, s^2), mu = -2 lr (w - c0), s = 2 lr sigma; stochastic rounding makes the pulse
    counts n = floor(u) or floor(u) + 1 (u = x / dw) with E[n] = u, and n pulses move a soft-bounds device
    exactly to w_max - (w_max - w)(1 - dw+/h)^n (up) or w_min + (w - w_min)(1 - dw-/h)^|n| (down).
    The mean of that change over x (a fine quadrature) is zero at the fixed point (bisection on w).
    """
    h = (hi - lo) / 2
    p, q = dw * (1 + up_down) / h, dw * (1 - up_down) / h
    x = np.linspace(-8, 8, 20001)
    weight = np.exp(-0.5 * x**2)
    weight /= weight.sum()

    def change(w, n):
        return np.where(n >= 0, (hi - w) * (1 - (1 - p) ** np.abs(n)), -(w - lo) * (1 - (1 - q) ** np.abs(n)))

    def drift(w):
        u = (-2 * lr * (w - c0) + 2 * lr * sigma * x) / dw
        low = np.floor(u)
        frac = u - low
        return float(np.sum(weight * ((1 - frac) * change(w, low) + frac * change(w, low + 1))))

    a, b = lo + 1e-9, hi - 1e-9
    for _ in range(100):
        m = 0.5 * (a + b)
        a, b = (m, b) if drift(m) > 0 else (a, m)
    return 0.5 * (a + b)


def test_pulsed_sgd_settles_at_the_closed_form_fixed_point_between_the_optimum_and_the_symmetry_point():
    up_down, c0, sigma, lr = 0.3, -0.3, 0.5, 0.01
    device = SoftBoundsDevice(w_min=-1.0, w_max=1.0, dw_min=0.005, up_down=up_down)
    arr, _, g = arrays(device, (1000,))
    w_sym = float(symmetry_point(arr)[0])
    assert w_sym == pytest.approx(0.3)  # (dw+ w_max + dw- w_min) / (dw+ + dw-)
    w = torch.full((1000,), c0, dtype=F64)
    cfg = PulsedSGDConfig(lr=lr)
    total, count = torch.zeros(1000, dtype=F64), 0
    for step in range(3000):
        y = c0 + sigma * torch.randn(1000, generator=g, dtype=F64)
        w = sgd_step(arr, w, 2 * (w - y), cfg, g)
        if step >= 1000:
            total += w
            count += 1
    mean = (total / count).mean().item()
    expected = _sgd_fixed_point(c0, sigma, lr, 0.005, up_down)
    assert c0 + 0.1 < expected < w_sym  # a bias of over a sixth of the distance, towards the symmetry point
    assert mean == pytest.approx(expected, abs=0.004)


# --------------------------------------------------------------------------------------------------
# SHD: damped by asymmetry, undamped without it
# --------------------------------------------------------------------------------------------------


def _shd_run(device, steps, c0=0.5, lr=0.04):
    c_arr, a_arr, g = arrays(device, (64,))
    cfg = SHDConfig(lr_a=lr, lr_c=lr)
    a, c = symmetry_point(a_arr).clone(), torch.zeros(64, dtype=F64)

    def energy():
        return (c - c0).square() + kinetic_energy(read_weights(a_arr, a), cfg)

    h0, energies, errors = energy(), [], []
    for _ in range(steps):
        a, c = shd_step(a_arr, a, c_arr, c, 2 * (c - c0), cfg, g)
        energies.append((energy() / h0).mean().item())
        errors.append((c - c0).abs().mean().item())
    return np.array(energies), np.array(errors)


def test_shd_with_asymmetric_soft_bounds_devices_converges_to_the_optimum():
    energies, errors = _shd_run(SoftBoundsDevice(w_min=-1.0, w_max=1.0, dw_min=0.002), 2000)
    assert energies[-200:].max() < 0.01  # the Hamiltonian decays by two orders
    assert errors[-200:].mean() < 0.03  # C at C0 = 0.5 to within a few percent of its starting distance


def test_shd_with_symmetric_constant_step_devices_keeps_oscillating():
    energies, errors = _shd_run(ConstantStepDevice(w_min=-1.0, w_max=1.0, dw_min=0.002), 2000)
    period = int(2 * math.pi / math.sqrt(2 * 0.04 * 0.04))
    assert 2000 > 8 * period
    assert energies.min() > 0.7  # no friction: the energy stays near its start over eight periods
    assert errors[-period:].max() > 0.4  # C still swings out to about the starting distance
