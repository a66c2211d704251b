"""A fake ``nidaqmx`` package: the subset of NI-DAQmx's public Python API the NI backend uses, recording every call.

Names and signatures follow nidaqmx 1.x (``Task(new_task_name)``,
``ao_channels.add_ao_voltage_chan(physical_channel, name_to_assign_to_channel, min_val, max_val)``,
``ai_channels.add_ai_voltage_chan(physical_channel, name_to_assign_to_channel, terminal_config, min_val, max_val)``,
``timing.cfg_samp_clk_timing(rate, source, active_edge, sample_mode, samps_per_chan)``,
``triggers.start_trigger.cfg_dig_edge_start_trig(trigger_source, trigger_edge)``,
``export_signals.export_signal(signal_id, output_terminal)``, ``write(data, auto_start, timeout)``,
``read(number_of_samples_per_channel, timeout)``, ``start``, ``stop``, ``wait_until_done``, ``close``,
``nidaqmx.errors.DaqError(message, error_code, task_name)``, ``nidaqmx.constants``).

The fake models what matters for safety: the voltage standing at every output
terminal (``driver.outputs``). An on-demand write (no sample clock,
``auto_start=True``) sets it at once; a timed waveform plays when the input task
starts (the trigger), and the terminals end at its last sample, or, if a read
fails (``driver.fail_read_at``), at the sample reached when it failed. Writes
outside a channel's ``[min_val, max_val]`` raise ``DaqError`` like the driver.
Readings: every input reads ``driver.response_v_per_v`` times the sum of the
outputs of the same sample.
"""

from __future__ import annotations

import enum
import sys
import types
from typing import Any

import numpy as np

AUTO_START_UNSET = object()
NUM_SAMPLES_UNSET = -1


class AcquisitionType(enum.Enum):
    FINITE = 10178
    CONTINUOUS = 10123


class Edge(enum.Enum):
    RISING = 10280
    FALLING = 10171


class TerminalConfiguration(enum.Enum):
    RSE = 10083
    NRSE = 10078
    DIFF = 10106
    PSEUDO_DIFF = 12529
    DEFAULT = -1


class Signal(enum.Enum):
    START_TRIGGER = 12491


class VoltageUnits(enum.Enum):
    VOLTS = 10348


class DaqError(Exception):
    def __init__(self, message: str, error_code: int, task_name: str = "") -> None:
        super().__init__(f"{message}\n\nStatus Code: {error_code}" + (f"\n\nTask Name: {task_name}" if task_name else ""))
        self.error_code = error_code


class FakeDriver:
    """The state of the fake hardware: recorded calls, output terminals, injected failures."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.outputs: dict[str, float] = {}
        self.fail_read_at: int | None = None  # the n-th read call (0-based) raises DaqError
        self.interrupt_read_at: int | None = None  # the n-th read call raises KeyboardInterrupt
        self.response_v_per_v = 0.1
        self.reads = 0

    def record(self, task: str, what: str, *args: Any, **kwargs: Any) -> None:
        self.calls.append((task, what, args, kwargs))

    def methods(self) -> list[tuple[str, str]]:
        """``(task name, call)`` of every recorded call."""
        return [(task, what) for task, what, _, _ in self.calls]


class _Collection:
    def __init__(self, task: Task, kind: str) -> None:
        self._task, self._kind = task, kind

    def add_ao_voltage_chan(self, physical_channel, name_to_assign_to_channel="", min_val=-10.0, max_val=10.0,
                            units=VoltageUnits.VOLTS, custom_scale_name=""):  # fmt: skip
        assert self._kind == "ao"
        self._task._driver.record(self._task.name, "add_ao_voltage_chan", physical_channel,
                                  name_to_assign_to_channel=name_to_assign_to_channel, min_val=min_val, max_val=max_val)  # fmt: skip
        self._task._ao.append((physical_channel, min_val, max_val))

    def add_ai_voltage_chan(self, physical_channel, name_to_assign_to_channel="", terminal_config=TerminalConfiguration.DEFAULT,
                            min_val=-5.0, max_val=5.0, units=VoltageUnits.VOLTS, custom_scale_name=""):  # fmt: skip
        assert self._kind == "ai"
        self._task._driver.record(self._task.name, "add_ai_voltage_chan", physical_channel,
                                  name_to_assign_to_channel=name_to_assign_to_channel, terminal_config=terminal_config,
                                  min_val=min_val, max_val=max_val)  # fmt: skip
        self._task._ai.append((physical_channel, min_val, max_val))


class _Timing:
    def __init__(self, task: Task) -> None:
        self._task = task

    def cfg_samp_clk_timing(self, rate, source="", active_edge=Edge.RISING, sample_mode=AcquisitionType.FINITE,
                            samps_per_chan=1000):  # fmt: skip
        self._task._driver.record(self._task.name, "cfg_samp_clk_timing", rate, sample_mode=sample_mode,
                                  samps_per_chan=samps_per_chan)  # fmt: skip
        self._task._timed = samps_per_chan


class _StartTrigger:
    def __init__(self, task: Task) -> None:
        self._task = task

    def cfg_dig_edge_start_trig(self, trigger_source, trigger_edge=Edge.RISING):
        self._task._driver.record(self._task.name, "cfg_dig_edge_start_trig", trigger_source)
        self._task._trigger = trigger_source


class _Triggers:
    def __init__(self, task: Task) -> None:
        self.start_trigger = _StartTrigger(task)


class _ExportSignals:
    def __init__(self, task: Task) -> None:
        self._task = task

    def export_signal(self, signal_id, output_terminal):
        self._task._driver.record(self._task.name, "export_signal", signal_id, output_terminal)


class Task:
    """A fake DAQmx task bound to the module's :class:`FakeDriver` (``nidaqmx.driver``)."""

    _all: list[Task] = []

    def __init__(self, new_task_name: str = "", *, grpc_options=None) -> None:
        self._driver: FakeDriver = sys.modules["nidaqmx"].driver
        self.name = new_task_name
        self._driver.record(new_task_name, "Task")
        self._ao: list[tuple[str, float, float]] = []
        self._ai: list[tuple[str, float, float]] = []
        self._timed: int | None = None
        self._trigger: str | None = None
        self._buffer: np.ndarray | None = None
        self._data: np.ndarray | None = None
        self._position = 0
        self.ao_channels = _Collection(self, "ao")
        self.ai_channels = _Collection(self, "ai")
        self.timing = _Timing(self)
        self.triggers = _Triggers(self)
        self.export_signals = _ExportSignals(self)
        Task._all.append(self)

    def write(self, data, auto_start=AUTO_START_UNSET, timeout=10.0):
        array = np.asarray(data, dtype=np.float64)
        self._driver.record(self.name, "write", array.copy(), auto_start=auto_start, timeout=timeout)
        array = array.reshape(len(self._ao), -1)
        for (channel, low, high), row in zip(self._ao, array):
            if row.min() < low or row.max() > high:
                raise DaqError(f"value outside [{low}, {high}] on {channel}", -200561, self.name)
        if self._timed is None and auto_start is True:  # on demand: the terminals change now
            for (channel, _, _), row in zip(self._ao, array):
                self._driver.outputs[channel] = float(row[-1])
        else:
            self._buffer = array
        return array.shape[1]

    def start(self):
        self._driver.record(self.name, "start")
        if self._ai:  # the input task fires the start trigger: every armed output task plays its buffer
            outputs = [t for t in Task._all if t._buffer is not None and t._ao and t._trigger is not None]
            total = sum(t._buffer.sum(axis=0) for t in outputs) if outputs else np.zeros(self._timed or 0)
            self._data = np.repeat(self._driver.response_v_per_v * np.asarray(total)[None, :], len(self._ai), axis=0)
            self._players = outputs
            self._position = 0

    def read(self, number_of_samples_per_channel=NUM_SAMPLES_UNSET, timeout=10.0):
        self._driver.record(self.name, "read", number_of_samples_per_channel=number_of_samples_per_channel, timeout=timeout)
        call = self._driver.reads
        self._driver.reads += 1
        stop = self._position + number_of_samples_per_channel
        if call in (self._driver.fail_read_at, self._driver.interrupt_read_at):  # the outputs stand where playing stopped
            for task in self._players:
                for (channel, _, _), row in zip(task._ao, task._buffer):
                    self._driver.outputs[channel] = float(row[min(stop, row.size) - 1])
            if call == self._driver.fail_read_at:
                raise DaqError("The hardware stopped responding (fake).", -88709, self.name)
            raise KeyboardInterrupt
        chunk = self._data[:, self._position : stop]
        self._position = stop
        if stop >= self._data.shape[1]:  # the whole waveform has played: the terminals hold its last samples
            for task in self._players:
                for (channel, _, _), row in zip(task._ao, task._buffer):
                    self._driver.outputs[channel] = float(row[-1])
        return chunk[0].tolist() if len(self._ai) == 1 else chunk.tolist()

    def wait_until_done(self, timeout=10.0):
        self._driver.record(self.name, "wait_until_done", timeout=timeout)

    def stop(self):
        self._driver.record(self.name, "stop")

    def close(self):
        self._driver.record(self.name, "close")
        if self in Task._all:
            Task._all.remove(self)


def install(monkeypatch) -> FakeDriver:
    """Put the fake ``nidaqmx`` (and its ``constants`` and ``errors``) in ``sys.modules``; return its driver."""
    Task._all = []
    driver = FakeDriver()
    module = types.ModuleType("nidaqmx")
    constants = types.ModuleType("nidaqmx.constants")
    errors = types.ModuleType("nidaqmx.errors")
    for enum_class in (AcquisitionType, Edge, TerminalConfiguration, Signal, VoltageUnits):
        setattr(constants, enum_class.__name__, enum_class)
    errors.DaqError = DaqError
    module.Task = Task
    module.constants = constants
    module.errors = errors
    module.driver = driver
    monkeypatch.setitem(sys.modules, "nidaqmx", module)
    monkeypatch.setitem(sys.modules, "nidaqmx.constants", constants)
    monkeypatch.setitem(sys.modules, "nidaqmx.errors", errors)
    return driver
