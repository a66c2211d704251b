"""Resumable acquisition: measure a voltage plan in batches, checkpointing after each.

An acquisition is a run folder (:mod:`inmaterio.runs`, kind ``inmaterio.smg.acquisition``)::

    <dir>/run.json, config.yaml           state, identity, wall time; the AcquisitionConfig
    <dir>/chunks/<start>-<stop>.npz       current_na, stderr_na of points [start, stop) (while measuring)
    <dir>/checkpoint.pt                   {"n_done": points measured and saved in chunks}
    <dir>/data.npz, dataset.json          the finished Dataset (see :mod:`inmaterio.smg.dataset`)
    <dir>/metrics.json                    number of points and the plan's fingerprint
    <dir>/measurements.h5                 a device on an instrument: every waveform played (HDF5, one session
                                          per process that measured; not if its config names a measurement_file
                                          or an enclosing run has a file)

Each chunk is written atomically *before* the checkpoint that counts it, so
an interruption (Ctrl-C, SIGKILL, a power cut) leaves a valid state; a chunk
that cannot be written is saved to a rescue folder and the error says where.

The run's identity is the plan (fingerprint of its voltages), the device's
``describe()`` and the batch size: a folder only ever holds data of one plan
on one device. Calling :func:`acquire` again with the same identity resumes
after the last saved batch, or loads the finished dataset; another identity
raises :class:`~inmaterio.errors.ConfigError` naming what differs and
touches no file.

Random streams: batch ``[start, stop)`` is measured inside
``device.random_streams("acquisition", <plan fingerprint>, start)``, so a
noisy device (the virtual DNPU) measures every batch the same whether the
run was interrupted or not. That is why the batch size belongs to the
identity: other batches draw other noise.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np

from inmaterio.devices.base import Device
from inmaterio.devices.instruments.measurement_file import RUN_MEASUREMENT_FILE, measurements_in
from inmaterio.errors import ModelFileError, VoltageError
from inmaterio.progress import progress_bar
from inmaterio.runs import RunFolder, fingerprint_tensors, open_run
from inmaterio.smg.config import AcquisitionConfig
from inmaterio.smg.dataset import Dataset, base_metadata, dataset_writers, load_dataset

__all__ = ["KIND", "acquire", "acquisition_identity"]

KIND = "inmaterio.smg.acquisition"
CHUNK_DIR = "chunks"


def acquisition_identity(voltages: np.ndarray, device: Device, config: AcquisitionConfig) -> dict[str, Any]:
    """What defines an acquisition's result: the plan ``(N, n)`` V, the device and the batch size.

    The package version in the device's description is provenance, not physics, and is left out,
    so an acquisition may resume after an upgrade.
    """
    voltages = np.ascontiguousarray(voltages, dtype=np.float64)
    return {
        "plan": {"fingerprint": fingerprint_tensors(voltages), "n_points": len(voltages), "n_electrodes": voltages.shape[1]},
        "device": {k: v for k, v in device.describe().items() if k != "package_version"},
        "batch_size": config.batch_size,
    }


def _chunk_name(start: int, stop: int) -> str:
    return f"{CHUNK_DIR}/{start:010d}-{stop:010d}.npz"


def _read_chunks(run: RunFolder, n_done: int, n_total: int, batch: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Currents and standard errors of points [0, n_done), from the chunk files in order."""
    currents: list[np.ndarray] = []
    stderrs: list[np.ndarray] = []
    for start in range(0, n_done, batch):
        stop = min(start + batch, n_total)
        path = run.file(_chunk_name(start, stop))
        try:
            with np.load(path, allow_pickle=False) as npz:
                current, stderr = npz["current_na"], npz["stderr_na"]
        except FileNotFoundError:
            raise ModelFileError(
                f"the checkpoint of '{run.path}' counts {n_done} measured points but the chunk of points "
                f"[{start}, {stop}) is missing ('{path}'); replace the run with --overwrite (overwrite=True)"
            ) from None
        except (OSError, ValueError, KeyError) as err:
            raise ModelFileError(f"checkpoint chunk '{path}' is unreadable: {err}") from None
        if current.shape != (stop - start,) or stderr.shape != current.shape:
            raise ModelFileError(f"checkpoint chunk '{path}' holds {current.shape} points, expected {stop - start}")
        currents.append(current)
        stderrs.append(stderr)
    return currents, stderrs


def _chunk_writer(current: np.ndarray, stderr: np.ndarray) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        with open(path, "wb") as fh:
            np.savez(fh, current_na=current, stderr_na=stderr)

    return write


def acquire(
    device: Device,
    voltages: np.ndarray,
    directory: str | Path,
    config: AcquisitionConfig | None = None,
    metadata: dict[str, Any] | None = None,
    *,
    overwrite: bool = False,
    notify: Callable[[str], None] = print,
) -> Dataset:
    """Measure ``voltages`` ``(N, n_activation)`` V on ``device``; resumable (see the module docstring).

    Parameters
    ----------
    device : the device; ``measure_with_error`` is called once per batch.
    voltages : the plan, validated against the device's ranges before anything is measured or written.
    directory : the run folder of this acquisition.
    config : batch size (points per call and per checkpoint) and progress bar; default ``AcquisitionConfig()``.
    metadata : extra JSON-serialisable entries for the dataset (e.g. ``{"sampling": ...}``).
    overwrite : replace a run of another identity in ``directory`` (see :func:`inmaterio.runs.open_run`).
    notify : where messages go (resuming, a replaced run moved aside).

    Returns
    -------
    The finished :class:`Dataset` (also saved in ``directory``).

    Raises
    ------
    ConfigError
        If ``directory`` holds an acquisition of another plan, device or batch size (the fields are named).
    RunFolderError
        If ``directory`` is a file, a foreign folder, a run of another kind, or not writable.
    VoltageError
        If a planned voltage is outside its electrode's range.
    """
    config = AcquisitionConfig() if config is None else config
    voltages = device.check_voltages(voltages)
    if len(voltages) == 0:
        raise VoltageError("the plan has no points: give voltages of shape (N, n_activation) with N >= 1")
    identity = acquisition_identity(voltages, device, config)
    plan_id = identity["plan"]["fingerprint"]
    n_total, batch = len(voltages), config.batch_size
    with open_run(directory, KIND, identity=identity, config=config, overwrite=overwrite, notify=notify) as run:
        if run.finished:
            return load_dataset(run.path)
        n_done = int((run.load_checkpoint() or {}).get("n_done", 0))
        if not 0 <= n_done <= n_total or (n_done % batch and n_done != n_total):
            raise ModelFileError(f"the checkpoint of '{run.path}' counts {n_done} points, not a batch boundary of {n_total}")
        currents, stderrs = _read_chunks(run, n_done, n_total, batch)
        if n_done:
            notify(f"{n_done} of {n_total} points already measured")
        with ExitStack() as stack:
            bar = stack.enter_context(progress_bar(n_total, "measuring", unit="pts", completed=n_done, enabled=config.progress))
            quiet = getattr(device, "progress_off", None)
            if config.progress and callable(quiet):  # one bar at a time: this one counts the points
                stack.enter_context(quiet())
            stack.enter_context(measurements_in(run.file(RUN_MEASUREMENT_FILE), keep_outer=True))
            while n_done < n_total:
                stop = min(n_done + batch, n_total)
                with device.random_streams("acquisition", plan_id, n_done):
                    measurement = device.measure_with_error(voltages[n_done:stop])
                current = np.asarray(measurement.current_na, dtype=np.float64).reshape(stop - n_done)
                stderr = np.asarray(measurement.stderr_na, dtype=np.float64).reshape(stop - n_done)
                run.write_file(_chunk_name(n_done, stop), _chunk_writer(current, stderr),
                               what=f"measured points [{n_done}, {stop})")  # fmt: skip
                run.save_checkpoint({"n_done": stop})
                currents.append(current)
                stderrs.append(stderr)
                bar.advance(stop - n_done)
                n_done = stop

        meta = {
            **base_metadata(device),
            **(metadata or {}),
            "fingerprint": run.record["fingerprint"],
            "plan_fingerprint": plan_id,
        }
        dataset = Dataset(voltages, np.concatenate(currents), np.concatenate(stderrs), meta)
        for name, write in dataset_writers(dataset).items():
            run.write_file(name, write, what=f"dataset file {name}")
        run.finish({"n_points": n_total, "plan_fingerprint": plan_id})
    shutil.rmtree(run.file(CHUNK_DIR), ignore_errors=True)
    return dataset
