"""I-V sweeps against the analytic device's closed form; consistency check of exact, noisy and drifted devices."""

import numpy as np
import pytest

from inmaterio.devices import AnalyticDevice
from inmaterio.plots import plot_iv_curves
from inmaterio.smg.consistency import consistency_check
from inmaterio.smg.dataset import Dataset
from inmaterio.smg.iv import iv_curves, iv_dataset


class CountingDevice(AnalyticDevice):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def _measure(self, voltages):
        self.calls += 1
        return super()._measure(voltages)


def test_iv_curves_equal_closed_form(tmp_path):
    device = CountingDevice(n_activation=4)
    curves = iv_curves(device.measure_with_error, device.voltage_ranges, 21)
    assert device.calls == 1  # all sweeps in one batched call
    assert curves.sweep_v.shape == curves.current_na.shape == (4, 21)
    np.testing.assert_array_equal(curves.base_v, np.zeros(4))
    for k in range(4):
        v = np.linspace(-1.2, 0.6, 21)
        np.testing.assert_allclose(curves.sweep_v[k], v)
        # others at 0 V: the coupling term v0 * v1 vanishes, I = A tanh(w_k v)
        np.testing.assert_allclose(curves.current_na[k], 100.0 * np.tanh(device.weights[k] * v), rtol=1e-12)
    np.testing.assert_array_equal(curves.stderr_na, 0.0)
    fig = plot_iv_curves({"device": curves}, device.activation_names, tmp_path / "iv.png")
    assert (tmp_path / "iv.png").stat().st_size > 0 and len(fig.axes) >= 4


def test_iv_curves_with_base_voltages():
    device = AnalyticDevice(n_activation=3)
    base = np.array([0.3, -0.5, 5.0])  # the last is clipped into [-1.2, 0.6]
    curves = iv_curves(device.measure, device.voltage_ranges, 11, base_voltages=base)
    np.testing.assert_allclose(curves.base_v, [0.3, -0.5, 0.6])
    assert curves.stderr_na is None
    w, c = device.weights, device.coupling
    v = np.linspace(-1.2, 0.6, 11)
    expected_sweep_e1 = 100 * np.tanh(w[0] * 0.3 + w[1] * v + w[2] * 0.6 + c * 0.3 * v)
    np.testing.assert_allclose(curves.current_na[1], expected_sweep_e1, rtol=1e-12)


def reference_data(device, n=400):
    v = np.random.default_rng(0).uniform(-1.2, 0.6, size=(n, device.n_activation))
    m = device.measure_with_error(v)
    return Dataset(v, m.current_na, m.stderr_na)


def test_iv_sweeps_as_a_dataset_give_back_the_measured_points():
    device = AnalyticDevice(n_activation=3, noise_na=1.0)
    base = np.array([-0.2, 0.1, -0.5])
    curves = iv_curves(device.measure_with_error, device.voltage_ranges, 4, base_voltages=base)
    data = iv_dataset(curves)
    assert data.voltages_v.shape == (12, 3)
    np.testing.assert_array_equal(data.voltages_v[4:8, 1], curves.sweep_v[1])  # rows 4..7 sweep e1
    np.testing.assert_array_equal(data.voltages_v[4:8][:, [0, 2]], np.tile(base[[0, 2]], (4, 1)))
    np.testing.assert_array_equal(data.current_na, curves.current_na.reshape(-1))
    np.testing.assert_array_equal(data.stderr_na, curves.stderr_na.reshape(-1))
    exact = iv_dataset(iv_curves(device.true_current, device.voltage_ranges, 4, base_voltages=base))
    np.testing.assert_allclose(exact.current_na, device.true_current(exact.voltages_v))  # each row is its own point
    assert (exact.stderr_na == 0).all()


def test_noise_free_device_has_zero_drift():
    device = AnalyticDevice()
    report = consistency_check(device, reference_data(device), n_repeats=3, n_points=100)
    assert report["n_points"] == 100 and len(report["repeats"]) == 3
    for r in report["repeats"]:
        assert r["mean_diff_na"] == 0.0 and r["rms_diff_na"] == 0.0 and r["within_3_stderr"]
    assert report["consistent"] and report["max_abs_mean_diff_na"] == 0.0


def test_noisy_device_is_consistent_and_drifted_device_is_not():
    device = AnalyticDevice(noise_na=2.0)
    data = reference_data(device)
    report = consistency_check(device, data, n_repeats=2, n_points=400)
    assert report["consistent"]
    for r in report["repeats"]:
        assert r["rms_diff_over_stderr"] == pytest.approx(1.0, abs=0.15)  # two independent noises of 2 nA
    # a 10% gain drift moves the mean by 0.1 * mean(I) = -1.46 nA, ten standard errors of the mean (0.14 nA);
    # (a 3% drift sits at the 3-standard-error threshold and is found only about every other draw)
    drifted = AnalyticDevice(noise_na=2.0, amplitude_na=110.0)
    drift = consistency_check(drifted, data, n_repeats=1, n_points=400)
    assert not drift["consistent"]
    expected = 0.1 * np.mean(device.true_current(data.voltages_v))
    repeat = drift["repeats"][0]
    assert repeat["stderr_of_mean_na"] == pytest.approx(np.sqrt(400 * 2 * 2.0**2) / 400)
    assert abs(repeat["mean_diff_na"] - expected) < 4 * repeat["stderr_of_mean_na"]


def test_repeats_draw_independent_noise_the_same_in_every_run():
    """Repeat r is keyed by the reference signal and r: independent of the data's noise and of the other
    repeats, and the same whatever the device measured before."""
    device = AnalyticDevice(noise_na=2.0)
    data = reference_data(device)
    first = consistency_check(device, data, n_repeats=3, n_points=400)
    fresh = AnalyticDevice(noise_na=2.0)
    second = consistency_check(fresh, data, n_repeats=3, n_points=400)
    assert first == second
    diffs = [r["mean_diff_na"] for r in first["repeats"]]
    assert len(set(diffs)) == 3
