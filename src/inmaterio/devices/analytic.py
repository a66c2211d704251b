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

from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

import inmaterio
from inmaterio.config import StrictModel, validate_config
from inmaterio.devices.base import Device, Electrode, Measurement
from inmaterio.random_streams import numpy_generator

__all__ = ["AnalyticDevice", "AnalyticDeviceConfig"]


class AnalyticDeviceConfig(StrictModel):
    """Parameters of :class:`AnalyticDevice`; its spec in the device registry (``type: analytic``)."""

    type: Literal["analytic"] = "analytic"
    n_activation: int = Field(7, ge=2, le=64, description="activation electrodes")
    low_v: float = Field(-1.2, description="lower end of every activation electrode's range, V")
    high_v: float = Field(0.6, description="upper end of every activation electrode's range, V")
    amplitude_na: float = Field(100.0, gt=0, description="current scale, nA")
    noise_na: float = Field(0.0, ge=0, description="standard deviation of the additive Gaussian noise, nA")
    seed: int = Field(0, ge=0, description="selects the weights and seeds the noise")

    @model_validator(mode="after")
    def _check_range(self) -> AnalyticDeviceConfig:
        if not self.low_v < self.high_v:
            raise ValueError(f"low_v {self.low_v} V must be below high_v {self.high_v} V")
        return self


class AnalyticDevice(Device):
    """Closed-form device for tests and examples.

    The parameters are validated by :class:`AnalyticDeviceConfig`; a bad one
    raises :class:`~inmaterio.errors.ConfigError` naming it.

    Parameters
    ----------
    n_activation : number of activation electrodes (2 to 64).
    low_v, high_v : voltage range of every activation electrode, volts.
    amplitude_na : current scale in nA.
    noise_na : standard deviation of the additive Gaussian noise, nA.
    seed : selects the weights and seeds the noise.
    """

    #: tanh(0) = 0: no current with every electrode at 0 V
    zero_bias_current_na = 0.0

    def __init__(
        self,
        n_activation: int = 7,
        low_v: float = -1.2,
        high_v: float = 0.6,
        amplitude_na: float = 100.0,
        noise_na: float = 0.0,
        seed: int = 0,
    ) -> None:
        params = dict(
            n_activation=n_activation, low_v=low_v, high_v=high_v, amplitude_na=amplitude_na, noise_na=noise_na, seed=seed
        )
        self.config = validate_config(AnalyticDeviceConfig, params, source="the AnalyticDevice parameters")
        c = self.config
        self.electrodes = tuple(Electrode(f"e{k}", c.low_v, c.high_v) for k in range(c.n_activation))
        self.readout_name = f"e{c.n_activation}"
        self.amplitude_na = c.amplitude_na
        self.noise_na = c.noise_na
        self.seed = c.seed
        rng = np.random.default_rng(c.seed)
        self.weights = rng.normal(0.0, 1.0, c.n_activation) / np.sqrt(c.n_activation)
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
        return {**self.config.model_dump(mode="json"), "package_version": inmaterio.__version__}
