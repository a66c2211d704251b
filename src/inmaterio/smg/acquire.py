"""Resumable acquisition: measure a voltage plan in batches, checkpointing after each.

Directory layout while measuring (``<dir>`` is the ``directory`` argument)::

    <dir>/acquisition_state.json          {"fingerprint", "n_total", "n_done", ...}
    <dir>/partial/chunk_<start>_<stop>.npz  current_na, stderr_na of points [start, stop)

Each chunk is written atomically *before* the state that counts it, so an
interruption (Ctrl-C, a crash, a power cut) leaves either the old or the new
state, both valid. When every point is measured the chunks are joined into a
:class:`~inmaterio.smg.dataset.Dataset` saved in ``<dir>`` and the partial
files are removed.

The *fingerprint* is the sha256 of the planned voltages and of the device's
``describe()``: a directory only ever holds data of one plan on one device.
Calling :func:`acquire` again with the same plan and device resumes after the
last finished batch, or loads the finished dataset; another plan or device
raises :class:`~inmaterio.errors.ModelFileError` and touches no file.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from inmaterio.devices.base import Device
from inmaterio.errors import ModelFileError
from inmaterio.fileio import atomic_path, atomic_write_json, read_json
from inmaterio.progress import progress_bar
from inmaterio.smg.config import AcquisitionConfig
from inmaterio.smg.dataset import Dataset, base_metadata, is_dataset, load_dataset, save_dataset

__all__ = ["acquire", "plan_fingerprint"]

STATE_FILE = "acquisition_state.json"
PARTIAL_DIR = "partial"


def plan_fingerprint(voltages: np.ndarray, device_description: dict[str, Any]) -> str:
    """sha256 hex digest of a plan ``(N, n)`` V (as float64) and a device description."""
    digest = hashlib.sha256()
    v = np.ascontiguousarray(voltages, dtype=np.float64)
    digest.update(repr(v.shape).encode())
    digest.update(v.tobytes())
    digest.update(json.dumps(device_description, sort_keys=True, default=str).encode())
    return digest.hexdigest()


def _chunk_path(directory: Path, start: int, stop: int) -> Path:
    return directory / PARTIAL_DIR / f"chunk_{start:010d}_{stop:010d}.npz"


def _read_chunks(directory: Path, n_done: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Currents and standard errors of points [0, n_done), from the chunk files in order."""
    currents: list[np.ndarray] = []
    stderrs: list[np.ndarray] = []
    position = 0
    while position < n_done:
        matches = sorted((directory / PARTIAL_DIR).glob(f"chunk_{position:010d}_*.npz"))
        if not matches:
            raise ModelFileError(
                f"checkpoint in '{directory}' counts {n_done} finished points but the chunk starting at point "
                f"{position} is missing from '{directory / PARTIAL_DIR}'; remove the directory to start again"
            )
        path = matches[-1]
        stop = int(path.stem.split("_")[2])
        try:
            with np.load(path, allow_pickle=False) as npz:
                current, stderr = npz["current_na"], npz["stderr_na"]
        except (OSError, ValueError, KeyError) as err:
            raise ModelFileError(f"checkpoint chunk '{path}' is unreadable: {err}") from None
        if current.shape != (stop - position,) or stderr.shape != current.shape:
            raise ModelFileError(f"checkpoint chunk '{path}' holds {current.shape} points, expected {stop - position}")
        currents.append(current)
        stderrs.append(stderr)
        position = stop
    return currents, stderrs


def acquire(
    device: Device,
    voltages: np.ndarray,
    directory: str | Path,
    config: AcquisitionConfig = AcquisitionConfig(),
    metadata: dict[str, Any] | None = None,
) -> Dataset:
    """Measure ``voltages`` ``(N, n_activation)`` V on ``device``; resumable (see the module docstring).

    Parameters
    ----------
    device : the device; ``measure_with_error`` is called once per batch.
    voltages : the plan, validated against the device's ranges before anything is measured.
    directory : where the checkpoint and the finished dataset live.
    config : batch size (points per call and per checkpoint) and progress bar.
    metadata : extra JSON-serialisable entries for the dataset (e.g. ``{"sampling": ...}``).

    Returns
    -------
    The finished :class:`Dataset` (also saved in ``directory``).

    Raises
    ------
    ModelFileError
        If ``directory`` holds a checkpoint or dataset of another plan or device.
    VoltageError
        If a planned voltage is outside its electrode's range.
    """
    directory = Path(directory)
    voltages = device.check_voltages(voltages)
    description = device.describe()
    fingerprint = plan_fingerprint(voltages, description)
    n_total = len(voltages)

    if is_dataset(directory):
        dataset = load_dataset(directory)
        stored = dataset.metadata.get("fingerprint")
        if stored != fingerprint:
            raise ModelFileError(
                f"'{directory}' already holds a finished dataset of another plan or device (fingerprint {stored}, "
                f"this plan {fingerprint}); it is never overwritten: choose another directory"
            )
        return dataset

    state_path = directory / STATE_FILE
    n_done = 0
    if state_path.exists():
        state = read_json(state_path, ModelFileError)
        if state.get("fingerprint") != fingerprint:
            raise ModelFileError(
                f"'{directory}' holds a checkpoint of another plan or device (fingerprint {state.get('fingerprint')}, "
                f"this plan {fingerprint}); refusing to mix data: choose another directory or remove it"
            )
        n_done = int(state["n_done"])
        if n_done:
            print(f"resuming acquisition in '{directory}': {n_done} of {n_total} points already measured")
    currents, stderrs = _read_chunks(directory, n_done)

    state = {"fingerprint": fingerprint, "n_total": n_total, "n_done": n_done, "device": description}
    if n_done == 0:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(state_path, state)
    with progress_bar(n_total, "measuring", unit="pts", completed=n_done, enabled=config.progress) as bar:
        while n_done < n_total:
            stop = min(n_done + config.batch_size, n_total)
            measurement = device.measure_with_error(voltages[n_done:stop])
            current = np.asarray(measurement.current_na, dtype=np.float64).reshape(stop - n_done)
            stderr = np.asarray(measurement.stderr_na, dtype=np.float64).reshape(stop - n_done)
            with atomic_path(_chunk_path(directory, n_done, stop)) as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, current_na=current, stderr_na=stderr)
            atomic_write_json(state_path, {**state, "n_done": stop})
            currents.append(current)
            stderrs.append(stderr)
            bar.advance(stop - n_done)
            n_done = stop

    meta = {**base_metadata(device), **(metadata or {}), "fingerprint": fingerprint}
    dataset = Dataset(voltages, np.concatenate(currents), np.concatenate(stderrs), meta)
    save_dataset(dataset, directory)
    state_path.unlink()
    shutil.rmtree(directory / PARTIAL_DIR, ignore_errors=True)
    return dataset
