"""Appendable HDF5 measurement files: every acquisition with the instrument's config, calibration and time.

Readable with h5py alone (or any HDF5 tool)::

    /                                   attrs: format = "inmaterio.measurements", format_version = 1
    /session_0000/                      attrs: instrument (JSON: the device's description, the full instrument
                                               config), calibration (JSON), package_version, started_at (UTC ISO)
    /session_0000/acquisition_000000/   datasets: waveform_v (T, n_activation) V, the waveform played;
                                                  readout_v (T + latency, n_readout) V, the raw ADC reading;
                                                  current_na (T, n_readout) nA, latency- and offset-corrected;
                                                  optionally points_v (B, n_activation) V, point_current_na (B,),
                                                  point_stderr_na (B,) nA, window_start (B,), window_stop (B,)
                                        attrs: started_at (UTC ISO), sample_rate_hz, latency_samples,
                                               electrodes (JSON list), readouts (JSON list)

The file is opened, appended to and closed for every acquisition, so a crash
(or Ctrl-C, or SIGTERM) keeps everything measured before it. A new
:class:`MeasurementFile` object starts a new session in an existing file;
nothing saved is ever overwritten. :mod:`~inmaterio.devices.instruments.xarray_export`
opens the acquisitions as xarray Datasets and exports them to NetCDF.

**One file per run.** A device whose config names no ``measurement_file``
appends to the file of the run it measures in: :func:`measurements_in` sets
it for a block (``inmaterio run`` sets ``<run folder>/measurements.h5``, an
SMG acquisition and ``inmaterio device iv`` theirs), read back with
:func:`run_measurement_file`. A resumed run builds its device anew and so
appends a new session to the same file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

import inmaterio
from inmaterio.errors import ModelFileError

__all__ = [
    "MeasurementFile",
    "FORMAT",
    "RUN_MEASUREMENT_FILE",
    "check_format",
    "measurements_in",
    "run_measurement_file",
    "utc_now",
]

FORMAT = "inmaterio.measurements"
FORMAT_VERSION = 1

#: The name of a run's measurement file inside its run folder.
RUN_MEASUREMENT_FILE = "measurements.h5"

_RUN_FILE: ContextVar[Path | None] = ContextVar("inmaterio_run_measurement_file", default=None)


def run_measurement_file() -> Path | None:
    """The measurement file of the run measuring now (set by :func:`measurements_in`), or None."""
    return _RUN_FILE.get()


@contextmanager
def measurements_in(path: str | Path | None, *, keep_outer: bool = False) -> Iterator[Path | None]:
    """Inside the block, instrument devices whose config names no ``measurement_file`` append to ``path``.

    ``path`` None: no file inside the block. With ``keep_outer``, a file already set by an enclosing run
    is kept (a run nested in another, e.g. an acquisition inside an SMG run, writes to the outer run's file).
    Yields the file in force.
    """
    if keep_outer and _RUN_FILE.get() is not None:
        yield _RUN_FILE.get()
        return
    token = _RUN_FILE.set(None if path is None else Path(path))
    try:
        yield _RUN_FILE.get()
    finally:
        _RUN_FILE.reset(token)


def check_format(f: Any, path: str | Path, hint: str) -> None:
    """Raise :class:`ModelFileError` (ending with ``hint``) unless the open ``h5py.File`` ``f`` is a measurement file.

    A measurement file has the root attribute ``format = "inmaterio.measurements"``.
    """
    if f.attrs.get("format") != FORMAT:
        raise ModelFileError(
            f"'{path}' is an HDF5 file but not an inmaterio measurement file (format attribute "
            f"{f.attrs.get('format')!r}, expected {FORMAT!r}); {hint}"
        )


def utc_now() -> str:
    """The current UTC time, ISO 8601 with microseconds."""
    return datetime.now(UTC).isoformat(timespec="microseconds")


class MeasurementFile:
    """A session in an HDF5 measurement file (see the module docstring).

    Parameters
    ----------
    path : the file; created if missing, appended to if it is a measurement file.
    instrument : JSON-serialisable snapshot of the instrument (its description and config).
    calibration : JSON-serialisable calibration in force.
    """

    def __init__(self, path: str | Path, instrument: dict[str, Any], calibration: dict[str, Any]) -> None:
        import h5py

        self.path = Path(path)
        self._instrument = json.dumps(instrument, sort_keys=True)
        self._calibration = json.dumps(calibration, sort_keys=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with h5py.File(self.path, "a") as f:
                if len(f.keys()) == 0 and "format" not in f.attrs:
                    f.attrs["format"] = FORMAT
                    f.attrs["format_version"] = FORMAT_VERSION
                    f.attrs["created_at"] = utc_now()
                else:
                    check_format(f, self.path, "give another measurement_file")
                k = 0
                while f"session_{k:04d}" in f:
                    k += 1
                self.session = f"session_{k:04d}"
                group = f.create_group(self.session)
                group.attrs["instrument"] = self._instrument
                group.attrs["calibration"] = self._calibration
                group.attrs["package_version"] = inmaterio.__version__
                group.attrs["started_at"] = utc_now()
        except OSError as err:
            raise ModelFileError(f"cannot open '{self.path}' as an HDF5 measurement file: {err}") from None
        self.acquisitions = 0

    def append(
        self,
        *,
        waveform_v: np.ndarray,
        readout_v: np.ndarray,
        current_na: np.ndarray,
        started_at: str,
        sample_rate_hz: float,
        latency_samples: int,
        electrodes: list[str],
        readouts: list[str],
        points: dict[str, np.ndarray] | None = None,
    ) -> str:
        """Write one acquisition as a new group, flush and close; return the group's path in the file."""
        import h5py

        name = f"{self.session}/acquisition_{self.acquisitions:06d}"
        with h5py.File(self.path, "a") as f:
            group = f.create_group(name)
            group.create_dataset("waveform_v", data=np.asarray(waveform_v, dtype=np.float64))
            group.create_dataset("readout_v", data=np.asarray(readout_v, dtype=np.float64))
            group.create_dataset("current_na", data=np.asarray(current_na, dtype=np.float64))
            for key, value in (points or {}).items():
                group.create_dataset(key, data=np.asarray(value))
            group.attrs["started_at"] = started_at
            group.attrs["sample_rate_hz"] = float(sample_rate_hz)
            group.attrs["latency_samples"] = int(latency_samples)
            group.attrs["electrodes"] = json.dumps(electrodes)
            group.attrs["readouts"] = json.dumps(readouts)
            f.flush()
        self.acquisitions += 1
        return name
