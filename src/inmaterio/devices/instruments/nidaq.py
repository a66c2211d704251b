"""NI-DAQmx backend: a DNPU on National Instruments hardware (``pip install "inmaterio[nidaq]"``).

``nidaqmx`` is imported when the first task is created, never at import time,
so the rest of the library never needs it. Two setups (:class:`NIDAQConfig`):

- ``cdaq_to_cdaq``: output and input modules in one cDAQ chassis. The output
  task starts on the input task's start trigger (``/cDAQ1/ai/StartTrigger``),
  so both run on one sample clock from the same tick.
- ``cdaq_to_nidaq``: outputs on a cDAQ, inputs on a separate NI-DAQ card. The
  card exports its start trigger to a PFI terminal (``trigger_export``), wired
  to a cDAQ terminal (``trigger_source``) that starts the output task. The two
  clocks run at the same rate from the same edge; what remains (a fixed delay)
  is the calibrated latency.

The driver calls of one :meth:`~MeasurementBackend.play` of ``T`` samples::

    (first play only) Task("inmaterio_activation"); ao_channels.add_ao_voltage_chan(...) per electrode
                      Task("inmaterio_readout");    ai_channels.add_ai_voltage_chan(...) per readout
                      [cdaq_to_nidaq] readout.export_signals.export_signal(Signal.START_TRIGGER, trigger_export)
                      activation.triggers.start_trigger.cfg_dig_edge_start_trig(start trigger)
    activation.timing.cfg_samp_clk_timing(rate, sample_mode=FINITE, samps_per_chan=T)
    readout.timing.cfg_samp_clk_timing(rate, sample_mode=FINITE, samps_per_chan=T)
    activation.write(waveform (n_activation, T), auto_start=False, timeout=...)
    activation.start()          # armed: waits for the trigger
    readout.start()             # fires the trigger: both start on the same tick
    readout.read(number_of_samples_per_channel=chunk, timeout=...)   # repeated until T samples are read
    activation.wait_until_done(timeout=...); readout.stop(); activation.stop()

Every waveform was checked by the safety layer before the first of these
calls. On any driver error, Ctrl-C or SIGTERM the outputs are set to 0 V: both
tasks are stopped and a fresh on-demand task writes 0 V to every output
(``Task("inmaterio_zero")``, the same channels, ``write([0.0] * n, auto_start=True)``,
``stop``, ``close``).
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from inmaterio.devices.instruments.backend import MeasurementBackend
from inmaterio.devices.instruments.config import NIDAQConfig, SafetyConfig
from inmaterio.devices.instruments.safety import InstrumentError
from inmaterio.errors import ConfigError
from inmaterio.random_streams import Key

__all__ = ["NIDAQBackend", "import_nidaqmx"]

_TERMINALS = {"default": "DEFAULT", "rse": "RSE", "nrse": "NRSE", "diff": "DIFF", "pseudo_diff": "PSEUDO_DIFF"}


def import_nidaqmx() -> Any:
    """The ``nidaqmx`` module, or a :class:`ConfigError` saying how to install it."""
    try:
        return importlib.import_module("nidaqmx")
    except ImportError as err:
        raise ConfigError(
            f"the NI-DAQmx backend needs the 'nidaqmx' package ({err}); install it with pip install \"inmaterio[nidaq]\" "
            "and NI's driver (python -m nidaqmx installdriver)"
        ) from None


class NIDAQBackend(MeasurementBackend):
    """Outputs and inputs of an NI-DAQmx setup (see the module docstring for the exact driver calls)."""

    def __init__(self, config: NIDAQConfig, safety: SafetyConfig | None = None) -> None:
        self.config = config
        super().__init__(config.activation, config.readout, config.sample_rate_hz, safety or SafetyConfig())
        self._nidaqmx: Any = None
        self._activation_task: Any = None
        self._readout_task: Any = None

    # ---------------------------------------------------------------------------------------------- tasks

    def _add_outputs(self, task: Any) -> None:
        for c in self.activation:
            task.ao_channels.add_ao_voltage_chan(
                c.channel, name_to_assign_to_channel=c.electrode, min_val=c.low_v, max_val=c.high_v
            )

    def _open(self) -> None:
        if self._activation_task is not None:
            return
        nidaqmx = self._nidaqmx = import_nidaqmx()
        constants = nidaqmx.constants
        activation = nidaqmx.Task("inmaterio_activation")
        self._activation_task = activation
        self._add_outputs(activation)
        readout = nidaqmx.Task("inmaterio_readout")
        self._readout_task = readout
        for c in self.readout:
            readout.ai_channels.add_ai_voltage_chan(
                c.channel, name_to_assign_to_channel=c.name,
                terminal_config=getattr(constants.TerminalConfiguration, _TERMINALS[c.terminal]),
                min_val=c.low_v, max_val=c.high_v,
            )  # fmt: skip
        if self.config.setup == "cdaq_to_nidaq":
            readout.export_signals.export_signal(constants.Signal.START_TRIGGER, self.config.trigger_export)
        activation.triggers.start_trigger.cfg_dig_edge_start_trig(self.config.start_trigger)

    def _play(self, waveform_v: np.ndarray, key: tuple[Key, ...]) -> np.ndarray:
        self._open()
        constants = self._nidaqmx.constants
        activation, readout = self._activation_task, self._readout_task
        n_samples = len(waveform_v)
        rate = self.sample_rate_hz
        timeout = n_samples / rate + self.config.timeout_s
        finite = constants.AcquisitionType.FINITE
        activation.timing.cfg_samp_clk_timing(rate, sample_mode=finite, samps_per_chan=n_samples)
        readout.timing.cfg_samp_clk_timing(rate, sample_mode=finite, samps_per_chan=n_samples)
        activation.write(np.ascontiguousarray(waveform_v.T), auto_start=False, timeout=timeout)
        activation.start()
        readout.start()
        chunks = []
        remaining = n_samples
        while remaining > 0:
            count = min(self.config.read_chunk_samples, remaining)
            data = np.asarray(readout.read(number_of_samples_per_channel=count, timeout=timeout), dtype=np.float64)
            data = data.reshape(len(self.readout), -1)  # one channel: a flat list of samples
            if data.shape[1] != count:
                raise InstrumentError(f"the driver returned {data.shape[1]} samples per channel, {count} were asked for")
            chunks.append(data)
            remaining -= count
        activation.wait_until_done(timeout=timeout)
        readout.stop()
        activation.stop()
        return np.concatenate(chunks, axis=1).T

    def _zero_outputs(self) -> None:
        if self._nidaqmx is None:  # no task was ever created: nothing was written, the outputs rest
            return
        for task in (self._readout_task, self._activation_task):
            if task is not None:
                try:
                    task.stop()
                except Exception:  # noqa: BLE001,S110 - stopping is best effort; the zero write below is what matters
                    pass
        if self._activation_task is not None:  # free the output channels for the on-demand task
            self._activation_task.close()
            self._activation_task = None
        if self._readout_task is not None:
            self._readout_task.close()
            self._readout_task = None
        zero = self._nidaqmx.Task("inmaterio_zero")
        try:
            self._add_outputs(zero)
            zero.write([0.0] * len(self.activation), auto_start=True, timeout=self.config.timeout_s)
            zero.stop()
        finally:
            zero.close()

    def close(self) -> None:
        """Outputs to 0 V and close the tasks (a later play opens new ones)."""
        if self._activation_task is not None or self._readout_task is not None:
            self.zero_outputs()

    def describe(self) -> dict[str, Any]:
        return self.config.model_dump(mode="json")
