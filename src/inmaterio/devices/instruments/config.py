"""Typed configs of the lab instruments: channels, safety limits, calibration, the two backends, the device.

Units: volts (V), nanoamperes (nA), seconds (s), hertz (Hz). A readout's gain
``gain_na_per_v`` is the readout current in nA per volt seen by the ADC, i.e.
the inverse of the amplifier's transimpedance (a 100 MOhm transimpedance
amplifier gives 0.1 V per nA, so ``gain_na_per_v = 10``); brains-py calls the
same number ``amplification``. A negative gain describes an inverting amplifier.

This module imports nothing from the device registry at import time (the
registry imports it), and never imports ``nidaqmx``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_validator

from inmaterio.config import StrictModel

__all__ = [
    "ActivationChannel",
    "ReadoutChannel",
    "SafetyConfig",
    "Calibration",
    "SimulatedDAQConfig",
    "NIDAQConfig",
    "BackendSpec",
    "InstrumentDeviceConfig",
]


class ActivationChannel(StrictModel):
    """An analogue output driving one activation electrode.

    electrode : the electrode's name (a column of the voltages).
    channel : the physical channel, e.g. ``cDAQ1Mod3/ao8`` (free text on the simulated DAQ).
    low_v, high_v : the electrode's allowed voltage range, V (the safety layer refuses anything outside).
    """

    electrode: str = Field(min_length=1)
    channel: str = ""
    low_v: float
    high_v: float

    @model_validator(mode="after")
    def _interval(self) -> ActivationChannel:
        if not self.low_v < self.high_v:
            raise ValueError(f"electrode '{self.electrode}' range [{self.low_v}, {self.high_v}] V needs low_v < high_v")
        return self


class ReadoutChannel(StrictModel):
    """An analogue input reading one amplified readout current.

    name : the readout electrode's name.
    channel : the physical channel, e.g. ``cDAQ1Mod4/ai2``.
    gain_na_per_v : readout current in nA per volt at the ADC input (1 / transimpedance); non-zero.
    low_v, high_v : the ADC input range, V; a sample at either end is a clipped (saturated) reading.
    terminal : the input's terminal configuration (NI-DAQmx ``TerminalConfiguration``).
    """

    name: str = Field(min_length=1)
    channel: str = ""
    gain_na_per_v: float
    low_v: float = -10.0
    high_v: float = 10.0
    terminal: Literal["default", "rse", "nrse", "diff", "pseudo_diff"] = "default"

    @model_validator(mode="after")
    def _check(self) -> ReadoutChannel:
        if self.gain_na_per_v == 0:
            raise ValueError(f"readout '{self.name}' gain_na_per_v must be non-zero (nA per V at the ADC), got 0")
        if not self.low_v < self.high_v:
            raise ValueError(f"readout '{self.name}' ADC range [{self.low_v}, {self.high_v}] V needs low_v < high_v")
        return self


class SafetyConfig(StrictModel):
    """Limits every waveform passes before it reaches a channel (see :mod:`~inmaterio.devices.instruments.safety`).

    hard_limit_v : absolute limit on every output, V; no electrode range may exceed it.
    max_ramp_v_per_s : the largest change of any output between two samples, in V/s
        (V per sample times the sampling rate); the jump from and back to the resting 0 V counts.
    """

    hard_limit_v: float = Field(1.5, gt=0, le=10.0)
    max_ramp_v_per_s: float = Field(50.0, gt=0)


class Calibration(StrictModel):
    """What a calibration measured (:func:`~inmaterio.devices.instruments.calibrate`); recorded with every measurement.

    latency_samples : samples between writing a voltage and reading its effect (the read is shifted by it).
    offset_na : per readout channel, the current read with every output at 0 V (subtracted), nA; None = 0.
    settle_samples : samples to wait on a new operating point before averaging (the recommendation), or None.
    measured_at : UTC time of the calibration (ISO 8601), or None if never calibrated.
    """

    latency_samples: int = Field(0, ge=0)
    offset_na: list[float] | None = None
    settle_samples: int | None = Field(None, ge=0)
    measured_at: str | None = None


def _validated_wrapped_device(value: Any) -> dict[str, Any]:
    """A registered device spec (not an instrument) as a plain JSON mapping."""
    from inmaterio.devices.registry import device_spec_from_description

    if isinstance(value, dict) and value.get("type") == "instrument":
        raise ValueError("the simulated DAQ wraps a device of type 'analytic' or 'hopping', not another 'instrument'")
    spec = device_spec_from_description(value, source="simulated DAQ 'device'")
    return spec.model_dump(mode="json")


class SimulatedDAQConfig(StrictModel):
    """A simulated DAQ wrapping any registered device (see :mod:`~inmaterio.devices.instruments.simulated`).

    device : the device behind the DAQ (a spec, e.g. ``{type: analytic}`` or ``{type: hopping, seed: 0}``).
    sample_rate_hz : sampling rate of outputs and inputs (one shared clock), Hz.
    settling_tau_s : RC time constant of each electrode, s: one number for all, or one per electrode (0 = none).
    gain_na_per_v : readout current per ADC volt (nA/V), the amplifier's inverse transimpedance.
    amplifier_bandwidth_hz : -3 dB bandwidth of the amplifier (first order), Hz; None = unlimited.
    amplifier_offset_v : constant offset of the amplifier output, V (calibrated away as ``offset_na``).
    drift_v_per_s : linear drift of that offset with the instrument's running time (samples played / rate), V/s.
    adc_low_v, adc_high_v : ADC input range, V (readings clip there).
    adc_bits : ADC resolution over that range; None = no quantisation.
    adc_noise_v : standard deviation of the Gaussian ADC noise, V.
    latency_samples : samples between a write and the read that sees it.
    limits_v : optional narrower limits per electrode name, ``{e3: [-0.5, 0.5]}`` V (inside the device's ranges).
    seed : seeds the ADC noise (streams keyed as in :mod:`inmaterio.devices.base`).
    """

    kind: Literal["simulated"] = "simulated"
    device: dict[str, Any] = Field(default_factory=lambda: {"type": "analytic"})
    sample_rate_hz: float = Field(1000.0, gt=0)
    settling_tau_s: float | list[float] = 0.0
    gain_na_per_v: float = 50.0
    amplifier_bandwidth_hz: float | None = Field(None, gt=0)
    amplifier_offset_v: float = 0.0
    drift_v_per_s: float = 0.0
    adc_low_v: float = -10.0
    adc_high_v: float = 10.0
    adc_bits: int | None = Field(16, ge=2, le=32)
    adc_noise_v: float = Field(0.0, ge=0)
    latency_samples: int = Field(0, ge=0)
    limits_v: dict[str, tuple[float, float]] | None = None
    seed: int = Field(0, ge=0)

    @field_validator("device", mode="before")
    @classmethod
    def _device(cls, value: Any) -> dict[str, Any]:
        return _validated_wrapped_device(value)

    @field_validator("settling_tau_s")
    @classmethod
    def _taus(cls, value: float | list[float]) -> float | list[float]:
        values = value if isinstance(value, list) else [value]
        bad = [v for v in values if v < 0]
        if bad:
            raise ValueError(f"settling_tau_s must be >= 0 s, got {bad[0]}")
        return value

    @model_validator(mode="after")
    def _check(self) -> SimulatedDAQConfig:
        if self.gain_na_per_v == 0:
            raise ValueError("gain_na_per_v must be non-zero (nA per V at the ADC), got 0")
        if not self.adc_low_v < self.adc_high_v:
            raise ValueError(f"ADC range [{self.adc_low_v}, {self.adc_high_v}] V needs adc_low_v < adc_high_v")
        return self


_CHASSIS = re.compile(r"^/?(cDAQ\d+)", re.IGNORECASE)


class NIDAQConfig(StrictModel):
    """A National Instruments DAQ (see :mod:`~inmaterio.devices.instruments.nidaq`).

    setup : ``cdaq_to_cdaq`` (outputs and inputs are modules of one cDAQ chassis; the output task starts on
        the input task's start trigger, ``/cDAQ1/ai/StartTrigger``), or ``cdaq_to_nidaq`` (outputs on a cDAQ,
        inputs on a separate NI-DAQ card; the card exports its start trigger to ``trigger_export``, a PFI
        terminal wired to the cDAQ terminal ``trigger_source``).
    sample_rate_hz : the shared sampling rate, Hz.
    activation : the analogue outputs, one per activation electrode, in column order.
    readout : the analogue inputs (the first is the device's readout).
    trigger_source : the terminal the output task starts on; default for ``cdaq_to_cdaq``: ``/<chassis>/ai/StartTrigger``.
    trigger_export : ``cdaq_to_nidaq`` only: where the input card exports its start trigger, e.g. ``/Dev1/PFI0``.
    read_chunk_samples : samples per channel per driver read (long acquisitions are read in chunks).
    timeout_s : extra time allowed beyond the waveform's duration for a read or a write, s.
    """

    kind: Literal["nidaq"] = "nidaq"
    setup: Literal["cdaq_to_cdaq", "cdaq_to_nidaq"]
    sample_rate_hz: float = Field(gt=0, le=1e6)
    activation: list[ActivationChannel] = Field(min_length=1)
    readout: list[ReadoutChannel] = Field(min_length=1)
    trigger_source: str | None = None
    trigger_export: str | None = None
    read_chunk_samples: int = Field(10_000, ge=1)
    timeout_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> NIDAQConfig:
        missing = [f"activation[{k}]" for k, c in enumerate(self.activation) if not c.channel] + [
            f"readout[{k}]" for k, c in enumerate(self.readout) if not c.channel
        ]
        if missing:
            raise ValueError(f"every channel needs its physical 'channel' (e.g. cDAQ1Mod3/ao0); missing in {missing}")
        names = [c.electrode for c in self.activation] + [c.name for c in self.readout]
        if len(set(names)) != len(names):
            raise ValueError(f"electrode names repeat: {names}")
        if self.setup == "cdaq_to_cdaq":
            chassis = {m.group(1) for c in [*self.activation, *self.readout] if (m := _CHASSIS.match(c.channel))}
            if len(chassis) != 1 or any(not _CHASSIS.match(c.channel) for c in [*self.activation, *self.readout]):
                raise ValueError(
                    "setup 'cdaq_to_cdaq' needs every channel on one cDAQ chassis (cDAQ<n>Mod<m>/...), got "
                    f"{[c.channel for c in [*self.activation, *self.readout]]}"
                )
            if self.trigger_export is not None:
                raise ValueError("trigger_export is for setup 'cdaq_to_nidaq' only")
        elif self.trigger_source is None or self.trigger_export is None:
            raise ValueError(
                "setup 'cdaq_to_nidaq' needs trigger_export (the input card's PFI terminal, e.g. /Dev1/PFI0) and "
                "trigger_source (the cDAQ terminal wired to it, e.g. /cDAQ1/PFI0)"
            )
        return self

    @property
    def start_trigger(self) -> str:
        """The terminal the output task starts on."""
        if self.trigger_source is not None:
            return self.trigger_source
        chassis = _CHASSIS.match(self.readout[0].channel).group(1)  # type: ignore[union-attr]
        return f"/{chassis}/ai/StartTrigger"


BackendSpec = Annotated[Union[SimulatedDAQConfig, NIDAQConfig], Field(discriminator="kind")]


class InstrumentDeviceConfig(StrictModel):
    """A device measured through an instrument (registry type ``instrument``).

    backend : the DAQ, ``{kind: simulated, ...}`` or ``{kind: nidaq, ...}``.
    safety : hard limit and ramp rate.
    calibration : latency and offsets (from :func:`~inmaterio.devices.instruments.calibrate`).
    settle_samples : samples held on each operating point before averaging starts (discarded).
    average_samples : samples averaged per operating point.
    chunk_points : operating points per waveform; a longer batch plays as several waveforms, each from and to 0 V.
    readout : the readout channel that is the device's current; None = the first.
    progress : show a progress bar (rate, ETA) on calls of more than one chunk (on a terminal only).
    measurement_file : an HDF5 file every acquisition is appended to (a new session per device object); None = the
        file of the run measuring (``<run folder>/measurements.h5`` under ``inmaterio run``, an SMG acquisition,
        ``inmaterio device iv``), none outside a run.
    """

    type: Literal["instrument"] = "instrument"
    backend: BackendSpec = Field(default_factory=SimulatedDAQConfig)
    safety: SafetyConfig = SafetyConfig()
    calibration: Calibration = Calibration()
    settle_samples: int = Field(0, ge=0)
    average_samples: int = Field(4, ge=1)
    chunk_points: int = Field(512, ge=1)
    readout: str | None = None
    progress: bool = True
    measurement_file: str | None = None
