"""The device interface: voltages on activation electrodes in, readout current out.

Every physical or simulated device (the kinetic Monte Carlo
:class:`~inmaterio.devices.HoppingDevice`, an instrument, the analytic test
device) implements :class:`Device`. Conventions:

- voltages are in volts, shape ``(batch, n_activation)``, columns in the
  order of :attr:`Device.activation_names`;
- currents are in nanoamperes, shape ``(batch,)``; a positive current flows
  from the device into the readout electrode (held at 0 V);
- voltages are real numbers: numpy arrays, torch tensors, lists of ints or
  floats (integers are volts like floats); complex numbers, booleans, strings,
  None and object arrays holding them are refused;
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

__all__ = ["Electrode", "Measurement", "Device", "as_real_voltages", "check_voltages"]


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


_REAL_SCALARS = (int, float, np.integer, np.floating)


def _shape_error(voltages: Any, shape: tuple[int, ...], electrodes: tuple[Electrode, ...], expected: str) -> VoltageError:
    names = ", ".join(e.name for e in electrodes)
    given = "" if isinstance(voltages, np.ndarray) or hasattr(voltages, "detach") else f" ({type(voltages).__name__})"
    return VoltageError(f"voltages must have shape {expected} for electrodes [{names}], got shape {shape}{given}")


def _not_real(value: Any, row: int, electrode: Electrode) -> VoltageError:
    what = "complex" if isinstance(value, complex | np.complexfloating) else f"not a real number ({type(value).__name__})"
    return VoltageError(
        f"electrode '{electrode.name}' voltage {value!r} in sample {row} is {what}; "
        f"give a real number of volts in [{electrode.low_v}, {electrode.high_v}] V"
    )


def as_real_voltages(voltages: Any, electrodes: tuple[Electrode, ...], *, leading_dims: bool = False) -> np.ndarray:
    """``voltages`` as a float64 array whose last dimension is the electrodes; only real numbers pass.

    Integers (numpy, torch or Python) are volts like floats. Refused with
    :class:`VoltageError`: text, ragged lists, complex numbers, booleans,
    None or any other object, naming the electrode, the value and the range.
    Shapes: ``(batch, n)`` or ``(n,)`` (a batch of one), returned as
    ``(batch, n)``; with ``leading_dims`` any ``(..., n)``, returned as is.
    Values are not range-checked here (see :func:`check_voltages`).
    """
    n = len(electrodes)
    expected = f"(..., {n})" if leading_dims else f"(batch, {n}) or ({n},)"
    if isinstance(voltages, str | bytes):
        names = ", ".join(e.name for e in electrodes)
        raise VoltageError(f"voltages must be numbers of shape {expected} for electrodes [{names}], got the text {voltages!r}")
    if hasattr(voltages, "detach"):  # a torch tensor: complex, bool and bfloat16 are not numpy-convertible as such
        tensor = voltages.detach().cpu()
        if tensor.is_floating_point():
            tensor = tensor.double()
        voltages = tensor.resolve_conj().numpy()
    if isinstance(voltages, np.ndarray):
        v = voltages
    else:  # lists, tuples, scalars: look at every element before converting
        try:
            v = np.asarray(voltages, dtype=object)
        except ValueError as err:
            raise VoltageError(
                f"voltages must be a rectangular {expected} array of numbers, got a ragged {type(voltages).__name__} ({err})"
            ) from None
        if any(isinstance(x, list | tuple | np.ndarray) for x in v.flat):
            raise VoltageError(
                f"voltages must be a rectangular {expected} array of numbers, got a ragged {type(voltages).__name__} (rows of different lengths)"
            )
    if v.ndim == 0 or v.shape[-1] != n or (not leading_dims and v.ndim > 2):
        raise _shape_error(voltages, tuple(v.shape), electrodes, expected)
    rows = v.reshape(-1, n)
    kind = v.dtype.kind
    if kind == "O":
        for (row, col), value in np.ndenumerate(rows):
            if isinstance(value, bool | np.bool_) or not isinstance(value, _REAL_SCALARS):
                raise _not_real(value, row, electrodes[col])
    elif kind not in "iuf":  # complex, bool, strings, bytes, dates, structured
        if v.size == 0:
            raise VoltageError(f"voltages of dtype {v.dtype} are not real numbers; give int or float volts")
        value = rows[0, 0]
        raise _not_real(value.item() if hasattr(value, "item") else value, 0, electrodes[0])
    v = np.asarray(v, dtype=np.float64)
    return v if leading_dims else v.reshape(-1, n)


def check_voltages(voltages: Any, electrodes: tuple[Electrode, ...]) -> np.ndarray:
    """Validate voltages against electrode ranges; return them as ``(batch, n)`` float64.

    Accepted: numpy arrays, torch tensors, lists or tuples of real numbers
    (integers are numbers of volts like floats), shape ``(batch, n)``; a 1-D
    input of length ``n`` is a batch of one. Raises :class:`VoltageError` for
    a wrong shape, a ragged list, anything that is not a real number
    (complex, bool, strings, None, object arrays holding them), NaN/inf, or
    any value outside its electrode's range; the message names the first
    offending electrode, the value, the sample and the allowed range.
    """
    v = as_real_voltages(voltages, electrodes)
    bad = ~np.isfinite(v)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        e = electrodes[col]
        raise VoltageError(
            f"electrode '{e.name}' voltage {v[row, col]} in sample {row} is not finite; "
            f"allowed range [{e.low_v}, {e.high_v}] V ({int(bad.sum())} non-finite value(s) in total)"
        )
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

    Subclasses implement :meth:`_measure` on already validated voltages and
    :meth:`describe`, set :attr:`electrodes` (activation electrodes, in column
    order) and :attr:`readout_name`, are registered in
    :mod:`inmaterio.devices.registry` and pass
    :func:`inmaterio.devices.conformance.check_device`. A device that holds
    a resource (an instrument's driver tasks) releases it in :meth:`close`.
    """

    electrodes: tuple[Electrode, ...]
    readout_name: str
    #: Mean readout current in nA with every activation electrode at 0 V, where the device's physics
    #: fixes it (e.g. 0 for a passive device in equilibrium), else None; checked by ``check_device``.
    zero_bias_current_na: float | None = None

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
        """Mean readout current and its standard error, both ``(batch,)`` float64 nA.

        Voltages are checked first (:func:`check_voltages`); a refused call measures
        nothing and takes no random stream. An empty batch ``(0, n)`` measures nothing.
        """
        v = self.check_voltages(voltages)
        if len(v) == 0:
            return Measurement(np.zeros(0), np.zeros(0))
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

    def close(self) -> None:  # noqa: B027 - a no-op by default, not abstract: most devices hold nothing
        """Release what the device holds: an instrument's driver tasks, with its outputs at 0 V first.

        Nothing for a simulated device (this default). Safe to call more than once; a device measures
        again after it (an instrument opens new tasks). Whoever builds a device for a run closes it when
        the run ends, normally or by an exception (``with device:`` or :func:`contextlib.closing`).
        """

    def __enter__(self) -> Device:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @abstractmethod
    def _measure(self, voltages: np.ndarray) -> Measurement:
        """Measure validated voltages ``(batch, n_activation)`` float64 V."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-serialisable description recorded as provenance: ``{"type": <registry name>, "package_version":
        ..., <the parameters of its registry spec>}``; :func:`inmaterio.devices.registry.device_from_description`
        rebuilds an identical device from it."""
