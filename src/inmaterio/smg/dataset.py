"""Measured datasets: voltages in, currents out; saving, loading, cleaning, splitting.

On-disk format (a directory)::

    <dir>/data.npz       arrays, loadable with numpy.load(allow_pickle=False):
                           voltages_v  (N, n_electrodes) float64  V
                           current_na  (N,)              float64  nA
                           stderr_na   (N,)              float64  nA (standard error of each mean)
    <dir>/dataset.json   {"format": "inmaterio-dataset", "format_version": 1,
                          "n_samples": N, "n_electrodes": n, "metadata": {...}}

``metadata`` holds at least ``electrode_names``, ``readout_name``,
``voltage_ranges_v`` ((n, 2) V), ``device`` (the device's ``describe()``),
``units``, ``inmaterio_version``, ``created_utc`` and, for acquired data,
``fingerprint`` (of the acquisition run: plan, device, batch size),
``plan_fingerprint`` (of the planned voltages) and the ``sampling`` config.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import inmaterio
from inmaterio.errors import ModelFileError
from inmaterio.fileio import atomic_path, read_json
from inmaterio.smg.config import PostprocessConfig

__all__ = [
    "Dataset",
    "save_dataset",
    "dataset_writers",
    "load_dataset",
    "is_dataset",
    "postprocess",
    "split",
    "noise_floor_na",
    "dataset_fingerprint",
    "base_metadata",
]

FORMAT = "inmaterio-dataset"
FORMAT_VERSION = 1
DATA_FILE = "data.npz"
META_FILE = "dataset.json"
UNITS = {"voltages_v": "V", "current_na": "nA", "stderr_na": "nA"}


@dataclass
class Dataset:
    """Measured points.

    Attributes
    ----------
    voltages_v : (N, n_electrodes) float64 activation voltages, V.
    current_na : (N,) float64 mean readout current, nA.
    stderr_na : (N,) float64 standard error of each mean, nA (0 for exact devices).
    metadata : JSON-serialisable provenance (see the module docstring).
    """

    voltages_v: np.ndarray
    current_na: np.ndarray
    stderr_na: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.voltages_v = np.asarray(self.voltages_v, dtype=np.float64)
        self.current_na = np.asarray(self.current_na, dtype=np.float64)
        self.stderr_na = np.asarray(self.stderr_na, dtype=np.float64)
        n = len(self.current_na)
        if self.voltages_v.ndim != 2 or self.voltages_v.shape[0] != n:
            raise ValueError(f"voltages_v must have shape (N, n_electrodes) with N = {n}, got {self.voltages_v.shape}")
        if self.current_na.ndim != 1 or self.stderr_na.shape != (n,):
            raise ValueError(
                f"current_na and stderr_na must have shape (N,), got {self.current_na.shape} and {self.stderr_na.shape}"
            )

    def __len__(self) -> int:
        return len(self.current_na)

    def subset(self, index: np.ndarray, **metadata: Any) -> Dataset:
        """The points at ``index`` (integer or boolean array); ``metadata`` entries are added."""
        return Dataset(self.voltages_v[index], self.current_na[index], self.stderr_na[index], {**self.metadata, **metadata})


def base_metadata(device: Any) -> dict[str, Any]:
    """Metadata every dataset of ``device`` (a :class:`~inmaterio.devices.Device`) carries."""
    return {
        "electrode_names": list(device.activation_names),
        "readout_name": device.readout_name,
        "voltage_ranges_v": np.asarray(device.voltage_ranges, dtype=float).tolist(),
        "device": device.describe(),
        "units": dict(UNITS),
        "inmaterio_version": inmaterio.__version__,
        "created_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }


def dataset_fingerprint(*datasets: Dataset) -> str:
    """sha256 hex digest of the arrays of ``datasets`` (identifies the data a model was trained on)."""
    digest = hashlib.sha256()
    for ds in datasets:
        for array in (ds.voltages_v, ds.current_na, ds.stderr_na):
            digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    return digest.hexdigest()


def is_dataset(directory: str | Path) -> bool:
    """True when ``directory`` holds a saved dataset (both files present)."""
    directory = Path(directory)
    return (directory / DATA_FILE).is_file() and (directory / META_FILE).is_file()


def dataset_writers(dataset: Dataset) -> dict[str, Callable[[Path], None]]:
    """The two files of a saved dataset as ``{name: write(path)}``, arrays first, header last."""

    def write_arrays(path: Path) -> None:
        with open(path, "wb") as fh:
            np.savez(fh, voltages_v=dataset.voltages_v, current_na=dataset.current_na, stderr_na=dataset.stderr_na)

    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "n_samples": len(dataset),
        "n_electrodes": int(dataset.voltages_v.shape[1]),
        "metadata": dataset.metadata,
    }
    text = json.dumps(header, indent=2) + "\n"
    return {DATA_FILE: write_arrays, META_FILE: lambda path: path.write_text(text, encoding="utf-8")}


def save_dataset(dataset: Dataset, directory: str | Path, overwrite: bool = False) -> Path:
    """Write ``dataset`` into ``directory`` (format in the module docstring); return the directory.

    Raises :class:`ModelFileError` if a dataset is already there and ``overwrite`` is False,
    or if the directory cannot be written.
    """
    directory = Path(directory)
    if not overwrite and is_dataset(directory):
        raise ModelFileError(f"'{directory}' already holds a dataset; pass overwrite=True or choose another directory")
    try:
        for name, write in dataset_writers(dataset).items():
            with atomic_path(directory / name) as tmp:
                write(tmp)
    except OSError as err:
        raise ModelFileError(f"cannot save the dataset to '{directory}': {err.strerror or err}") from None
    return directory


def load_dataset(directory: str | Path) -> Dataset:
    """Read a dataset written by :func:`save_dataset`.

    Raises :class:`ModelFileError` naming the path if a file is missing,
    corrupt, of another format, or if the arrays disagree with the header.
    """
    directory = Path(directory)
    header = read_json(directory / META_FILE, ModelFileError)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"'{directory / META_FILE}' is not an inmaterio dataset (format {FORMAT!r} expected)")
    if header.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"'{directory / META_FILE}' has format_version {header.get('format_version')!r}; "
            f"this inmaterio reads version {FORMAT_VERSION}"
        )
    data_path = directory / DATA_FILE
    if not data_path.is_file():
        raise ModelFileError(f"dataset file '{data_path}' does not exist")
    try:
        with np.load(data_path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in ("voltages_v", "current_na", "stderr_na")}
    except KeyError as err:
        raise ModelFileError(f"'{data_path}' lacks the array {err}") from None
    except (OSError, ValueError) as err:
        raise ModelFileError(f"'{data_path}' is not a readable npz file: {err}") from None
    n = header.get("n_samples")
    if arrays["current_na"].shape != (n,) or arrays["voltages_v"].shape != (n, header.get("n_electrodes")):
        raise ModelFileError(
            f"'{data_path}' arrays (voltages {arrays['voltages_v'].shape}, currents {arrays['current_na'].shape}) "
            f"disagree with '{directory / META_FILE}' (n_samples {n}, n_electrodes {header.get('n_electrodes')})"
        )
    try:
        return Dataset(metadata=header.get("metadata", {}), **arrays)
    except ValueError as err:
        raise ModelFileError(f"'{data_path}': {err}") from None


def postprocess(dataset: Dataset, config: PostprocessConfig) -> tuple[Dataset, dict[str, int]]:
    """Drop unusable points; return the cleaned dataset and a report of counts.

    In this order, each point counted once:

    1. ``n_nonfinite``: NaN or infinite voltage, current or standard error;
    2. ``n_clipped``: current at or beyond ``config.clip_na = [low, high]`` nA
       (an instrument that saturates reports the rail value itself);
    3. ``n_outliers``: ``|I - median| > config.outlier_sigma * 1.4826 * MAD``
       over the remaining points (1.4826 * MAD is the standard deviation of a
       normal distribution, estimated robustly).

    The report also holds ``n_input`` and ``n_kept``.
    """
    finite = np.isfinite(dataset.voltages_v).all(axis=1) & np.isfinite(dataset.current_na) & np.isfinite(dataset.stderr_na)
    keep = finite.copy()
    n_clipped = 0
    if config.clip_na is not None:
        low, high = config.clip_na
        clipped = keep & ((dataset.current_na <= low) | (dataset.current_na >= high))
        n_clipped = int(clipped.sum())
        keep &= ~clipped
    n_outliers = 0
    if config.outlier_sigma is not None and keep.any():
        current = dataset.current_na[keep]
        median = np.median(current)
        robust_std = 1.4826 * np.median(np.abs(current - median))
        outlier = keep & (np.abs(dataset.current_na - median) > config.outlier_sigma * robust_std)
        n_outliers = int(outlier.sum())
        keep &= ~outlier
    report = {
        "n_input": len(dataset),
        "n_nonfinite": int((~finite).sum()),
        "n_clipped": n_clipped,
        "n_outliers": n_outliers,
        "n_kept": int(keep.sum()),
    }
    return dataset.subset(np.flatnonzero(keep), postprocess=report), report


def split(dataset: Dataset, fractions: tuple[float, float, float], seed: int) -> tuple[Dataset, Dataset, Dataset]:
    """Random disjoint train / validation / test subsets of sizes ``round(f * N)`` (test takes the rest).

    The split is a permutation drawn from ``numpy.random.default_rng(seed)``.
    """
    if len(fractions) != 3 or any(f < 0 for f in fractions) or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be three numbers >= 0 summing to 1, got {list(fractions)}")
    n = len(dataset)
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = min(int(round(fractions[1] * n)), n - n_train)
    parts = (order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :])
    return tuple(  # type: ignore[return-value]
        dataset.subset(np.sort(index), split={"part": name, "fractions": list(fractions), "seed": seed})
        for name, index in zip(("train", "validation", "test"), parts)
    )


def noise_floor_na(dataset: Dataset) -> float:
    """Root-mean-square standard error of the points, nA: the device's own measurement noise.

    No model can have an RMSE against measured currents below this (on data it
    did not train on), so it is the yardstick for a surrogate's test RMSE.
    """
    if len(dataset) == 0:
        return 0.0
    return float(np.sqrt(np.mean(dataset.stderr_na**2)))
