"""The simulated DAQ against closed forms, and the calibration that makes plateaus long enough.

Independent truths: the RC step response ``V (1 - exp(-t / tau))`` and its
decay (electrode settling and amplifier bandwidth), the analytic device's
closed-form current (``AnalyticDevice.true_current``), an ADC's quantisation
grid, the configured latency, offset and drift.
"""

import numpy as np
import pytest

from inmaterio.devices import AnalyticDevice
from inmaterio.devices.instruments import (
    InstrumentDevice,
    ReadoutClippingError,
    SafetyConfig,
    SimulatedDAQ,
    SimulatedDAQConfig,
    calibrate,
)
from inmaterio.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FAST = SafetyConfig(hard_limit_v=1.5, max_ramp_v_per_s=1e4)  # 10 V per sample at 1 kHz: steps allowed
RATE = 1000.0
ANALYTIC = {"type": "analytic", "n_activation": 3, "low_v": -1.0, "high_v": 1.0, "amplitude_na": 100.0}


def daq(safety=FAST, **changes) -> SimulatedDAQ:
    params = {"device": ANALYTIC, "sample_rate_hz": RATE, "adc_bits": None, **changes}
    return SimulatedDAQ(SimulatedDAQConfig(**params), safety)


def step_waveform(v: np.ndarray, hold: int, after: int) -> np.ndarray:
    """(1 + hold + after, n): rest, a step to ``v`` held ``hold`` samples, a step back to 0 V for ``after`` samples."""
    return np.concatenate([np.zeros((1, len(v))), np.repeat(v[None, :], hold, axis=0), np.zeros((after, len(v)))])


def test_settling_matches_the_rc_closed_form():
    taus = np.array([0.002, 0.005, 0.0])
    b = daq(settling_tau_s=taus.tolist())
    v = np.array([0.8, -0.6, 0.3])
    hold, after = 40, 30
    w = step_waveform(v, hold, after)
    k = np.arange(1, hold + 1)[:, None] / RATE  # time since the step, at the end of each sample period
    with np.errstate(divide="ignore", over="ignore"):
        rise = np.where(taus > 0, 1 - np.exp(-k / np.where(taus > 0, taus, 1)), 1.0)
    expected_rise = v * rise
    m = np.arange(1, after + 1)[:, None] / RATE
    expected_fall = expected_rise[-1] * np.where(taus > 0, np.exp(-m / np.where(taus > 0, taus, 1)), 0.0)
    u = b.electrode_voltages(w)
    np.testing.assert_allclose(u[1 : hold + 1], expected_rise, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(u[hold + 1 :], expected_fall, rtol=1e-10, atol=1e-15)
    # the readings are the device's closed-form current of those voltages, through the gain
    reading = b.play(w)[:, 0] * b.config.gain_na_per_v
    truth = AnalyticDevice(**{k: v for k, v in ANALYTIC.items() if k != "type"})
    expected = truth.true_current(np.concatenate([np.zeros((1, 3)), expected_rise, expected_fall]))
    np.testing.assert_allclose(reading, expected, rtol=1e-10, atol=1e-12)


def test_amplifier_bandwidth_is_a_first_order_low_pass():
    f_c = 50.0
    b = daq(amplifier_bandwidth_hz=f_c)
    v = np.array([0.5, 0.0, 0.0])
    w = step_waveform(v, 60, 1)
    reading = b.play(w)[:, 0] * b.config.gain_na_per_v
    i_step = AnalyticDevice(**{k: v for k, v in ANALYTIC.items() if k != "type"}).true_current(v[None, :])[0]
    t = np.arange(1, 61) / RATE
    np.testing.assert_allclose(reading[1:61], i_step * (1 - np.exp(-2 * np.pi * f_c * t)), rtol=1e-10)


def test_latency_offset_drift_and_quantisation():
    w = step_waveform(np.array([0.5, -0.2, 0.1]), 20, 10)
    plain = daq().play(w)[:, 0]
    late = daq(latency_samples=7).play(w)[:, 0]
    np.testing.assert_array_equal(late[7:], plain[:-7])
    np.testing.assert_array_equal(late[:7], 0.0)
    offset = daq(amplifier_offset_v=0.01).play(np.zeros((5, 3)))[:, 0]
    np.testing.assert_allclose(offset, 0.01, rtol=1e-12)
    drifting = daq(drift_v_per_s=0.5)
    first, second = drifting.play(np.zeros((100, 3)))[:, 0], drifting.play(np.zeros((100, 3)))[:, 0]
    np.testing.assert_allclose(second - first, 0.5 * 100 / RATE, rtol=1e-9)  # the clock kept running
    quantised = daq(adc_bits=12).play(w)[:, 0]
    lsb = 20.0 / 2**12
    grid = (quantised + 10.0) / lsb
    np.testing.assert_allclose(grid, np.round(grid), atol=1e-9)
    assert np.max(np.abs(quantised - plain)) <= lsb / 2 + 1e-12


def test_clipping_is_detected():
    b = daq(gain_na_per_v=5.0)  # 100 nA at most / 5 nA per V = 20 V: beyond the 10 V ADC range
    w = step_waveform(np.array([1.0, 1.0, 1.0]), 10, 1)
    with pytest.raises(ReadoutClippingError, match=r"readout 'e3' clipped: \d+ of 12 sample\(s\) .* \[-10.0, 10.0\] V"):
        b.play(w)
    assert np.all(b.output_v == 0.0)


def test_noise_is_keyed_and_has_its_size():
    b = daq(adc_noise_v=0.01)
    zeros = np.zeros((4000, 3))
    a, again, other = b.play(zeros, ("k", 1)), b.play(zeros, ("k", 1)), b.play(zeros, ("k", 2))
    np.testing.assert_array_equal(a, again)
    assert not np.any(a == other)
    assert abs(a.std() - 0.01) < 0.001


def test_bad_configs_name_the_field():
    with pytest.raises(ConfigError, match="settling_tau_s has 2 values"):
        daq(settling_tau_s=[0.001, 0.002])
    with pytest.raises(ConfigError, match=r"limits_v of electrode 'e1' \[-2.0, 0.5\] V must be an interval inside"):
        daq(limits_v={"e1": (-2.0, 0.5)})
    with pytest.raises(ConfigError, match=r"names electrode\(s\) \['x'\]"):
        daq(limits_v={"x": (-0.5, 0.5)})
    b = daq(limits_v={"e1": (-0.5, 0.5)})
    assert [(c.low_v, c.high_v) for c in b.activation] == [(-1.0, 1.0), (-0.5, 0.5), (-1.0, 1.0)]


SLOW = {"device": ANALYTIC, "sample_rate_hz": RATE, "adc_bits": None, "settling_tau_s": [0.003, 0.008, 0.005]}
RAMP = {"hard_limit_v": 1.5, "max_ramp_v_per_s": 50.0}  # 0.05 V per sample


def test_short_plateaus_measure_wrong_currents_and_the_calibration_fixes_them():
    device = InstrumentDevice({"backend": {"kind": "simulated", **SLOW}, "safety": RAMP, "settle_samples": 0,
                               "average_samples": 2})  # fmt: skip
    points = np.random.default_rng(0).uniform(-1.0, 1.0, (30, 3))
    truth = device.backend.device.true_current(points)
    span = truth.max() - truth.min()
    error_short = np.max(np.abs(device.measure(points) - truth))
    assert error_short > 0.05 * span, f"too-short plateaus should be visibly wrong: {error_short:.3g} nA of {span:.3g}"

    tolerance = 0.002
    report = calibrate(device, tolerance=tolerance, hold_samples=300)
    settle = report.calibration.settle_samples
    # the slowest electrode (tau = 8 ms = 8 samples) needs about tau * ln(1 / tolerance) samples
    assert 0.5 * 8 * np.log(1 / tolerance) <= settle <= 1.5 * 8 * np.log(1 / tolerance), report.to_dict()
    assert report.settle_samples_per_electrode["e1"] == settle
    assert report.settle_samples_per_electrode["e0"] < settle and report.recommended_plateau_samples == settle + 2
    assert report.calibration.latency_samples == 0
    calibrated = device.with_calibration(report.calibration)
    assert calibrated.config.settle_samples == settle
    error_settled = np.max(np.abs(calibrated.measure(points) - truth))
    # what is left is at most the tolerance of the largest change between two points
    assert error_settled < tolerance * 2 * span, f"{error_settled:.3g} nA left of a {span:.3g} nA span"
    assert error_settled < error_short / 20


def test_calibration_of_a_slow_weak_electrode_on_a_noisy_device_reads_its_hold_at_the_common_latency():
    """A noisy device: a slow electrode with a small step crosses the noise threshold samples after the DAQ's latency.
    Its hold must still be read from the common latency (read from its own onset, it ran into the ramp back to 0 V
    and the calibration refused it whatever the hold); the recommendation then settles every electrode."""
    backend = {"kind": "simulated", "device": {"type": "analytic", "n_activation": 7, "amplitude_na": 100.0, "noise_na": 0.05,
               "seed": 0}, "sample_rate_hz": RATE, "settling_tau_s": [0.002, 0.003, 0.004, 0.008, 0.005, 0.003, 0.002],
               "gain_na_per_v": 50.0, "amplifier_bandwidth_hz": 2000.0, "amplifier_offset_v": 0.01, "adc_noise_v": 0.0005,
               "adc_bits": 16, "latency_samples": 3, "seed": 0}  # fmt: skip
    device = InstrumentDevice({"backend": backend, "safety": RAMP, "settle_samples": 0, "average_samples": 4})
    report = calibrate(device, hold_samples=300)
    assert report.calibration.latency_samples == 3
    per = report.settle_samples_per_electrode
    # tau = 8 ms (8 samples) is the slowest: it needs the most samples, and about tau * ln(1 / tolerance) at most
    assert per["e3"] == max(per.values()) <= 1.5 * 8 * np.log(1 / report.tolerance), report.to_dict()
    points = np.random.default_rng(2).uniform(-0.5, 0.5, (20, 7))
    truth = device.backend.device.true_current(points)
    calibrated = device.with_calibration(report.calibration)
    assert np.max(np.abs(calibrated.measure(points) - truth)) < np.max(np.abs(device.measure(points) - truth)) / 5


def test_calibration_recovers_latency_and_offset():
    config = {**SLOW, "settling_tau_s": 0.0, "latency_samples": 5, "amplifier_offset_v": 0.02, "adc_noise_v": 1e-4,
              "adc_bits": 16}  # fmt: skip
    device = InstrumentDevice({"backend": {"kind": "simulated", **config}, "safety": RAMP, "average_samples": 4})
    points = np.random.default_rng(1).uniform(-1.0, 1.0, (10, 3))
    truth = device.backend.device.true_current(points)
    wrong = np.max(np.abs(device.measure(points) - truth))
    report = calibrate(device, tolerance=0.01, hold_samples=60)
    assert report.calibration.latency_samples == 5
    np.testing.assert_allclose(report.calibration.offset_na, [0.02 * 50.0], atol=5 * 1e-4 * 50 / np.sqrt(200))
    calibrated = device.with_calibration(report.calibration)
    right = np.max(np.abs(calibrated.measure(points) - truth))
    assert right < 0.05 and wrong > 0.5, (right, wrong)


def test_smg_acquisition_runs_unchanged_on_the_simulated_daq(tmp_path):
    """examples/instruments/smg_simulated_daq.yaml, shrunk: every acquired point is in the measurement file."""
    from pathlib import Path

    import h5py
    import yaml

    from inmaterio.config import validate_config
    from inmaterio.smg import SMGConfig, run_smg

    example = Path(__file__).resolve().parents[1] / "examples" / "instruments" / "smg_simulated_daq.yaml"
    data = yaml.safe_load(example.read_text())
    data["device"]["measurement_file"] = str(tmp_path / "smg.h5")
    data["sampling"]["n_samples"], data["test_sampling"]["n_samples"] = 300, 100
    data["training"].update(max_epochs=2, hidden_sizes=[8])
    data.update(consistency_repeats=2, consistency_points=20, iv_points=5)
    summary = run_smg(validate_config(SMGConfig, data), tmp_path / "run", progress=False, notify=lambda *_: None)
    assert summary["device"]["type"] == "instrument"
    with h5py.File(tmp_path / "smg.h5", "r") as f:  # one device object: one session; every waveform in it
        (session,) = f.values()
        points = np.concatenate([g["points_v"][()] for g in session.values()])
        currents = np.concatenate([g["point_current_na"][()] for g in session.values()])
    assert len(points) >= 300 + 100 and points.shape[1] == 7 and np.all(np.isfinite(currents))
    # the acquired training set holds exactly the measured points (first ones of the file, in order)
    truth = AnalyticDevice(**{k: v for k, v in data["device"]["backend"]["device"].items() if k != "type"})
    assert np.abs(currents[:300] - truth.true_current(points[:300])).max() < 2.0  # ADC noise 0.25 nA/sample, settled
