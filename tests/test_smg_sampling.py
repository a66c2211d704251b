"""Sampling plans: ranges, wave frequencies, Latin hypercube strata, config validation."""

import numpy as np
import pytest

from inmaterio.errors import ConfigError
from inmaterio.smg.config import PostprocessConfig, SamplingConfig, SMGConfig, TrainConfig
from inmaterio.smg.sampling import first_primes, sample_plan, wave_frequencies_hz

RANGES = np.array([[-1.2, 0.6], [-0.7, 0.3], [0.0, 1.0], [-2.0, -1.5]])


@pytest.mark.parametrize("kind", ["sine", "triangle", "uniform", "lhs"])
def test_plans_stay_inside_ranges(kind):
    v = sample_plan(SamplingConfig(kind=kind, n_samples=5000, seed=3), RANGES)
    assert v.shape == (5000, 4) and v.dtype == np.float64
    assert (v >= RANGES[:, 0]).all() and (v <= RANGES[:, 1]).all()
    # the plan covers (nearly) the whole range of every electrode
    span = v.max(axis=0) - v.min(axis=0)
    np.testing.assert_array_less(0.95 * (RANGES[:, 1] - RANGES[:, 0]), span)


@pytest.mark.parametrize("kind", ["sine", "triangle", "uniform", "lhs"])
def test_plans_are_reproducible_and_seeded(kind):
    a = sample_plan(SamplingConfig(kind=kind, n_samples=300, seed=1), RANGES)
    b = sample_plan(SamplingConfig(kind=kind, n_samples=300, seed=1), RANGES)
    c = sample_plan(SamplingConfig(kind=kind, n_samples=300, seed=2), RANGES)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_first_primes():
    assert first_primes(8).tolist() == [2, 3, 5, 7, 11, 13, 17, 19]


@pytest.mark.parametrize("kind", ["sine", "triangle"])
def test_wave_frequency_ratios_are_sqrt_of_prime_ratios(kind):
    config = SamplingConfig(kind=kind, n_samples=2**16, seed=0, base_frequency_hz=0.5, sample_rate_hz=20.0)
    v = sample_plan(config, RANGES)
    spectrum = np.abs(np.fft.rfft(v - v.mean(axis=0), axis=0))
    freqs = np.fft.rfftfreq(len(v), d=1 / config.sample_rate_hz)
    peaks = freqs[np.argmax(spectrum, axis=0)]
    resolution = freqs[1]
    expected = 0.5 * np.sqrt([2.0, 3.0, 5.0, 7.0])
    np.testing.assert_allclose(peaks, expected, atol=resolution)
    primes = np.array([2, 3, 5, 7])
    for i in range(4):
        for j in range(4):
            np.testing.assert_allclose(peaks[i] / peaks[j], np.sqrt(primes[i] / primes[j]), rtol=2e-3)
    np.testing.assert_allclose(wave_frequencies_hz(0.5, 4), expected)


def test_lhs_has_one_sample_per_stratum():
    n = 257
    v = sample_plan(SamplingConfig(kind="lhs", n_samples=n, seed=5), RANGES)
    strata = np.floor((v - RANGES[:, 0]) / (RANGES[:, 1] - RANGES[:, 0]) * n).astype(int)
    for k in range(RANGES.shape[0]):
        assert sorted(strata[:, k].tolist()) == list(range(n))


def test_nyquist_violation_is_named():
    with pytest.raises(ConfigError, match="sample_rate_hz"):
        sample_plan(SamplingConfig(kind="sine", n_samples=10, base_frequency_hz=5.0, sample_rate_hz=10.0), RANGES)


def test_bad_ranges_are_named():
    with pytest.raises(ConfigError, match="electrode 1"):
        sample_plan(SamplingConfig(kind="uniform", n_samples=10), np.array([[0.0, 1.0], [1.0, 0.0]]))


def test_config_validation():
    with pytest.raises(ValueError, match="sum to 1"):
        PostprocessConfig(split=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="low < high"):
        PostprocessConfig(clip_na=(5.0, -5.0))
    with pytest.raises(ValueError, match="n_samples"):
        SamplingConfig(n_samples=0)
    with pytest.raises(ValueError, match="allowed"):
        TrainConfig(activation="sigmoid")
    with pytest.raises(ValueError, match="extra"):
        SamplingConfig(n_samples=10, phase_seed=3)
    with pytest.raises(ValueError, match="repeats the training data"):
        SMGConfig(
            device={"type": "analytic"},
            sampling={"kind": "uniform", "n_samples": 10, "seed": 1},
            test_sampling={"kind": "uniform", "n_samples": 10, "seed": 1},
        )
