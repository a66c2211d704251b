"""Sampling plans: which activation voltages to measure.

A plan is an ``(n_samples, n_electrodes)`` float64 array of volts with every
column inside its electrode's range ``ranges[k] = [low_k, high_k]``.

Waves (``sine``, ``triangle``), as in brains-py's SMG but seeded: electrode
``k`` follows

    v_k(t) = c_k + a_k * w(f_k t + phi_k),   t = i / sample_rate_hz,

with ``c_k`` the range centre, ``a_k`` half the range, ``w`` a unit wave of
period 1 (``sin(2 pi x)`` or a triangle), ``f_k = base_frequency_hz *
sqrt(p_k)`` (``p_k`` the k-th prime: the ratios ``sqrt(p_i / p_j)`` are
irrational, so the trajectory never closes and fills the box) and phases
``phi_k`` uniform in [0, 1) drawn from the seed. ``uniform`` draws
independent uniform points, ``lhs`` a Latin hypercube
(:class:`scipy.stats.qmc.LatinHypercube`): exactly one sample per stratum
``[j/n, (j+1)/n)`` of every electrode's range.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import qmc

from inmaterio.errors import ConfigError
from inmaterio.smg.config import SamplingConfig

__all__ = ["sample_plan", "wave_frequencies_hz", "first_primes"]


def first_primes(n: int) -> np.ndarray:
    """The first ``n`` primes (2, 3, 5, ...) as an int array."""
    primes: list[int] = []
    candidate = 2
    while len(primes) < n:
        if all(candidate % p for p in primes if p * p <= candidate):
            primes.append(candidate)
        candidate += 1
    return np.array(primes, dtype=np.int64)


def wave_frequencies_hz(base_frequency_hz: float, n_electrodes: int) -> np.ndarray:
    """Frequencies ``base_frequency_hz * sqrt(p_k)`` in Hz, shape ``(n_electrodes,)``."""
    return base_frequency_hz * np.sqrt(first_primes(n_electrodes).astype(np.float64))


def _check_ranges(ranges: np.ndarray) -> np.ndarray:
    ranges = np.asarray(ranges, dtype=np.float64)
    if ranges.ndim != 2 or ranges.shape[1] != 2 or ranges.shape[0] == 0:
        raise ConfigError(f"voltage ranges must have shape (n_electrodes, 2), got {ranges.shape}")
    bad = ~(np.isfinite(ranges).all(axis=1) & (ranges[:, 0] < ranges[:, 1]))
    if bad.any():
        k = int(np.argmax(bad))
        raise ConfigError(f"electrode {k} range {ranges[k].tolist()} V is not an interval with low < high")
    return ranges


def _unit_wave(config: SamplingConfig, n_electrodes: int) -> np.ndarray:
    """Waves in [-1, 1], shape ``(n_samples, n_electrodes)``."""
    freqs = wave_frequencies_hz(config.base_frequency_hz, n_electrodes)
    nyquist = config.sample_rate_hz / 2
    if freqs[-1] >= nyquist:
        raise ConfigError(
            f"sampling.sample_rate_hz = {config.sample_rate_hz} Hz is too low: electrode {n_electrodes - 1} oscillates "
            f"at {freqs[-1]:.4g} Hz, which needs a sample rate above {2 * freqs[-1]:.4g} Hz (Nyquist)"
        )
    phases = np.random.default_rng(config.seed).uniform(0.0, 1.0, n_electrodes)
    t_s = np.arange(config.n_samples, dtype=np.float64) / config.sample_rate_hz
    cycles = t_s[:, None] * freqs[None, :] + phases[None, :]
    if config.kind == "sine":
        return np.sin(2 * np.pi * cycles)
    frac = cycles - np.floor(cycles)
    return 1.0 - 4.0 * np.abs(frac - 0.5)  # triangle: -1 at frac 0, +1 at frac 0.5


def sample_plan(config: SamplingConfig, ranges: np.ndarray) -> np.ndarray:
    """Voltages to measure, ``(config.n_samples, n_electrodes)`` float64 V.

    Parameters
    ----------
    config : the sampling scheme, size and seed.
    ranges : ``(n_electrodes, 2)`` [low, high] V per electrode.

    Every value lies in ``[low_k, high_k]`` (waves are clipped by at most a
    rounding error at their crests).
    """
    ranges = _check_ranges(ranges)
    low, high = ranges[:, 0], ranges[:, 1]
    n = ranges.shape[0]
    if config.kind in ("sine", "triangle"):
        unit = _unit_wave(config, n)  # [-1, 1]
        v = (low + high) / 2 + (high - low) / 2 * unit
    elif config.kind == "uniform":
        v = np.random.default_rng(config.seed).uniform(low, high, size=(config.n_samples, n))
    else:  # lhs
        u = qmc.LatinHypercube(d=n, rng=np.random.default_rng(config.seed)).random(config.n_samples)
        v = low + (high - low) * u
    return np.clip(v, low, high)
