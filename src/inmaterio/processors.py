"""Processors: one call that evaluates activation voltages on a surrogate or on a device.

A processor maps activation voltages to readout currents::

    current_na = processor(voltages)      # voltages (..., n_activation) V -> (...) nA

with the same call whatever is behind it:

* :class:`SurrogateProcessor` runs a :class:`~inmaterio.surrogate.SurrogateModel`
  ("simulation"): differentiable, fast, optionally with Gaussian output noise
  (default standard deviation: the surrogate's test RMSE, ``info.noise_na``)
  and output clipping to the device's range (``info.output_clipping_na``).
* :class:`DeviceProcessor` plays the voltages on a :class:`~inmaterio.devices.base.Device`
  (the virtual DNPU now, an instrument later) as a waveform: each operating
  point is held as a plateau of ``plateau_samples`` samples, every batch starts
  with a linear ramp from 0 V and ends with one back to 0 V, the ramps are
  masked out and each plateau is averaged back to one current. It has no
  gradient. A call of more than ``max_points`` operating points plays as
  several waveforms; with ``progress`` on, such a call shows a bar with the
  points measured, their rate and the ETA (on a terminal only).

Both check voltages before anything is evaluated: a value outside its
electrode's range, NaN or infinite raises :class:`~inmaterio.errors.VoltageError`
naming the electrode, the value, the range and the sample, so an out-of-range
voltage never reaches a device. A tolerance of :data:`RANGE_TOLERANCE_V`
absorbs float32 rounding of values computed exactly at a range end.

Networks switch back end with :func:`inmaterio.nn.set_processor` (train on the
surrogate, validate on the device).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from inmaterio.devices.base import Device, Electrode, as_real_voltages
from inmaterio.errors import ConfigError, VoltageError
from inmaterio.progress import progress_bar
from inmaterio.surrogate.info import DeviceInfo
from inmaterio.surrogate.model import SurrogateModel

__all__ = [
    "CHUNK_ROWS",
    "RANGE_TOLERANCE_V",
    "DeviceProcessor",
    "Processor",
    "check_interchangeable",
    "SurrogateProcessor",
    "from_waveform",
    "to_waveform",
]

#: Rows per surrogate call when evaluating without gradients (cache-sized activations).
CHUNK_ROWS = 8192

#: Slack (V) allowed beyond a range end, for float32 rounding of values computed at the end itself.
RANGE_TOLERANCE_V = 1e-5


def check_interchangeable(new: DeviceInfo, old: DeviceInfo, *, new_name: str, old_name: str, old_short: str, hint: str) -> None:
    """Raise :class:`ConfigError` unless voltages meant for ``old`` can be played on ``new``.

    Both need the same number of activation electrodes and the same ranges;
    the message names both sides (``new_name`` / ``old_name`` in the count
    message, ``new_name`` / ``old_short`` per differing electrode) and ends with ``hint``.
    """
    if new.n_activation != old.n_activation:
        raise ConfigError(
            f"{new_name} has {new.n_activation} activation electrodes {new.electrode_names}, "
            f"{old_name} {old.n_activation} {old.electrode_names}; {hint}"
        )
    if new.voltage_ranges_v != old.voltage_ranges_v:
        diff = [
            f"{name}: [{lo}, {hi}] V on {new_name}, [{olo}, {ohi}] V on {old_short}"
            for name, (lo, hi), (olo, ohi) in zip(new.electrode_names, new.voltage_ranges_v, old.voltage_ranges_v)
            if (lo, hi) != (olo, ohi)
        ]
        raise ConfigError(f"the voltage ranges differ ({'; '.join(diff)}); {hint}")


class Processor(nn.Module):
    """Base class: ``forward(voltages (..., n_activation) V) -> (...) nA``.

    Attributes
    ----------
    info : :class:`DeviceInfo` of the device (electrode names, ranges, clipping, noise).
    differentiable : whether gradients flow from the current back to the voltages.
    """

    differentiable: bool = False

    def __init__(self, info: DeviceInfo) -> None:
        super().__init__()
        self.info = info
        self._electrodes = tuple(Electrode(name, lo, hi) for name, (lo, hi) in zip(info.electrode_names, info.voltage_ranges_v))
        ranges = torch.as_tensor(info.ranges_array(), dtype=torch.float64)
        self.register_buffer("voltage_low", ranges[:, 0].clone(), persistent=False)
        self.register_buffer("voltage_high", ranges[:, 1].clone(), persistent=False)

    @property
    def n_activation(self) -> int:
        """Number of activation electrodes (last dimension of the voltages)."""
        return self.info.n_activation

    def as_voltages(self, voltages: Any) -> torch.Tensor:
        """``voltages (..., n_activation)`` as a floating-point tensor; only real numbers pass.

        Float tensors pass unchanged (gradients kept); integer tensors become
        torch's default float dtype (integers are volts like floats, and the
        current is a float); numpy arrays, lists and tuples of real numbers
        become float64 tensors. Complex numbers, booleans, text, None and
        other objects raise :class:`VoltageError` naming the electrode, the
        value and the range.
        """
        if isinstance(voltages, torch.Tensor):
            if voltages.is_floating_point():
                return voltages
            if not (voltages.is_complex() or voltages.dtype == torch.bool):
                return voltages.to(torch.get_default_dtype())
        return torch.as_tensor(as_real_voltages(voltages, self._electrodes, leading_dims=True))

    def check_voltages(self, voltages: Any) -> None:
        """Raise :class:`VoltageError` for anything but real numbers (see :meth:`as_voltages`), a wrong
        last dimension, NaN/inf or out-of-range values.

        The test runs in torch (cheap next to a surrogate call); the message
        names the first offending electrode, value, range and sample (samples
        counted over the flattened leading dimensions).
        """
        voltages = self.as_voltages(voltages)
        n = self.n_activation
        if voltages.ndim == 0 or voltages.shape[-1] != n:
            raise VoltageError(
                f"voltages must have shape (..., {n}) for electrodes {self.info.electrode_names}, "
                f"got shape {tuple(voltages.shape)}"
            )
        v = voltages.detach()
        low = self.voltage_low.to(v.dtype) - RANGE_TOLERANCE_V
        high = self.voltage_high.to(v.dtype) + RANGE_TOLERANCE_V
        bad = ~torch.isfinite(v) | (v < low) | (v > high)
        if bool(bad.any()):
            flat_bad = bad.reshape(-1, n)
            row, col = (int(i) for i in flat_bad.nonzero()[0])
            value = float(v.reshape(-1, n)[row, col])
            name = self.info.electrode_names[col]
            lo, hi = self.info.voltage_ranges_v[col]
            what = f"is not finite (range [{lo}, {hi}] V)" if not np.isfinite(value) else f"outside [{lo}, {hi}] V"
            raise VoltageError(
                f"electrode '{name}' voltage {value:.6g} V in sample {row} {what} "
                f"({int(flat_bad.sum())} bad value(s) in total); nothing was evaluated"
            )

    @abstractmethod
    def forward(self, voltages: torch.Tensor) -> torch.Tensor:
        """Readout current (nA) of shape ``voltages.shape[:-1]``."""

    @contextmanager
    def noise_off(self) -> Iterator[Processor]:
        """Context manager: evaluate without added output noise (a device's own noise stays)."""
        yield self

    def forward_repeated(self, voltages: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
        """Evaluate ``voltages.index_select(dim, index)`` (operating points that repeat), same result.

        ``voltages (..., n)`` holds each distinct point once along ``dim``;
        ``index`` says which point every sample is. The result is that of
        ``self(voltages.index_select(dim, index))``: a device measures every
        sample (the default here); a surrogate evaluates each distinct point
        once and draws the output noise per sample (:class:`SurrogateProcessor`).
        ``dim`` counts from the front and must be a batch dimension (not the last).
        """
        return self(voltages.index_select(dim, index))

    def describe(self) -> dict:
        """JSON-serialisable description of the back end (for results folders)."""
        return {"type": type(self).__name__, "electrodes": self.info.electrode_names}


class SurrogateProcessor(Processor):
    """Evaluate voltages through a surrogate model (differentiable).

    ``current = clip(amplification * model(v) + noise)``, where ``noise`` is
    Gaussian with standard deviation ``noise_std_na`` (0 = off) and ``clip`` is
    the interval ``clipping_na`` (None = no clipping). With ``predictive_noise``
    the model is a :class:`~inmaterio.surrogate.SurrogateEnsemble` and the noise
    of each point has the standard deviation ``sqrt(noise_std_na^2 + sigma(v)^2)``,
    where ``sigma(v)`` is the ensemble's calibrated spread there (times
    ``|amplification|``): drawn as ``sigma * N(0, 1)``, so its gradient reaches
    the voltages through ``sigma`` too, and a margin objective is met most
    cheaply where the members agree.

    Parameters
    ----------
    model : the surrogate; its weights are frozen (``requires_grad=False``).
    amplification : extra gain applied to the model's output (nA per model
        unit). Every model inmaterio trains or imports already outputs nA (the
        brains-py importer folds brains-py's amplification into the model's
        output scale), so the default is 1.
    noise : add Gaussian output noise. Its standard deviation is
        ``noise_std_na`` if given, else the surrogate's test RMSE ``info.noise_na``.
    noise_std_na : standard deviation of the noise in nA (>= 0).
    predictive_noise : add the ensemble's per-point spread to the noise (above); needs a ``SurrogateEnsemble``.
    clipping_na : ``(low, high)`` nA; default ``"info"`` takes ``info.output_clipping_na``.
    check : validate the voltages on every call (see :meth:`Processor.check_voltages`).
    bfloat16 : run the MLP's matrix products in bfloat16 (``torch.autocast``).
        3-4x faster forward + backward on CPUs with AVX512-BF16 (measured on
        this project's AMD EPYC: 64k rows, 1 thread), at an RMS difference of
        0.3 nA (max 1.5 nA) on the bundled model, a tenth of its test RMSE:
        meant for many-trial training; evaluate in float32 (the default; the
        attribute can be switched at any time). Slow where the CPU lacks bf16.
    """

    differentiable = True

    def __init__(
        self,
        model: SurrogateModel,
        *,
        amplification: float = 1.0,
        noise: bool = False,
        noise_std_na: float | None = None,
        predictive_noise: bool = False,
        clipping_na: tuple[float, float] | None | str = "info",
        check: bool = True,
        bfloat16: bool = False,
    ) -> None:
        if predictive_noise and not hasattr(model, "mean_and_spread"):
            raise ConfigError(
                f"predictive_noise needs an ensemble of surrogates (SurrogateEnsemble, e.g. load_ensemble(folder)) "
                f"to give a spread per point, got a {type(model).__name__}"
            )
        super().__init__(model.info)
        for p in model.parameters():
            p.requires_grad_(False)
        model.eval()
        self.model = model
        if not np.isfinite(amplification) or amplification == 0:
            raise ConfigError(f"amplification must be finite and non-zero, got {amplification}")
        self.amplification = float(amplification)
        self.noise_std_na = 0.0
        if noise:
            self.set_noise(noise_std_na)
        elif noise_std_na is not None:
            raise ConfigError("noise_std_na is given but noise=False; pass noise=True to add output noise")
        if clipping_na == "info":
            clipping_na = model.info.output_clipping_na
        elif isinstance(clipping_na, str):
            raise ConfigError(f"clipping_na must be (low, high) nA, None or 'info', got '{clipping_na}'")
        if clipping_na is not None and not (
            len(clipping_na) == 2 and np.all(np.isfinite(clipping_na)) and clipping_na[0] < clipping_na[1]
        ):
            raise ConfigError(f"clipping_na must be a finite (low, high) with low < high, got {clipping_na}")
        self.clipping_na = None if clipping_na is None else (float(clipping_na[0]), float(clipping_na[1]))
        self.check = check
        self.bfloat16 = bfloat16
        self.predictive_noise = bool(predictive_noise)

    def set_noise(self, std_na: float | None = None) -> None:
        """Switch output noise on with ``std_na`` nA (None: the test RMSE ``info.noise_na``); 0 switches it off."""
        if std_na is None:
            std_na = self.info.noise_na
            if std_na is None:
                raise ConfigError("the surrogate has no test RMSE (info.noise_na is None); give noise_std_na explicitly")
        if not (np.isfinite(std_na) and std_na >= 0):
            raise ConfigError(f"noise_std_na must be a finite value >= 0 nA, got {std_na}")
        self.noise_std_na = float(std_na)

    @contextmanager
    def noise_off(self) -> Iterator[SurrogateProcessor]:
        """Context manager: no output noise inside (e.g. to measure accuracy); the setting is restored after."""
        saved = self.noise_std_na, self.predictive_noise
        self.noise_std_na, self.predictive_noise = 0.0, False
        try:
            yield self
        finally:
            self.noise_std_na, self.predictive_noise = saved

    def forward(self, voltages: torch.Tensor) -> torch.Tensor:
        return self._output_stage(*self._model_current(voltages))

    def forward_repeated(self, voltages: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
        """The model runs once per distinct point; noise and clipping apply per sample (see :class:`Processor`)."""
        current, spread = self._model_current(voltages)
        return self._output_stage(current.index_select(dim, index), None if spread is None else spread.index_select(dim, index))

    def _model_current(self, voltages: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``amplification * model(v)`` (nA), shape ``voltages.shape[:-1]``, after the voltage check, and with
        ``predictive_noise`` the ensemble's spread there (nA, same shape; else None).

        Without gradients, large inputs run in chunks of :data:`CHUNK_ROWS`
        rows: each layer's activations then stay in cache (about 3x faster
        than one call on 300k rows, measured on this project's 2-core machine).
        """
        voltages = self.as_voltages(voltages)
        if self.check:
            self.check_voltages(voltages)
        shape = voltages.shape[:-1]
        flat = voltages.reshape(-1, self.n_activation).to(next(self.model.parameters()).dtype)
        evaluate = self.model.mean_and_spread if self.predictive_noise else lambda chunk: (self.model(chunk), None)
        with torch.autocast(flat.device.type, dtype=torch.bfloat16, enabled=self.bfloat16):
            if len(flat) > CHUNK_ROWS and not (torch.is_grad_enabled() and flat.requires_grad):
                parts = [evaluate(chunk) for chunk in flat.split(CHUNK_ROWS)]
                current = torch.cat([c for c, _ in parts])
                spread = None if parts[0][1] is None else torch.cat([sp for _, sp in parts])
            else:
                current, spread = evaluate(flat)
        current = current.reshape(shape).to(voltages.dtype)
        if spread is not None:
            spread = spread.reshape(shape).to(voltages.dtype) * abs(self.amplification)
        return (current * self.amplification if self.amplification != 1.0 else current), spread

    def _output_stage(self, current: torch.Tensor, spread: torch.Tensor | None = None) -> torch.Tensor:
        """Add the output noise (per sample; with ``spread`` nA its per-point part in quadrature) and clip."""
        if spread is not None:
            current = current + torch.sqrt(self.noise_std_na**2 + spread**2) * torch.randn_like(current)
        elif self.noise_std_na > 0:
            current = current + self.noise_std_na * torch.randn_like(current)
        if self.clipping_na is not None:
            current = current.clamp(*self.clipping_na)
        return current

    def describe(self) -> dict:
        return {
            **super().describe(),
            "amplification": self.amplification,
            "noise_std_na": self.noise_std_na,
            "clipping_na": self.clipping_na,
            "bfloat16": self.bfloat16,
            "surrogate_test_rmse_na": self.info.noise_na,
            **({"predictive_noise": True} if self.predictive_noise else {}),
        }


def to_waveform(points: np.ndarray, plateau_samples: int, ramp_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """Turn operating points into a waveform: ramp up from 0 V, plateaus, ramp down to 0 V.

    Parameters
    ----------
    points : ``(batch, n)`` volts.
    plateau_samples : samples per plateau (>= 1); each point is repeated this often.
    ramp_samples : samples of each linear ramp (>= 0). The ramp up holds
        ``k / ramp_samples * points[0]`` for ``k = 0 .. ramp_samples - 1`` (it
        starts at 0 V and reaches the first point where its plateau begins); the
        ramp down holds ``(1 - (k + 1) / ramp_samples) * points[-1]`` (it ends at 0 V).

    Returns
    -------
    waveform : ``(2 * ramp_samples + batch * plateau_samples, n)`` volts.
    mask : ``(same length,)`` bool, True on plateau samples (the ones that are kept).
    """
    points = np.asarray(points, dtype=np.float64)
    if plateau_samples < 1 or ramp_samples < 0:
        raise ConfigError(f"plateau_samples must be >= 1 and ramp_samples >= 0, got {plateau_samples}, {ramp_samples}")
    if points.ndim != 2 or len(points) == 0:
        raise ConfigError(f"points must have shape (batch, n) with batch >= 1, got shape {points.shape}")
    fractions = np.arange(ramp_samples)[:, None] / max(ramp_samples, 1)
    up = fractions * points[0]
    down = (1.0 - (fractions + 1.0 / max(ramp_samples, 1))) * points[-1]
    plateaus = np.repeat(points, plateau_samples, axis=0)
    waveform = np.concatenate([up, plateaus, down], axis=0)
    mask = np.zeros(len(waveform), dtype=bool)
    mask[ramp_samples : ramp_samples + len(plateaus)] = True
    return waveform, mask


def from_waveform(measured: np.ndarray, mask: np.ndarray, plateau_samples: int) -> np.ndarray:
    """Average each plateau of a measured waveform back to one value per point.

    ``measured (T,)`` and ``mask (T,)`` as returned with :func:`to_waveform`; returns ``(batch,)``.
    """
    measured, mask = np.asarray(measured), np.asarray(mask, dtype=bool)
    if measured.shape != mask.shape:
        raise ConfigError(f"measured {measured.shape} and mask {mask.shape} must have the same shape (T,)")
    kept = measured[mask]
    if plateau_samples < 1 or len(kept) % plateau_samples:
        raise ConfigError(f"{len(kept)} plateau samples are not a whole number of plateaus of {plateau_samples}")
    return kept.reshape(-1, plateau_samples).mean(axis=1)


class DeviceProcessor(Processor):
    """Evaluate voltages on a device, as waveforms with plateaus and ramps (no gradient).

    Parameters
    ----------
    device : any :class:`~inmaterio.devices.base.Device`; 0 V must lie inside
        every activation electrode's range (the ramps start and end there).
    plateau_samples : samples per operating point (>= 1), averaged.
    ramp_samples : samples of the ramps from and back to 0 V (>= 0), masked out.
    max_points : operating points per waveform (>= 1); larger inputs are played
        as several waveforms, each with its own ramps and its own device call.
        It is also the step of the progress bar: with the default 512, a
        2,500-point validation that takes a minute on the virtual DNPU reports
        5 times (about every 12 s), for ramps of 0.5 % of the samples (4 plateau
        and 5 ramp samples; the default was 4096 before progress bars). The
        device's noise is keyed per call, so ``max_points``, never
        ``progress``, decides which noise a call draws.
    info : the description to report; default :meth:`DeviceInfo.from_device`.
    progress : show a progress bar (points done, rate, ETA) on calls of more than ``max_points``
        points (on a terminal only; off by default, see :meth:`progress_shown`). While it runs, a device
        with its own bar (an :class:`~inmaterio.devices.instruments.InstrumentDevice`: ``progress_off()``)
        keeps quiet.
    """

    differentiable = False

    def __init__(
        self,
        device: Device,
        *,
        plateau_samples: int = 1,
        ramp_samples: int = 0,
        max_points: int = 512,
        info: DeviceInfo | None = None,
        progress: bool = False,
    ) -> None:
        info = info or DeviceInfo.from_device(device)
        if info.n_activation != device.n_activation:
            raise ConfigError(f"info describes {info.n_activation} activation electrodes, the device has {device.n_activation}")
        wide = [
            name
            for name, (lo, hi), (dev_lo, dev_hi) in zip(info.electrode_names, info.voltage_ranges_v, device.voltage_ranges)
            if lo < dev_lo or hi > dev_hi
        ]
        if wide:
            raise ConfigError(
                f"info ranges {info.voltage_ranges_v} V exceed the device's {device.voltage_ranges.tolist()} V "
                f"on electrode(s) {wide}; the device would refuse voltages the processor accepts"
            )
        super().__init__(info)
        if plateau_samples < 1:
            raise ConfigError(f"plateau_samples must be >= 1, got {plateau_samples}")
        if ramp_samples < 0:
            raise ConfigError(f"ramp_samples must be >= 0, got {ramp_samples}")
        if max_points < 1:
            raise ConfigError(f"max_points must be >= 1, got {max_points}")
        ranges = device.voltage_ranges
        outside = [n for n, (lo, hi) in zip(device.activation_names, ranges) if not lo <= 0.0 <= hi]
        if ramp_samples > 0 and outside:
            raise ConfigError(f"ramps start at 0 V, which is outside the range of electrode(s) {outside}")
        self.device = device
        self.plateau_samples = int(plateau_samples)
        self.ramp_samples = int(ramp_samples)
        self.max_points = int(max_points)
        #: show a progress bar on calls of more than ``max_points`` points (see :meth:`progress_shown`)
        self.progress = bool(progress)
        #: the last waveform played, ``(T, n)`` V, and its plateau mask ``(T,)`` (for inspection and plots)
        self.last_waveform_v: np.ndarray | None = None
        self.last_mask: np.ndarray | None = None

    def forward(self, voltages: torch.Tensor) -> torch.Tensor:
        voltages = self.as_voltages(voltages)
        if voltages.requires_grad and torch.is_grad_enabled():
            raise ConfigError(
                "the device path has no gradient: train on a SurrogateProcessor (or with the genetic "
                "algorithm) and evaluate on the device under torch.no_grad()"
            )
        self.check_voltages(voltages)
        shape = voltages.shape[:-1]
        # float64 ranges from the info, not the buffers: .float() on a network converts the buffers,
        # and a range end rounded to float32 (0.6 -> 0.6000000238) would be refused by the device
        ranges = self.info.ranges_array()
        low, high = ranges[:, 0], ranges[:, 1]
        # within the tolerance of the check; clip float32 rounding so the device sees its exact range
        points = np.clip(voltages.detach().reshape(-1, self.n_activation).cpu().numpy().astype(np.float64), low, high)
        currents = np.empty(len(points))
        shown = self.progress and len(points) > self.max_points
        with ExitStack() as stack:
            what = f"measuring on {type(self.device).__name__}"
            bar = stack.enter_context(progress_bar(len(points), what, unit="pts", enabled=shown))
            quiet = getattr(self.device, "progress_off", None)
            if shown and callable(quiet):  # one bar at a time: this one counts the points
                stack.enter_context(quiet())
            for start in range(0, len(points), self.max_points):
                chunk = points[start : start + self.max_points]
                waveform, mask = to_waveform(chunk, self.plateau_samples, self.ramp_samples)
                measured = self.device.measure(waveform)
                self.last_waveform_v, self.last_mask = waveform, mask
                currents[start : start + len(chunk)] = from_waveform(measured, mask, self.plateau_samples)
                bar.advance(len(chunk))
        return torch.as_tensor(currents, dtype=voltages.dtype, device=voltages.device).reshape(shape)

    @contextmanager
    def progress_shown(self, enabled: bool = True) -> Iterator[DeviceProcessor]:
        """Context manager: the progress bar on (``enabled``) or off inside; the setting is restored after."""
        saved, self.progress = self.progress, bool(enabled)
        try:
            yield self
        finally:
            self.progress = saved

    def random_streams(self, *keys: Any) -> AbstractContextManager[None]:
        """The device's :meth:`~inmaterio.devices.base.Device.random_streams`: key its noise by what it serves."""
        return self.device.random_streams(*keys)

    def close(self) -> None:
        """The device's :meth:`~inmaterio.devices.base.Device.close`: an instrument's tasks released, outputs at 0 V."""
        self.device.close()

    def describe(self) -> dict:
        return {
            **super().describe(),
            "device": self.device.describe(),
            "plateau_samples": self.plateau_samples,
            "ramp_samples": self.ramp_samples,
            "max_points": self.max_points,
        }
