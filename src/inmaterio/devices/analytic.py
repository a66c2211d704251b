"""A fast analytic device: a smooth, non-linear closed-form current with optional noise.

Used where a test or an example needs a :class:`~inmaterio.devices.base.Device`
that answers in microseconds with a known ground truth (the physics-level
:class:`~inmaterio.devices.HoppingDevice` takes milliseconds per point).

The current, in nA, for voltages ``v`` (volts) is::

    I(v) = amplitude_na * tanh(w . v + c * v_0 * v_1)        (noise-free part)

with ``w`` a fixed vector of weights drawn from ``seed`` and ``c`` a coupling
that makes electrodes 0 and 1 interact (an XOR-like term). Measurement noise
is Gaussian with standard deviation ``noise_na`` (reported as the standard
error), drawn from the call's random stream (``seed`` and
:meth:`~inmaterio.devices.base.Device.random_streams`), so that runs repeat.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inmaterio.devices.base import Device, Electrode, Measurement
from inmaterio.random_streams import numpy_generator

__all__ = ["AnalyticDevice"]


class AnalyticDevice(Device):
    """Closed-form device for tests and examples.

    Parameters
    ----------
    n_activation : number of activation electrodes (>= 2).
    low_v, high_v : voltage range of every activation electrode, volts.
    amplitude_na : current scale in nA.
    noise_na : standard deviation of the additive Gaussian noise, nA.
    seed : selects the weights and seeds the noise.
    """

    def __init__(
        self,
        n_activation: int = 7,
        low_v: float = -1.2,
        high_v: float = 0.6,
        amplitude_na: float = 100.0,
        noise_na: float = 0.0,
        seed: int = 0,
    ) -> None:
        if n_activation < 2:
            raise ValueError(f"n_activation must be >= 2, got {n_activation}")
        if noise_na < 0:
            raise ValueError(f"noise_na must be >= 0 nA, got {noise_na}")
        self.electrodes = tuple(Electrode(f"e{k}", low_v, high_v) for k in range(n_activation))
        self.readout_name = f"e{n_activation}"
        self.amplitude_na = float(amplitude_na)
        self.noise_na = float(noise_na)
        self.seed = int(seed)
        rng = np.random.default_rng(seed)
        self.weights = rng.normal(0.0, 1.0, n_activation) / np.sqrt(n_activation)
        self.coupling = 1.5

    def true_current(self, voltages: np.ndarray) -> np.ndarray:
        """Noise-free current in nA, ``(batch,)``, for validated voltages ``(batch, n)`` V."""
        x = voltages @ self.weights + self.coupling * voltages[:, 0] * voltages[:, 1]
        return self.amplitude_na * np.tanh(x)

    def _measure(self, voltages: np.ndarray) -> Measurement:
        current = self.true_current(voltages)
        if self.noise_na > 0:
            rng = numpy_generator(self.seed, "noise", *self.next_stream_key())
            current = current + rng.normal(0.0, self.noise_na, current.shape)
        return Measurement(current, np.full(current.shape, self.noise_na))

    def describe(self) -> dict[str, Any]:
        return {
            "type": "AnalyticDevice",
            "n_activation": self.n_activation,
            "range_v": [self.electrodes[0].low_v, self.electrodes[0].high_v],
            "amplitude_na": self.amplitude_na,
            "noise_na": self.noise_na,
            "seed": self.seed,
        }
