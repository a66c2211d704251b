"""A :class:`~inmaterio.devices.base.Device` measured through an instrument backend.

:class:`InstrumentDevice` turns a batch of operating points ``(batch, n)`` V
into a waveform the safety layer accepts and plays it::

    0 V -> ramp -> point 0 held (settle_samples + average_samples) -> ramp -> point 1 held -> ... -> ramp -> 0 V

Ramps are linear and as short as the ramp limit allows (``safety.max_ramp_v_per_s``
at the sampling rate); a point equal to the previous one needs no ramp. The
first ``settle_samples`` of each hold are discarded (the electrodes and the
amplifier settle), the next ``average_samples`` are averaged: the point's
current is their mean, its standard error their standard deviation over
``sqrt(average_samples)`` (0 with one sample). Long batches play as several
waveforms of ``chunk_points`` points, each from and back to 0 V, with a
progress bar (rate, ETA) and one HDF5 group each in the measurement file: the
config's ``measurement_file``, else the file of the run measuring
(:func:`~inmaterio.devices.instruments.measurement_file.measurements_in`,
``<run folder>/measurements.h5``), else none.

Readings are corrected with the :class:`Calibration`: the waveform is
extended by ``latency_samples`` samples at 0 V and the first
``latency_samples`` readings are dropped, then
``current_na = gain_na_per_v * reading_v - offset_na``.

:func:`calibrate` measures the latency, the offsets and the settling of every
electrode and recommends ``settle_samples``; :func:`dry_run` builds and
checks the waveforms of a batch without playing anything.

With ``settle_samples`` too short for the instrument's settling, points are
measured while the electrodes still move and the currents are wrong (the
tests show it on the simulated DAQ against its RC closed form); the
calibration's recommendation removes the error to its tolerance.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import inmaterio
from inmaterio.config import validate_config
from inmaterio.devices.base import Device, Electrode, Measurement
from inmaterio.devices.instruments.backend import MeasurementBackend
from inmaterio.devices.instruments.config import Calibration, InstrumentDeviceConfig, NIDAQConfig, SimulatedDAQConfig
from inmaterio.devices.instruments.measurement_file import MeasurementFile, run_measurement_file, utc_now
from inmaterio.devices.instruments.safety import plot_waveform, ramp_between, safe_outputs
from inmaterio.errors import ConfigError
from inmaterio.progress import progress_bar
from inmaterio.random_streams import Key

__all__ = [
    "Acquisition",
    "InstrumentDevice",
    "build_backend",
    "CalibrationReport",
    "calibrate",
    "DryRun",
    "dry_run",
]


def build_backend(config: InstrumentDeviceConfig) -> MeasurementBackend:
    """The backend a validated config names (``nidaqmx`` is imported only when an NI backend plays)."""
    if isinstance(config.backend, SimulatedDAQConfig):
        from inmaterio.devices.instruments.simulated import SimulatedDAQ

        return SimulatedDAQ(config.backend, config.safety)
    if isinstance(config.backend, NIDAQConfig):
        from inmaterio.devices.instruments.nidaq import NIDAQBackend

        return NIDAQBackend(config.backend, config.safety)
    raise ConfigError(f"unknown backend {config.backend!r}")  # pragma: no cover - the union admits no other


@dataclass(frozen=True)
class Acquisition:
    """One waveform played and read.

    waveform_v : (T, n_activation) V as planned (without the latency extension).
    readout_v : (T + latency_samples, n_readout) V, the raw ADC reading.
    current_na : (T, n_readout) nA, aligned with ``waveform_v`` and offset-corrected.
    started_at : UTC ISO time the play started.
    """

    waveform_v: np.ndarray
    readout_v: np.ndarray
    current_na: np.ndarray
    started_at: str


def _window_stats(current: np.ndarray, starts: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error of ``current[s : s + n]`` for every start ``s``; ``(B,)`` each."""
    windows = current[starts[:, None] + np.arange(n)[None, :]]
    mean = windows.mean(axis=1)
    stderr = windows.std(axis=1, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(len(starts))
    return mean, stderr


class InstrumentDevice(Device):
    """The :class:`Device` of a chip (or a simulated one) on an instrument (see the module docstring).

    Parameters
    ----------
    config : an :class:`InstrumentDeviceConfig` or its mapping (validated; errors name the field).
    backend : an already built backend to use instead of the one ``config.backend`` describes
        (tests, a custom instrument); its channels define the electrodes.
    """

    def __init__(
        self, config: InstrumentDeviceConfig | dict[str, Any] | None = None, *, backend: MeasurementBackend | None = None
    ):
        if not isinstance(config, InstrumentDeviceConfig):
            config = validate_config(InstrumentDeviceConfig, config or {}, source="the InstrumentDevice config")
        self.config = config
        self.backend = backend if backend is not None else build_backend(config)
        b = self.backend
        self.electrodes = tuple(Electrode(c.electrode, c.low_v, c.high_v) for c in b.activation)
        names = [r.name for r in b.readout]
        if config.readout is not None and config.readout not in names:
            raise ConfigError(f"readout '{config.readout}' is not a readout channel of the instrument; channels: {names}")
        self.readout_index = names.index(config.readout) if config.readout is not None else 0
        self.readout_name = names[self.readout_index]
        offsets = config.calibration.offset_na
        if offsets is not None and len(offsets) != len(b.readout):
            raise ConfigError(f"calibration.offset_na has {len(offsets)} values for {len(b.readout)} readout channels {names}")
        self.offset_na = np.zeros(len(b.readout)) if offsets is None else np.asarray(offsets, dtype=np.float64)
        self.gain_na_per_v = np.array([r.gain_na_per_v for r in b.readout])
        wrapped = getattr(b, "device", None)
        self.zero_bias_current_na = getattr(wrapped, "zero_bias_current_na", None) if isinstance(wrapped, Device) else None
        self._files: dict[Path, MeasurementFile] = {}  # one session per file this object measured into
        #: show a progress bar on calls of more than one chunk (``config.progress``; on a terminal only);
        #: an enclosing bar (a DeviceProcessor's, an SMG acquisition's) switches it off with :meth:`progress_off`
        self.progress = config.progress
        #: the last acquisition (for inspection and plots)
        self.last_acquisition: Acquisition | None = None

    @property
    def sample_rate_hz(self) -> float:
        """The instrument's sampling rate, Hz."""
        return self.backend.sample_rate_hz

    @property
    def max_step_v(self) -> float:
        """The largest change of an output between two samples the ramp limit allows, V."""
        return self.config.safety.max_ramp_v_per_s / self.backend.sample_rate_hz

    # ------------------------------------------------------------------------------------------- waveform

    def build_waveform(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The waveform of operating points ``(B, n)`` V and the first sample of each point's averaging window.

        Returns ``waveform (T, n)`` V (from and back to 0 V, ramps within the limit) and ``starts (B,)``.
        """
        points = np.asarray(points, dtype=np.float64)
        n = points.shape[1]
        hold = self.config.settle_samples + self.config.average_samples
        pieces = [np.zeros((1, n))]
        starts = np.empty(len(points), dtype=np.int64)
        length, previous = 1, np.zeros(n)
        for b, point in enumerate(points):
            ramp = ramp_between(previous, point, self.max_step_v)
            pieces += [ramp, np.repeat(point[None, :], hold, axis=0)]
            starts[b] = length + len(ramp) + self.config.settle_samples
            length += len(ramp) + hold
            previous = point
        pieces.append(ramp_between(previous, np.zeros(n), self.max_step_v))
        waveform = np.concatenate(pieces)
        if np.any(waveform[-1] != 0):  # float rounding of the last ramp step
            waveform = np.concatenate([waveform, np.zeros((1, n))])
        return waveform, starts

    def acquire(self, waveform_v: np.ndarray, key: tuple[Key, ...] = ()) -> Acquisition:
        """Play a waveform ``(T, n)`` V (through the safety layer); the reading latency- and offset-corrected."""
        latency = self.config.calibration.latency_samples
        w = np.asarray(waveform_v, dtype=np.float64)
        extended = np.concatenate([w, np.zeros((latency, w.shape[1]))]) if latency else w
        started_at = utc_now()
        readout_v = self.backend.play(extended, key)
        current = readout_v[latency:] * self.gain_na_per_v - self.offset_na
        acquisition = Acquisition(w, readout_v, current, started_at)
        self.last_acquisition = acquisition
        return acquisition

    # -------------------------------------------------------------------------------------------- measure

    @contextmanager
    def progress_off(self) -> Iterator[None]:
        """No progress bar of this device inside the block (an enclosing bar counts the points)."""
        saved, self.progress = self.progress, False
        try:
            yield
        finally:
            self.progress = saved

    @property
    def measurement_path(self) -> Path | None:
        """Where a call now appends its acquisitions: the config's ``measurement_file``, else the run's
        (:func:`~inmaterio.devices.instruments.measurement_file.measurements_in`), else None."""
        if self.config.measurement_file is not None:
            return Path(self.config.measurement_file)
        return run_measurement_file()

    def _measurement_file(self) -> MeasurementFile | None:
        path = self.measurement_path
        if path is None:
            return None
        key = path.absolute()
        if key not in self._files:  # a new session the first time this object measures into the file
            self._files[key] = MeasurementFile(
                path, instrument=self.describe(), calibration=self.config.calibration.model_dump(mode="json")
            )
        return self._files[key]

    def _measure(self, voltages: np.ndarray) -> Measurement:
        key = self.next_stream_key()
        chunk = self.config.chunk_points
        n_chunks = -(-len(voltages) // chunk)
        current = np.empty(len(voltages))
        stderr = np.empty(len(voltages))
        file = self._measurement_file()
        what = f"measuring on {type(self.backend).__name__}"
        with (
            safe_outputs(self.backend.zero_outputs),
            progress_bar(len(voltages), what, unit="pts", enabled=self.progress and n_chunks > 1) as bar,
        ):
            for c in range(n_chunks):
                points = voltages[c * chunk : (c + 1) * chunk]
                waveform, starts = self.build_waveform(points)
                acquisition = self.acquire(waveform, (*key, c))
                mean, err = _window_stats(acquisition.current_na[:, self.readout_index], starts, self.config.average_samples)
                current[c * chunk : c * chunk + len(points)] = mean
                stderr[c * chunk : c * chunk + len(points)] = err
                if file is not None:
                    file.append(
                        waveform_v=acquisition.waveform_v, readout_v=acquisition.readout_v, current_na=acquisition.current_na,
                        started_at=acquisition.started_at, sample_rate_hz=self.sample_rate_hz,
                        latency_samples=self.config.calibration.latency_samples, electrodes=self.activation_names,
                        readouts=[r.name for r in self.backend.readout],
                        points={"points_v": points, "point_current_na": mean, "point_stderr_na": err,
                                "window_start": starts, "window_stop": starts + self.config.average_samples},
                    )  # fmt: skip
                bar.advance(len(points))
        return Measurement(current, stderr)

    def close(self) -> None:
        """Outputs to 0 V and release the instrument (NI-DAQmx: its tasks closed); a later call opens it again.

        ``inmaterio run``, an SMG run and ``device iv`` close the device they built when they end, normally
        or by an exception (:meth:`~inmaterio.devices.base.Device.close`).
        """
        self.backend.close()

    def describe(self) -> dict[str, Any]:
        return {**self.config.model_dump(mode="json"), "package_version": inmaterio.__version__}

    def with_calibration(self, calibration: Calibration, settle_samples: int | None = None) -> InstrumentDevice:
        """A new device on the same backend with ``calibration`` (and ``settle_samples``, default: the calibration's)."""
        settle = settle_samples if settle_samples is not None else calibration.settle_samples
        update: dict[str, Any] = {"calibration": calibration}
        if settle is not None:
            update["settle_samples"] = settle
        config = InstrumentDeviceConfig.model_validate({**self.config.model_dump(), **update})
        return InstrumentDevice(config, backend=self.backend)


# ------------------------------------------------------------------------------------------------ calibration


@dataclass(frozen=True)
class CalibrationReport:
    """What :func:`calibrate` measured.

    calibration : latency, offsets and the recommended ``settle_samples``, ready for the config.
    settle_samples_per_electrode : samples each electrode's step took to settle to the tolerance.
    tolerance : the fraction of a step's current change left at the recommended settle time.
    recommended_plateau_samples : settle + average samples per operating point.
    """

    calibration: Calibration
    settle_samples_per_electrode: dict[str, int]
    tolerance: float
    recommended_plateau_samples: int
    step_v: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {
            "calibration": self.calibration.model_dump(mode="json"),
            "settle_samples_per_electrode": self.settle_samples_per_electrode,
            "tolerance": self.tolerance,
            "recommended_plateau_samples": self.recommended_plateau_samples,
            "step_v": self.step_v,
        }


def calibrate(
    device: InstrumentDevice,
    *,
    tolerance: float = 0.01,
    rest_samples: int = 200,
    hold_samples: int = 500,
    max_latency_samples: int = 100,
    step_fraction: float = 0.9,
) -> CalibrationReport:
    """Measure the latency, the readout offsets and each electrode's settling; recommend ``settle_samples``.

    1. **Offsets**: ``rest_samples`` samples with every output at 0 V; the mean current of each readout
       minus the device's known zero-bias current (0 if unknown) is its ``offset_na``.
    2. **Steps**, one electrode at a time: rest, a ramp (at the ramp limit) to ``step_fraction`` of the
       range end farthest from 0 V, a hold of ``hold_samples``, back to 0 V, and ``max_latency_samples``
       more at rest.
    3. **Latency**: the samples between the start of the ramp and the first reading more than
       6 standard deviations of the rest noise (and one ADC step) away from the rest level, the
       smallest over the electrodes.
    4. **Settling**: for each electrode, the fewest samples after the ramp ends such that the mean of
       every later window of ``average_samples`` samples in the hold is within ``tolerance`` of the step's
       current change (or 4 standard errors of a window's noise, at rest or in the hold's last quarter, if
       larger) of the settled current (the median of the hold's last quarter). The recommendation is the
       largest over the electrodes.

    Raises
    ------
    ConfigError
        If an electrode does not settle within ``hold_samples`` (the message names it) or the arguments are invalid.
    """
    if not 0 < tolerance < 1 or rest_samples < 10 or hold_samples < 8 or max_latency_samples < 0 or not 0 < step_fraction <= 1:
        raise ConfigError(
            f"calibrate: tolerance {tolerance} must be in (0, 1), rest_samples {rest_samples} >= 10, hold_samples "
            f"{hold_samples} >= 8, max_latency_samples {max_latency_samples} >= 0, step_fraction {step_fraction} in (0, 1]"
        )
    backend = device.backend
    n = device.n_activation
    r = device.readout_index
    gain = device.gain_na_per_v[r]
    avg = device.config.average_samples
    with safe_outputs(backend.zero_outputs):
        rest = backend.play(np.zeros((rest_samples, n)), ("calibrate", "offset")) * device.gain_na_per_v
        expected = device.zero_bias_current_na or 0.0
        offset_na = rest.mean(axis=0) - expected
        noise_na = float(rest[:, r].std(ddof=1))
        lsb_na = 0.0
        config = getattr(backend, "config", None)
        if isinstance(config, SimulatedDAQConfig) and config.adc_bits is not None:
            lsb_na = abs(gain) * (config.adc_high_v - config.adc_low_v) / 2**config.adc_bits
        threshold = 6 * noise_na + lsb_na + 1e-12 * max(1.0, abs(float(offset_na[r])))
        onsets: dict[str, int | None] = {}
        steps: dict[str, float] = {}
        readings: dict[str, tuple[np.ndarray, float, int]] = {}  # current, baseline, start of the hold as played
        for j, e in enumerate(device.electrodes):
            target = e.high_v if abs(e.high_v) >= abs(e.low_v) else e.low_v
            v = np.zeros(n)
            v[j] = step_fraction * target
            pre = max_latency_samples + 10
            up = ramp_between(np.zeros(n), v, device.max_step_v)
            down = ramp_between(v, np.zeros(n), device.max_step_v)
            waveform = np.concatenate(
                [
                    np.zeros((pre, n)),
                    up,
                    np.repeat(v[None, :], hold_samples, axis=0),
                    down,
                    np.zeros((max_latency_samples + 1, n)),
                ]
            )
            current = backend.play(waveform, ("calibrate", "step", j))[:, r] * gain - offset_na[r]
            baseline = float(np.median(current[:pre]))
            moved = np.flatnonzero(np.abs(current[pre:] - baseline) > threshold)
            onsets[e.name] = int(moved[0]) if moved.size else None
            steps[e.name] = float(v[j])
            readings[e.name] = (current, baseline, pre + len(up))
    found = [lag for lag in onsets.values() if lag is not None]
    latency = min(found) if found else 0  # the DAQ's: a weak or slow response crosses the threshold later
    settles: dict[str, int] = {}
    for e in device.electrodes:
        current, baseline, played = readings[e.name]
        # the hold as read at the common latency: it ends where the ramp back to 0 V starts to show
        hold = current[played + latency : played + latency + hold_samples]
        tail = hold[-max(hold_samples // 4, 2) :]
        settled = float(np.median(tail))
        change = abs(settled - baseline)
        window_means = np.convolve(hold, np.ones(avg) / avg, mode="valid")  # the window starting at each sample
        # the noise of a window mean, at rest or on the step (a device can be noisier under bias)
        window_noise = max(noise_na, float(tail.std(ddof=1))) / np.sqrt(avg)
        allowed = max(tolerance * change, 4 * window_noise, lsb_na)
        outside = np.flatnonzero(np.abs(window_means - settled) > allowed)
        settle = int(outside[-1]) + 1 if outside.size else 0
        if settle > len(window_means) - max(hold_samples // 4, 1):
            raise ConfigError(
                f"electrode '{e.name}' did not settle to {tolerance:.3g} of its {change:.4g} nA step within "
                f"hold_samples = {hold_samples} samples ({hold_samples / backend.sample_rate_hz:.4g} s); give a longer hold"
            )
        settles[e.name] = settle
    per_electrode = settles  # samples after the common latency until every window is within tolerance
    settle_samples = max(per_electrode.values())
    calibration = Calibration(
        latency_samples=latency, offset_na=[float(x) for x in offset_na], settle_samples=int(settle_samples),
        measured_at=utc_now(),
    )  # fmt: skip
    return CalibrationReport(calibration, per_electrode, tolerance, int(settle_samples) + avg, steps)


# ------------------------------------------------------------------------------------------------ dry run


@dataclass(frozen=True)
class DryRun:
    """The waveforms a batch would play, checked by the safety layer and not played.

    waveforms_v : one ``(T, n)`` V array per chunk.
    starts : the first averaged sample of every point, per chunk.
    duration_s : total playing time, s.
    max_ramp_v_per_s : the fastest change of any output, V/s.
    """

    waveforms_v: list[np.ndarray]
    starts: list[np.ndarray]
    duration_s: float
    max_ramp_v_per_s: float

    @property
    def n_samples(self) -> int:
        """Samples of all chunks together."""
        return sum(len(w) for w in self.waveforms_v)


def dry_run(device: InstrumentDevice, voltages: Any, plot: str | Path | None = None) -> DryRun:
    """Check the waveforms of a batch ``(B, n)`` V against every limit without playing them; optionally plot the first.

    Raises :class:`~inmaterio.errors.VoltageError` exactly where a real run would (before any driver call).
    """
    points = device.check_voltages(voltages)
    waveforms, starts = [], []
    for c in range(0, len(points), device.config.chunk_points):
        waveform, start = device.build_waveform(points[c : c + device.config.chunk_points])
        waveforms.append(device.backend.check(waveform))
        starts.append(start)
    rate = device.sample_rate_hz
    fastest = max((float(np.abs(np.diff(w, axis=0)).max(initial=0.0)) * rate for w in waveforms), default=0.0)
    result = DryRun(waveforms, starts, sum(len(w) for w in waveforms) / rate, fastest)
    if plot is not None and waveforms:
        mask = np.zeros(len(waveforms[0]), dtype=bool)
        for s in starts[0]:
            mask[s : s + device.config.average_samples] = True
        figure = plot_waveform(waveforms[0], device.activation_names, rate, mask)
        Path(plot).parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(plot)
        import matplotlib.pyplot as plt

        plt.close(figure)
    return result
