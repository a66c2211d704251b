"""A simulated DAQ: any :class:`~inmaterio.devices.base.Device` behind a realistic acquisition chain.

One sample period is ``dt = 1 / sample_rate_hz``. The DAC holds sample ``k``
of the waveform, ``v_k``, during ``[k dt, (k + 1) dt)``, and the ADC takes
reading ``k`` at the end of that period. Starting at rest (0 V), the chain is:

1. **Electrode settling** (first-order RC, time constant ``tau_j`` per
   electrode, exact for a piecewise-constant input)::

       u_j[k] = a_j u_j[k-1] + (1 - a_j) v_j[k],   a_j = exp(-dt / tau_j),   u_j[-1] = 0

   so a step to ``V`` at sample 0 reads ``u[k] = V (1 - exp(-(k + 1) dt / tau))``.
2. **The device**: ``i[k] = device.measure(u[k])`` nA (its own noise drawn from the call's stream).
3. **Amplifier**: output ``i / gain_na_per_v`` V plus an offset (and a linear drift with the
   instrument's running time), low-pass filtered at ``amplifier_bandwidth_hz`` (first order, the
   same recursion with ``tau = 1 / (2 pi f_c)``).
4. **Latency**: the reading is delayed by ``latency_samples`` samples (the first ones read the
   amplifier at rest).
5. **ADC**: Gaussian noise of ``adc_noise_v`` V, clipping to ``[adc_low_v, adc_high_v]``,
   quantisation to ``adc_bits`` bits over that range.

Noise comes from a numpy Generator keyed by ``(seed, "adc", *key)`` and the
device's noise from ``device.random_streams(*key)``, so the same key gives the
same numbers (see :mod:`inmaterio.devices.base`). Every waveform starts from
rest: the outputs end at 0 V and the simulation assumes the chain has settled
between calls (the drift's clock keeps running).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.signal import lfilter

from inmaterio.devices.base import Device
from inmaterio.devices.instruments.backend import MeasurementBackend
from inmaterio.devices.instruments.config import ActivationChannel, ReadoutChannel, SafetyConfig, SimulatedDAQConfig
from inmaterio.errors import ConfigError
from inmaterio.random_streams import Key, numpy_generator

__all__ = ["SimulatedDAQ", "first_order_response"]


def first_order_response(x: np.ndarray, tau_s: np.ndarray | float, sample_rate_hz: float) -> np.ndarray:
    """``y[k] = a y[k-1] + (1 - a) x[k]`` along axis 0 from ``y[-1] = 0``, ``a = exp(-dt / tau)`` per column.

    ``x (T, n)``; ``tau_s`` a number or ``(n,)`` seconds (0: ``y = x``). Returns ``(T, n)``.
    """
    x = np.asarray(x, dtype=np.float64)
    taus = np.broadcast_to(np.asarray(tau_s, dtype=np.float64), (x.shape[1],))
    y = np.empty_like(x)
    for j, tau in enumerate(taus):
        if tau == 0:
            y[:, j] = x[:, j]
        else:
            a = float(np.exp(-1.0 / (sample_rate_hz * tau)))
            y[:, j] = lfilter([1.0 - a], [1.0, -a], x[:, j])
    return y


class SimulatedDAQ(MeasurementBackend):
    """The simulated acquisition chain of the module docstring around ``config.device``.

    Parameters
    ----------
    config : the DAQ's parameters (:class:`SimulatedDAQConfig`).
    safety : the limits every waveform is checked against.
    device : the device to wrap; default: built from ``config.device`` through the registry.
    """

    def __init__(self, config: SimulatedDAQConfig, safety: SafetyConfig | None = None, device: Device | None = None) -> None:
        if device is None:
            from inmaterio.devices.registry import device_from_description

            device = device_from_description(config.device, source="simulated DAQ 'device'")
        self.config = config
        self.device = device
        limits = dict(config.limits_v or {})
        unknown = sorted(set(limits) - set(device.activation_names))
        if unknown:
            raise ConfigError(f"limits_v names electrode(s) {unknown}; the device has {device.activation_names}")
        activation = []
        for e in device.electrodes:
            low, high = limits.get(e.name, (e.low_v, e.high_v))
            if low < e.low_v or high > e.high_v or not low < high:
                raise ConfigError(
                    f"limits_v of electrode '{e.name}' [{low}, {high}] V must be an interval inside the device's "
                    f"range [{e.low_v}, {e.high_v}] V"
                )
            activation.append(ActivationChannel(electrode=e.name, channel=f"sim/ao{len(activation)}", low_v=low, high_v=high))
        readout = [
            ReadoutChannel(
                name=device.readout_name, channel="sim/ai0", gain_na_per_v=config.gain_na_per_v,
                low_v=config.adc_low_v, high_v=config.adc_high_v,
            )
        ]  # fmt: skip
        taus = np.atleast_1d(np.asarray(config.settling_tau_s, dtype=np.float64))
        if taus.size not in (1, device.n_activation):
            raise ConfigError(
                f"settling_tau_s has {taus.size} values; give one or one per electrode ({device.n_activation}: "
                f"{device.activation_names})"
            )
        self.tau_s = np.broadcast_to(taus, (device.n_activation,)).copy()
        super().__init__(activation, readout, config.sample_rate_hz, safety or SafetyConfig())
        #: samples played so far (the drift's clock)
        self.clock_samples = 0
        #: the outputs' last value, (n_activation,) V (0 at rest)
        self.output_v = np.zeros(device.n_activation)

    def electrode_voltages(self, waveform_v: np.ndarray) -> np.ndarray:
        """The settled electrode voltages ``(T, n)`` V the device sees for a waveform ``(T, n)`` V (step 1)."""
        return first_order_response(waveform_v, self.tau_s, self.sample_rate_hz)

    def _play(self, waveform_v: np.ndarray, key: tuple[Key, ...]) -> np.ndarray:
        c = self.config
        self.output_v = waveform_v[-1].copy()
        u = self.electrode_voltages(waveform_v)
        low, high = self.device.voltage_ranges[:, 0], self.device.voltage_ranges[:, 1]
        u = np.clip(u, low, high)  # an RC response of an in-range waveform stays in range; float rounding aside
        with self.device.random_streams("simulated daq", *key):
            current_na = self.device.measure(u)
        t_s = (self.clock_samples + np.arange(len(u))) / self.sample_rate_hz
        self.clock_samples += len(u)
        amplified_v = current_na / c.gain_na_per_v + c.amplifier_offset_v + c.drift_v_per_s * t_s
        if c.amplifier_bandwidth_hz is not None:
            rest = c.amplifier_offset_v + c.drift_v_per_s * t_s[0]
            tau = 1.0 / (2 * np.pi * c.amplifier_bandwidth_hz)
            amplified_v = rest + first_order_response((amplified_v - rest)[:, None], tau, self.sample_rate_hz)[:, 0]
        if c.latency_samples:
            at_rest = c.amplifier_offset_v + c.drift_v_per_s * t_s[0]
            amplified_v = np.concatenate([np.full(c.latency_samples, at_rest), amplified_v])[: len(u)]
        if c.adc_noise_v > 0:
            amplified_v = amplified_v + numpy_generator(c.seed, "adc", *key).normal(0.0, c.adc_noise_v, len(u))
        read_v = np.clip(amplified_v, c.adc_low_v, c.adc_high_v)
        if c.adc_bits is not None:
            lsb = (c.adc_high_v - c.adc_low_v) / 2**c.adc_bits
            read_v = np.clip(c.adc_low_v + np.round((read_v - c.adc_low_v) / lsb) * lsb, c.adc_low_v, c.adc_high_v)
        return read_v[:, None]

    def _zero_outputs(self) -> None:
        self.output_v = np.zeros(len(self.activation))

    def describe(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json")
