"""The device interface: voltages on activation electrodes in, readout current out.

Every physical or simulated device (the kinetic Monte Carlo
:class:`~inmaterio.devices.HoppingDevice`, an instrument, the analytic test
device) implements :class:`Device`. Conventions:

- voltages are in volts, shape ``(batch, n_activation)``, columns in the
  order of :attr:`Device.activation_names`;
- currents are in nanoamperes, shape ``(batch,)``; a positive current flows
  from the device into the readout electrode (held at 0 V);
- a device never clips: voltages outside an electrode's declared range, NaN or
  infinite values, or a wrong number of columns raise :class:`VoltageError`
  naming the electrode, the value and the allowed range, before anything
  reaches the device.

Random streams. A simulated device draws its measurement noise from streams
keyed by what the measurement serves, so that a resumed run measures exactly
what an uninterrupted one would have::

    with device.random_streams("acquisition", plan_id, first_point):
        device.measure_with_error(batch)      # call 0 of this block: the same numbers in any process

Inside a block, the k-th call gets the stream ``(*keys, k)`` whatever was
measured before; blocks nest (the keys add up). Outside any block the calls
of one device object are numbered from 0, which repeats only for the same
sequence of calls on a fresh device.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from inmaterio.errors import VoltageError
from inmaterio.random_streams import Key

__all__ = ["Electrode", "Measurement", "Device", "check_voltages"]


@dataclass(frozen=True)
class Electrode:
    """An activation electrode: its name and its allowed voltage range in volts."""

    name: str
    low_v: float
    high_v: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.low_v) and np.isfinite(self.high_v)) or self.low_v >= self.high_v:
            raise VoltageError(
                f"electrode '{self.name}' range [{self.low_v}, {self.high_v}] V is not an interval with low < high"
            )


@dataclass(frozen=True)
class Measurement:
    """Result of :meth:`Device.measure_with_error`.

    Attributes
    ----------
    current_na : (batch,) mean readout current in nA.
    stderr_na : (batch,) standard error of that mean in nA (0 for exact devices).
    """

    current_na: np.ndarray
    stderr_na: np.ndarray


def check_voltages(voltages: Any, electrodes: tuple[Electrode, ...]) -> np.ndarray:
    """Validate voltages against electrode ranges; return them as ``(batch, n)`` float64.

    A 1-D input of length ``n`` is taken as a batch of one. Raises
    :class:`VoltageError` for a wrong shape, NaN/inf, or any value outside its
    electrode's range (the first offending electrode and sample are named).
    """
    if hasattr(voltages, "detach"):  # torch tensor
        voltages = voltages.detach().cpu().numpy()
    v = np.asarray(voltages, dtype=np.float64)
    n = len(electrodes)
    if v.ndim == 1:
        v = v[None, :]
    if v.ndim != 2 or v.shape[1] != n:
        names = ", ".join(e.name for e in electrodes)
        raise VoltageError(f"voltages must have shape (batch, {n}) for electrodes [{names}], got shape {tuple(np.shape(voltages))}")
    bad = ~np.isfinite(v)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise VoltageError(f"electrode '{electrodes[col].name}' voltage {v[row, col]} in sample {row} is not finite")
    low = np.array([e.low_v for e in electrodes])
    high = np.array([e.high_v for e in electrodes])
    outside = (v < low) | (v > high)
    if outside.any():
        row, col = np.argwhere(outside)[0]
        e = electrodes[col]
        raise VoltageError(
            f"electrode '{e.name}' voltage {v[row, col]:.6g} V in sample {row} outside [{e.low_v}, {e.high_v}] V "
            f"({int(outside.sum())} value(s) out of range in total)"
        )
    return v


class Device(ABC):
    """Abstract device: ``measure(voltages (batch, n_activation) V) -> (batch,) nA``.

    Subclasses implement :meth:`_measure` on already validated voltages, and set
    :attr:`electrodes` (activation electrodes, in column order) and
    :attr:`readout_name`.
    """

    electrodes: tuple[Electrode, ...]
    readout_name: str

    @property
    def activation_names(self) -> list[str]:
        """Names of the activation electrodes, in column order."""
        return [e.name for e in self.electrodes]

    @property
    def n_activation(self) -> int:
        """Number of activation electrodes (columns of ``voltages``)."""
        return len(self.electrodes)

    @property
    def voltage_ranges(self) -> np.ndarray:
        """``(n_activation, 2)`` array of [low, high] voltage per electrode, volts."""
        return np.array([[e.low_v, e.high_v] for e in self.electrodes])

    def check_voltages(self, voltages: Any) -> np.ndarray:
        """See :func:`check_voltages`."""
        return check_voltages(voltages, self.electrodes)

    def measure(self, voltages: Any) -> np.ndarray:
        """Mean readout current in nA, shape ``(batch,)``, for voltages ``(batch, n_activation)`` V."""
        return self.measure_with_error(voltages).current_na

    def measure_with_error(self, voltages: Any) -> Measurement:
        """Mean readout current and its standard error, both ``(batch,)`` nA."""
        v = self.check_voltages(voltages)
        return self._measure(v)

    @contextmanager
    def random_streams(self, *keys: Key) -> Iterator[None]:
        """Key the noise of the calls inside the block by ``(*keys, call number in the block)``."""
        saved = getattr(self, "_stream_scope", None)
        self._stream_scope = [(*(saved[0] if saved else ()), *keys), 0]
        try:
            yield
        finally:
            self._stream_scope = saved

    def next_stream_key(self) -> tuple[Key, ...]:
        """The key of this call's random stream (see the module docstring); each call takes a new one."""
        scope = getattr(self, "_stream_scope", None)
        if scope is None:
            calls = getattr(self, "_unscoped_calls", 0)
            self._unscoped_calls = calls + 1
            return ("unscoped", calls)
        scope[1] += 1
        return ("scoped", *scope[0], scope[1] - 1)

    @abstractmethod
    def _measure(self, voltages: np.ndarray) -> Measurement:
        """Measure validated voltages ``(batch, n_activation)`` float64 V."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description (type, parameters) recorded as provenance."""
