"""The measurement backend interface below :class:`~inmaterio.devices.base.Device`.

A backend has activation channels (analogue outputs, one per activation
electrode, in column order), readout channels (analogue inputs, each with a
gain in nA per ADC volt) and one sampling rate ``sample_rate_hz`` shared by
outputs and inputs. Its one operation is a synchronised write-and-read::

    readout_v = backend.play(waveform_v)     # (T, n_activation) V -> (T, n_readout) V at the ADC

sample ``k`` of the reading is taken on the same clock tick as sample ``k`` of
the waveform (shared sample clock, outputs started by the inputs' start
trigger). What the instrument adds on top (a latency of some samples, an
offset) is calibrated and corrected by
:class:`~inmaterio.devices.instruments.InstrumentDevice`, not here.

:meth:`MeasurementBackend.play` is the only way to a channel and goes
through the safety layer (:mod:`~inmaterio.devices.instruments.safety`):
the waveform is checked before any driver call, the reading is checked for
clipping after, and any error on the way (driver errors, Ctrl-C, SIGTERM)
sets the outputs to 0 V before it propagates. Backends implement
:meth:`~MeasurementBackend._play` and :meth:`~MeasurementBackend._zero_outputs` only.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

from inmaterio.devices.instruments.config import ActivationChannel, ReadoutChannel, SafetyConfig
from inmaterio.devices.instruments.safety import InstrumentError, check_channels, check_clipping, check_waveform, safe_outputs
from inmaterio.random_streams import Key

__all__ = ["MeasurementBackend"]


class MeasurementBackend(ABC):
    """Activation outputs, readout inputs, one sampling rate; a safe, synchronised write-and-read.

    Attributes
    ----------
    activation : the analogue outputs, in column order of the waveforms.
    readout : the analogue inputs, in column order of the readings.
    sample_rate_hz : the shared sampling rate, Hz.
    safety : the limits every waveform is checked against.
    plays : number of waveforms played so far (refused ones are not counted).
    """

    def __init__(
        self,
        activation: Sequence[ActivationChannel],
        readout: Sequence[ReadoutChannel],
        sample_rate_hz: float,
        safety: SafetyConfig,
    ) -> None:
        self.activation = tuple(activation)
        self.readout = tuple(readout)
        self.sample_rate_hz = float(sample_rate_hz)
        self.safety = safety
        check_channels(self.activation, safety)
        self.plays = 0

    @property
    def activation_names(self) -> list[str]:
        """Electrode names of the outputs, in column order."""
        return [c.electrode for c in self.activation]

    def check(self, waveform_v: Any) -> np.ndarray:
        """The safety check alone (a dry run): ``(T, n_activation)`` float64 V, or :class:`VoltageError`."""
        return check_waveform(waveform_v, self.activation, self.sample_rate_hz, self.safety)

    def play(self, waveform_v: Any, key: tuple[Key, ...] = ()) -> np.ndarray:
        """Write ``waveform_v (T, n_activation)`` V and read ``(T, n_readout)`` V at the ADC on the same clock.

        ``key`` names the random stream of a simulated backend's noise (ignored by hardware).

        Raises
        ------
        VoltageError
            The waveform breaks a limit; nothing reached the driver.
        ReadoutClippingError
            A reading saturated (the outputs are back at 0 V: every waveform ends there).
        InstrumentError
            A driver call failed; the outputs were set to 0 V first.
        """
        w = self.check(waveform_v)
        with safe_outputs(self.zero_outputs):
            try:
                readout_v = np.asarray(self._play(w, key), dtype=np.float64)
            except (KeyboardInterrupt, InstrumentError):
                raise
            except Exception as err:
                if type(err).__module__.startswith("inmaterio"):
                    raise
                message = " ".join(str(err).split())
                raise InstrumentError(f"{type(self).__name__}: {type(err).__name__}: {message}; outputs set to 0 V") from err
        self.plays += 1
        if readout_v.shape != (len(w), len(self.readout)):
            raise InstrumentError(f"{type(self).__name__} read shape {readout_v.shape}, expected {(len(w), len(self.readout))}")
        check_clipping(readout_v, self.readout, self.sample_rate_hz)
        return readout_v

    def zero_outputs(self) -> None:
        """Set every output to 0 V now (called on errors, Ctrl-C and SIGTERM, and by :meth:`close`)."""
        self._zero_outputs()

    def close(self) -> None:
        """Outputs to 0 V and release the driver's resources (default: outputs to 0 V)."""
        self.zero_outputs()

    @abstractmethod
    def _play(self, waveform_v: np.ndarray, key: tuple[Key, ...]) -> np.ndarray:
        """Write a checked waveform ``(T, n_activation)`` V, return the reading ``(T, n_readout)`` V."""

    @abstractmethod
    def _zero_outputs(self) -> None:
        """Drive every output to 0 V."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """The backend's config as JSON (recorded in measurement files)."""
