"""Measurement files as xarray Datasets, and their export to NetCDF (``pip install "inmaterio[xarray]"``).

:func:`open_measurements` reads an HDF5 measurement file
(:mod:`~inmaterio.devices.instruments.measurement_file`) into one
``xarray.Dataset`` per acquisition, keyed by its group in the file
(``"session_0000/acquisition_000000"``), in file order. Every HDF5 dataset of
the group becomes the data variable of the same name, with the same dtype and
values bit for bit; names and units::

    dimensions   sample (T), raw_sample (T + latency_samples), electrode (n_activation), readout (n_readout),
                 point (B, the operating points of the acquisition)
    coordinates  electrode (str), readout (str): channel names;
                 time_s (sample) s = sample index / sample_rate_hz: the clock tick of each waveform sample;
                 raw_time_s (raw_sample) s = raw sample index / sample_rate_hz
    variables    waveform_v (sample, electrode) V            the waveform played
                 readout_v (raw_sample, readout) V           the raw ADC reading, row k on the tick of waveform row k
                 current_na (sample, readout) nA             latency- and offset-corrected, aligned with waveform_v
                 and, in an acquisition of operating points (every one an InstrumentDevice measures):
                 points_v (point, electrode) V               the operating points
                 point_current_na (point) nA                 the mean current of the device's readout over each
                 point_stderr_na (point) nA                  point's window, and its standard error
                 window_start, window_stop (point) sample    the window [start, stop) averaged, as sample indices
    attrs        source_file, source_group; file_format, file_format_version, file_created_at (the file's root);
                 instrument (JSON: the device's description and full instrument config), calibration (JSON),
                 package_version, session_started_at (the session's); started_at, sample_rate_hz,
                 latency_samples, electrodes (JSON list), readouts (JSON list) (the acquisition's)

Each variable has ``attrs["units"]`` (``"V"``, ``"nA"``, ``"s"``, ``"sample"``) and a
``long_name``. A dataset a lab added to a group by hand is kept, with
dimensions ``<name>_dim0``, ``<name>_dim1``, ...

:func:`export_netcdf` writes every acquisition to its own NetCDF-4 file
(``<out>/session_0000_acquisition_000000.nc``, through h5netcdf) that
``xarray.open_dataset`` reads back identical to :func:`open_measurements`'s
Dataset, with one more attribute, ``export_package_version``. It never
overwrites a file.

xarray (and h5netcdf for the export) is imported inside these functions only;
without it they raise :class:`~inmaterio.errors.ConfigError` saying how to
install it.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

import inmaterio
from inmaterio.devices.instruments.measurement_file import FORMAT_VERSION, check_format
from inmaterio.errors import ConfigError, ModelFileError

__all__ = ["open_measurements", "export_netcdf", "netcdf_name"]

#: dimensions and (units, long name) of the datasets an acquisition group holds
_VARIABLES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "waveform_v": (("sample", "electrode"), "V", "activation voltage played"),
    "readout_v": (("raw_sample", "readout"), "V", "raw ADC reading (latency not removed)"),
    "current_na": (("sample", "readout"), "nA", "readout current, latency- and offset-corrected"),
    "points_v": (("point", "electrode"), "V", "operating point"),
    "point_current_na": (("point",), "nA", "mean readout current of the operating point"),
    "point_stderr_na": (("point",), "nA", "standard error of the operating point's mean current"),
    "window_start": (("point",), "sample", "first averaged sample of the operating point"),
    "window_stop": (("point",), "sample", "one past the last averaged sample of the operating point"),
}
_INSTALL = 'pip install "inmaterio[xarray]"'


def _import(name: str, what: str) -> Any:
    """The module ``name``, or a :class:`ConfigError` saying how to install it."""
    try:
        return importlib.import_module(name)
    except ImportError as err:
        raise ConfigError(f"{what} needs the '{name}' package ({err}); install it with {_INSTALL}") from None


def _attr(value: Any) -> Any:
    """An HDF5 attribute as h5py reads it, with bytes decoded to str."""
    return value.decode() if isinstance(value, bytes | np.bytes_) else value


_SESSION_ATTRS = ("instrument", "calibration", "package_version", "started_at")
_ACQUISITION_ATTRS = ("started_at", "sample_rate_hz", "latency_samples", "electrodes", "readouts")


def _numbered(group: Any, prefix: str) -> list[str]:
    """The members ``<prefix><number>`` of an HDF5 group, by number."""
    names = [k for k in group if k.startswith(prefix) and k[len(prefix) :].isdigit()]
    return sorted(names, key=lambda k: int(k[len(prefix) :]))


def _attrs(path: Path, obj: Any, where: str, names: tuple[str, ...]) -> dict[str, Any]:
    """The attributes ``names`` of an HDF5 group, or a :class:`ModelFileError` naming the missing ones."""
    missing = [k for k in names if k not in obj.attrs]
    if missing:
        raise ModelFileError(f"'{path}': '{where}' lacks the attribute(s) {missing}; the file is corrupt")
    return {k: _attr(obj.attrs[k]) for k in names}


def _acquisitions(path: Path, *, arrays: bool = True) -> Iterator[tuple[str, dict[str, np.ndarray], dict[str, Any]]]:
    """``(group name, arrays, attrs)`` of every acquisition of the file, in file order, read with h5py.

    The file is open while the generator runs; arrays are read one acquisition at a time (not at all,
    ``{}``, without ``arrays``).
    """
    import h5py

    if not path.is_file():
        raise ModelFileError(f"no measurement file '{path}'" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ModelFileError(f"cannot open '{path}' as an HDF5 measurement file: {' '.join(str(err).split())}") from None
    with f:
        check_format(f, path, "give a measurements.h5 written by inmaterio")
        version = _attr(f.attrs.get("format_version"))
        if version != FORMAT_VERSION:
            version = version.item() if isinstance(version, np.generic) else version
            raise ModelFileError(
                f"'{path}' is a measurement file of format version {version}; this inmaterio reads version "
                f"{FORMAT_VERSION} (upgrade inmaterio)"
            )
        root = {f"file_{k}": _attr(f.attrs[k]) for k in ("format", "format_version", "created_at") if k in f.attrs}
        for session_name in _numbered(f, "session_"):
            session = f[session_name]
            if not isinstance(session, h5py.Group):
                raise ModelFileError(f"'{path}': '{session_name}' is not a group; the file is corrupt")
            common = {**root, **_attrs(path, session, session_name, _SESSION_ATTRS)}
            common["session_started_at"] = common.pop("started_at")
            for name in _numbered(session, "acquisition_"):
                group = session[name]
                where = f"{session_name}/{name}"
                if not isinstance(group, h5py.Group):
                    raise ModelFileError(f"'{path}': '{where}' is not a group; the file is corrupt")
                attrs = _attrs(path, group, where, _ACQUISITION_ATTRS)
                try:
                    data = {k: group[k][()] for k in group if isinstance(group[k], h5py.Dataset)} if arrays else {}
                except OSError as err:
                    raise ModelFileError(f"'{path}': acquisition '{where}' cannot be read: {err}") from None
                yield where, data, {"source_file": path.name, "source_group": where, **common, **attrs}


def _dataset(xr: Any, path: Path, where: str, arrays: dict[str, np.ndarray], attrs: dict[str, Any]) -> Any:
    """The ``xarray.Dataset`` of one acquisition (see the module docstring)."""
    missing = [k for k in ("waveform_v", "readout_v", "current_na") if k not in arrays]
    if missing:
        raise ModelFileError(f"'{path}': acquisition '{where}' lacks the dataset(s) {missing}; the file is corrupt")
    try:
        electrodes = [str(e) for e in json.loads(attrs["electrodes"])]
        readouts = [str(r) for r in json.loads(attrs["readouts"])]
    except (TypeError, ValueError) as err:
        raise ModelFileError(f"'{path}': acquisition '{where}': electrodes or readouts is not a JSON list ({err})") from None
    rate = float(attrs["sample_rate_hz"])
    variables = {}
    order = [k for k in _VARIABLES if k in arrays] + sorted(k for k in arrays if k not in _VARIABLES)
    for key, value in ((k, arrays[k]) for k in order):
        dims, units, long_name = _VARIABLES.get(key, (tuple(f"{key}_dim{i}" for i in range(value.ndim)), None, None))
        if value.ndim != len(dims):
            raise ModelFileError(f"'{path}': '{where}/{key}' has shape {value.shape}, expected dimensions {dims}")
        meta = {} if units is None else {"units": units, "long_name": long_name}
        variables[key] = (dims, value, meta)
    n_samples, n_raw = len(arrays["waveform_v"]), len(arrays["readout_v"])
    coords = {
        "electrode": ("electrode", np.array(electrodes, dtype=str), {"long_name": "activation electrode"}),
        "readout": ("readout", np.array(readouts, dtype=str), {"long_name": "readout channel"}),
        "time_s": ("sample", np.arange(n_samples) / rate, {"units": "s", "long_name": "time of the waveform sample"}),
        "raw_time_s": ("raw_sample", np.arange(n_raw) / rate, {"units": "s", "long_name": "time of the raw reading"}),
    }
    try:
        return xr.Dataset(variables, coords=coords, attrs=attrs)
    except ValueError as err:  # sizes that disagree, e.g. waveform_v's columns and the electrode names
        raise ModelFileError(f"'{path}': acquisition '{where}' is inconsistent: {' '.join(str(err).split())}") from None


def open_measurements(path: str | Path) -> dict[str, Any]:
    """Every acquisition of a measurement file as an ``xarray.Dataset`` (layout in the module docstring).

    Returns ``{"session_0000/acquisition_000000": Dataset, ...}`` in file order; the arrays are in memory
    (the file is closed on return). Concatenate the points of a run with
    ``xarray.concat([d[["points_v", "point_current_na", "point_stderr_na"]] for d in result.values()], dim="point")``.

    Raises
    ------
    ModelFileError
        ``path`` is missing, not HDF5, not an inmaterio measurement file (its ``format`` attribute), of a newer
        format version, or corrupt (the group and what is wrong are named).
    ConfigError
        xarray is not installed (the message says ``pip install "inmaterio[xarray]"``).
    """
    xr = _import("xarray", "open_measurements")
    path = Path(path)
    return {where: _dataset(xr, path, where, arrays, attrs) for where, arrays, attrs in _acquisitions(path)}


def netcdf_name(group: str) -> str:
    """The NetCDF file name :func:`export_netcdf` gives an acquisition: ``session_0000/acquisition_000000`` ->
    ``session_0000_acquisition_000000.nc``."""
    return group.replace("/", "_") + ".nc"


def _publish(temporary: Path, final: Path) -> None:
    """Move a finished file to ``final`` without ever replacing a file there (hard link, else exclusive copy)."""
    try:
        os.link(temporary, final)
    except FileExistsError:
        raise ModelFileError(f"'{final}' exists; export to another --out (an export never overwrites a file)") from None
    except OSError:  # no hard links on this file system: an exclusive create refuses an existing file the same way
        try:
            dst = open(final, "xb")  # closed below; removed if the copy fails
        except FileExistsError:
            raise ModelFileError(f"'{final}' exists; export to another --out (an export never overwrites a file)") from None
        try:
            with dst, open(temporary, "rb") as src:
                shutil.copyfileobj(src, dst)
        except BaseException:
            final.unlink(missing_ok=True)  # the file this call created, half written
            raise


def export_netcdf(path: str | Path, out_dir: str | Path) -> list[Path]:
    """Write every acquisition of a measurement file to ``out_dir/<session>_<acquisition>.nc`` (NetCDF-4).

    Parameters
    ----------
    path : the HDF5 measurement file (e.g. a run folder's ``measurements.h5``).
    out_dir : the folder of the NetCDF files; created if missing (it may hold other files).

    Each file holds the Dataset :func:`open_measurements` gives (plus the attribute
    ``export_package_version``) and opens with ``xarray.open_dataset(file)`` alone (h5netcdf or netCDF4
    installed). Nothing is written unless every file can be new: if one exists, the export stops before
    writing anything and names it; a file that appears meanwhile is not replaced either. A failure midway
    leaves the files finished before it and no partial file.

    Returns the files written, in file order.

    Raises
    ------
    ModelFileError
        A bad, foreign or corrupt measurement file (see :func:`open_measurements`), one without
        acquisitions, or an output file that exists.
    ConfigError
        ``out_dir`` is a file, or xarray / h5netcdf is not installed (``pip install "inmaterio[xarray]"``).
    """
    xr = _import("xarray", "export_netcdf")
    _import("h5netcdf", "export_netcdf")
    path, out_dir = Path(path), Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"'{out_dir}' is a file; give a folder for the NetCDF files")
    groups = [where for where, _, _ in _acquisitions(path, arrays=False)]
    if not groups:
        raise ModelFileError(f"'{path}' holds no acquisitions; nothing to export")
    existing = [out_dir / netcdf_name(g) for g in groups if (out_dir / netcdf_name(g)).exists()]
    if existing:
        raise ModelFileError(
            f"'{existing[0]}' exists ({len(existing)} of the {len(groups)} files to write do); export to another "
            "--out (an export never overwrites a file)"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for where, arrays, attrs in _acquisitions(path):
        dataset = _dataset(xr, path, where, arrays, {**attrs, "export_package_version": inmaterio.__version__})
        final = out_dir / netcdf_name(where)
        handle, name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=".partial", dir=out_dir)
        os.close(handle)
        temporary = Path(name)
        try:
            dataset.to_netcdf(temporary, mode="w", engine="h5netcdf")
            _publish(temporary, final)
        finally:
            temporary.unlink(missing_ok=True)
        written.append(final)
    return written
