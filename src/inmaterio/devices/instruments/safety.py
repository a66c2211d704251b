"""The safety layer every instrument backend goes through: nothing reaches a channel without it.

A waveform ``(T, n_activation)`` V, one row per sample at the sampling rate
``f`` (Hz), is played only if

- every value is finite and inside its electrode's range ``[low_v, high_v]``
  (from the channel config) and inside the absolute hard limit
  ``|v| <= hard_limit_v``;
- it starts and ends at exactly 0 V on every electrode (the outputs rest at 0 V);
- no output changes faster than ``max_ramp_v_per_s``: for every pair of
  consecutive samples, ``|v[k+1] - v[k]| * f <= max_ramp_v_per_s`` (the first
  and last samples are 0 V, so the jumps from and back to rest are covered).

Errors are :class:`~inmaterio.errors.VoltageError` naming the electrode, the
value, the sample and the limit; they are raised before any driver call.

Readings are checked for clipping: a sample at either end of a readout's ADC
range means a saturated amplifier, and raises :class:`ReadoutClippingError`
naming the readout, the number of clipped samples, the first one and the range.

:func:`safe_outputs` is the context every acquisition runs in: on any
exception, Ctrl-C (``KeyboardInterrupt``) or SIGTERM (turned into
:class:`TerminatedError` while the block runs; the previous handler is
restored after) it sets every output to 0 V before the error propagates.

:func:`ramp_between` builds the linear ramps that keep a waveform inside the
ramp limit; :func:`plot_waveform` draws a waveform for a dry run.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np

from inmaterio.devices.instruments.config import ActivationChannel, ReadoutChannel, SafetyConfig
from inmaterio.errors import ConfigError, InmaterioError, VoltageError

__all__ = [
    "ReadoutClippingError",
    "InstrumentError",
    "TerminatedError",
    "check_channels",
    "check_waveform",
    "check_clipping",
    "ramp_between",
    "safe_outputs",
    "plot_waveform",
]


class ReadoutClippingError(InmaterioError, RuntimeError):
    """A readout sample at the end of its ADC range: the amplifier saturated and the current is unknown."""


class InstrumentError(InmaterioError, RuntimeError):
    """A driver call failed; the outputs were set to 0 V before this was raised (the message says which call)."""


class TerminatedError(KeyboardInterrupt):
    """SIGTERM received during an acquisition (a :class:`KeyboardInterrupt`, so it stops what Ctrl-C stops)."""


def check_channels(activation: Sequence[ActivationChannel], safety: SafetyConfig) -> None:
    """Raise :class:`ConfigError` if an electrode's configured range goes beyond the hard limit."""
    for c in activation:
        if c.low_v < -safety.hard_limit_v or c.high_v > safety.hard_limit_v:
            raise ConfigError(
                f"electrode '{c.electrode}' range [{c.low_v}, {c.high_v}] V goes beyond the hard limit "
                f"[-{safety.hard_limit_v}, {safety.hard_limit_v}] V (safety.hard_limit_v)"
            )


def check_waveform(
    waveform_v: Any, activation: Sequence[ActivationChannel], sample_rate_hz: float, safety: SafetyConfig
) -> np.ndarray:
    """Validate a waveform against the limits (see the module docstring); return it as ``(T, n)`` float64 V.

    Raises
    ------
    VoltageError
        Naming the electrode, the value, the sample and the limit it breaks.
    """
    names = [c.electrode for c in activation]
    w = np.asarray(waveform_v)
    if w.dtype.kind not in "iuf":
        raise VoltageError(f"a waveform must be real numbers of volts, got dtype {w.dtype}")
    w = w.astype(np.float64)
    if w.ndim != 2 or w.shape[1] != len(names) or w.shape[0] < 1:
        raise VoltageError(f"a waveform must have shape (samples >= 1, {len(names)}) for electrodes {names}, got {w.shape}")
    bad = ~np.isfinite(w)
    if bad.any():
        k, j = np.argwhere(bad)[0]
        raise VoltageError(f"electrode '{names[j]}' voltage {w[k, j]} in waveform sample {k} is not finite")
    low = np.array([c.low_v for c in activation])
    high = np.array([c.high_v for c in activation])
    outside = (w < low) | (w > high)
    if outside.any():
        k, j = np.argwhere(outside)[0]
        raise VoltageError(
            f"electrode '{names[j]}' voltage {w[k, j]:.6g} V in waveform sample {k} outside [{low[j]}, {high[j]}] V "
            f"({int(outside.sum())} sample value(s) out of range); nothing was played"
        )
    hard = np.abs(w) > safety.hard_limit_v
    if hard.any():
        k, j = np.argwhere(hard)[0]
        raise VoltageError(
            f"electrode '{names[j]}' voltage {w[k, j]:.6g} V in waveform sample {k} beyond the hard limit "
            f"[-{safety.hard_limit_v}, {safety.hard_limit_v}] V; nothing was played"
        )
    for where, row in (("starts", 0), ("ends", -1)):
        off = np.flatnonzero(w[row] != 0.0)
        if off.size:
            j = off[0]
            raise VoltageError(
                f"electrode '{names[j]}' waveform {where} at {w[row, j]:.6g} V, not at 0 V: every waveform must start and "
                "end at 0 V (ramp from and back to 0 V); nothing was played"
            )
    step_limit = safety.max_ramp_v_per_s / sample_rate_hz
    steps = np.abs(np.diff(w, axis=0))
    # a tiny relative slack: ramps built by ramp_between reach the limit up to float64 rounding
    fast = steps > step_limit * (1 + 1e-9)
    if fast.any():
        k, j = np.argwhere(fast)[0]
        raise VoltageError(
            f"electrode '{names[j]}' ramps {steps[k, j]:.6g} V between waveform samples {k} and {k + 1}, i.e. "
            f"{steps[k, j] * sample_rate_hz:.6g} V/s at {sample_rate_hz:g} Hz; the limit is {safety.max_ramp_v_per_s:g} V/s "
            f"({step_limit:.6g} V per sample, safety.max_ramp_v_per_s); nothing was played"
        )
    return w


def check_clipping(readout_v: np.ndarray, readout: Sequence[ReadoutChannel], sample_rate_hz: float) -> None:
    """Raise :class:`ReadoutClippingError` if any sample of ``readout_v (T, n_readout)`` V sits at an end of its ADC range."""
    for j, c in enumerate(readout):
        column = readout_v[:, j]
        clipped = (column <= c.low_v) | (column >= c.high_v)
        if clipped.any():
            k = int(np.argmax(clipped))
            raise ReadoutClippingError(
                f"readout '{c.name}' clipped: {int(clipped.sum())} of {len(column)} sample(s) at the end of the ADC range "
                f"[{c.low_v}, {c.high_v}] V, first at sample {k} (t = {k / sample_rate_hz:.6g} s, {column[k]:.6g} V = "
                f"{column[k] * c.gain_na_per_v:.6g} nA): the amplifier saturated; lower the gain (gain_na_per_v larger) "
                "or the voltages"
            )


def ramp_between(start_v: np.ndarray, stop_v: np.ndarray, max_step_v: float) -> np.ndarray:
    """The samples of a linear ramp from ``start_v (n,)`` to ``stop_v (n,)`` V, excluding ``start_v``, including ``stop_v``.

    The number of samples is the smallest that keeps every step at most
    ``max_step_v`` (V per sample); ``(0, n)`` if the two are equal. Returns ``(m, n)`` V.
    """
    span = float(np.max(np.abs(stop_v - start_v))) if len(start_v) else 0.0
    m = int(np.ceil(span / max_step_v - 1e-12)) if span > 0 else 0
    fractions = np.arange(1, m + 1)[:, None] / max(m, 1)
    ramp = (1.0 - fractions) * start_v + fractions * stop_v
    # float rounding must not step outside the two ends (a range end would be refused by a hair), and the
    # ramp must land on ``stop_v`` exactly
    ramp = np.clip(ramp, np.minimum(start_v, stop_v), np.maximum(start_v, stop_v))
    if m:
        ramp[-1] = stop_v
    return ramp


@contextmanager
def safe_outputs(zero_outputs: Callable[[], None]) -> Iterator[None]:
    """Run the block; on any exception, Ctrl-C or SIGTERM call ``zero_outputs()`` (outputs to 0 V), then re-raise.

    The error is marked (``outputs_zeroed = True``) so that enclosing blocks do not zero the outputs again.

    SIGTERM is turned into :class:`TerminatedError` inside the block (main thread only); the previous
    handler is restored on exit. A failure of ``zero_outputs`` itself is chained to the original error.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = None
    if main:

        def _terminate(signum: int, frame: Any) -> None:
            raise TerminatedError(f"signal {signum} (SIGTERM) during an acquisition; outputs set to 0 V")

        previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        yield
    except BaseException as err:
        if not getattr(err, "outputs_zeroed", False):  # an inner block (a nested acquisition) did it already
            try:
                zero_outputs()
            except Exception as zero_err:  # noqa: BLE001 - the original error matters most; keep both
                raise InstrumentError(f"setting the outputs to 0 V failed ({zero_err}) after: {err}") from err
            try:
                err.outputs_zeroed = True  # type: ignore[attr-defined]
            except AttributeError:  # pragma: no cover - exceptions with __slots__
                pass
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def plot_waveform(waveform_v: np.ndarray, names: Sequence[str], sample_rate_hz: float, mask: np.ndarray | None = None):
    """A matplotlib figure of a waveform ``(T, n)`` V against time (s), kept (averaged) samples shaded by ``mask (T,)``."""
    import matplotlib.pyplot as plt

    t = np.arange(len(waveform_v)) / sample_rate_hz
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for j, name in enumerate(names):
        ax.plot(t, waveform_v[:, j], label=name, lw=1)
    if mask is not None and mask.any():
        lo, hi = ax.get_ylim()
        ax.fill_between(t, lo, hi, where=mask, color="grey", alpha=0.15, step="mid", label="averaged")
        ax.set_ylim(lo, hi)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("voltage (V)")
    ax.legend(fontsize=7, ncol=4, loc="upper right")
    fig.tight_layout()
    return fig
