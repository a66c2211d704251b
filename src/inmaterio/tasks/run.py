"""``inmaterio run CONFIG.yaml``: run one task or study in its run folder.

:func:`run_task` opens the run folder (:mod:`inmaterio.runs`, kind
``inmaterio.task.<type>``; identity = the config without its speed-only
fields, and what the task's ``prepare`` step says defines the result, e.g. the
surrogate's weights), calls the task's runner (:mod:`inmaterio.tasks.registry`), writes
``metrics.json`` (the task's numbers and the summary table) and
``history.json`` / ``history.csv``, and marks the run finished. A finished
run is not run again: its table is read back from ``metrics.json``. An
interrupted run resumes from what its runner checkpointed. A device on an
instrument whose config names no ``measurement_file`` appends every
acquisition to ``measurements.h5`` in the run folder (a resumed run adds a
session to it; :mod:`inmaterio.devices.instruments.measurement_file`), and with
``progress`` the validation on a device shows a bar (rate, ETA) on long calls.
The device the task was prepared with is closed when the run ends, normally or
by an exception (an instrument's driver tasks released, its outputs at 0 V).

For the DNPU tasks (gates, rings, capacity) the folder also holds::

    controls.json          learned control voltages (V) per solution, by electrode name
    learning_curve.png     loss per epoch / generation
    outputs_per_class.png  output current per class, surrogate and device
    solution_iv.png        output current over the input plane (gates, rings)
    capacity.png           fraction found vs N (capacity)
    model.safetensors      the whole trained network: controls, batch-norm state (rings)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from inmaterio.devices.instruments.measurement_file import RUN_MEASUREMENT_FILE, measurements_in
from inmaterio.errors import ConfigError
from inmaterio.processors import DeviceProcessor, SurrogateProcessor, check_interchangeable
from inmaterio.runs import RunFolder, fingerprint_tensors, open_run
from inmaterio.tasks.config import CapacityTask, GatesTask, RingsTask, RunConfig, SurrogateBackend, ValidationConfig
from inmaterio.tasks.outcome import TaskOutcome
from inmaterio.tasks.registry import RunnableConfig, resolve, task_of
from inmaterio.tasks.validation import validation_progress

__all__ = [
    "backends_identity",
    "build_surrogate_processor",
    "build_validation_processor",
    "check_backends",
    "prepare_dnpu_task",
    "run_dnpu_task",
    "run_task",
]


def build_surrogate_processor(config: SurrogateBackend) -> SurrogateProcessor:
    """The surrogate of ``config`` (the bundled one by default, or an ensemble), with its output noise."""
    from inmaterio.surrogate import default_model_dir, load_default_surrogate, load_ensemble, load_surrogate

    if config.ensemble:
        model = load_ensemble(default_model_dir() if config.model_dir is None else config.model_dir)
    else:
        model = load_default_surrogate() if config.model_dir is None else load_surrogate(config.model_dir)
    return SurrogateProcessor(
        model, noise=config.noise, noise_std_na=config.noise_std_na if config.noise else None,
        predictive_noise=config.predictive_noise,
    )  # fmt: skip


def build_validation_processor(config: ValidationConfig, surrogate: SurrogateProcessor) -> DeviceProcessor | None:
    """The device to validate on: ``config.device``, else the device the surrogate was made from (its provenance)."""
    if not config.enabled:
        return None
    from inmaterio.devices.registry import build_device, device_from_description

    if config.device is not None:
        device = build_device(config.device)
    else:
        description = surrogate.info.provenance.get("device")
        if not isinstance(description, dict):
            raise ConfigError(
                "validation.device is not given and the surrogate's provenance records no device "
                f"(provenance device: {description!r}); give validation.device or set validation.enabled: false"
            )
        device = device_from_description(description, source="the device in the surrogate's provenance")
    return DeviceProcessor(device, plateau_samples=config.plateau_samples, ramp_samples=config.ramp_samples)


def check_backends(config: RunConfig, surrogate: SurrogateProcessor, device: DeviceProcessor | None) -> None:
    """Raise :class:`ConfigError` unless the task's input electrodes exist on the surrogate and the
    validation device has the surrogate's activation electrodes and ranges (so the trained
    solutions can be played on it)."""
    from inmaterio.nn import DNPU

    DNPU(surrogate, 1, config.task.input_electrodes, seed=0)  # names, indices, repeats (ConfigError naming them)
    if device is None:
        return
    check_interchangeable(
        surrogate.info, device.info, new_name="the surrogate", old_name="the validation device", old_short="the device",
        hint="give a surrogate of that device or another validation.device",
    )  # fmt: skip


def backends_identity(surrogate: SurrogateProcessor, device: DeviceProcessor | None) -> dict[str, Any]:
    """What of the back ends defines a result: the SHA-256 of the surrogate's weights (every member's, and the
    spread calibration, of an ensemble) and the device's description.

    The package version in a description is provenance, not physics: it is left out, so a run may
    resume after an upgrade.
    """
    weights = surrogate.model.state_dict()
    described = None if device is None else {k: v for k, v in device.device.describe().items() if k != "package_version"}
    identity = {"surrogate_weights": fingerprint_tensors(*(weights[k] for k in sorted(weights))), "device": described}
    calibration = getattr(surrogate.model, "calibration", None)  # an ensemble's spread calibration
    return identity if calibration is None else {**identity, "surrogate_calibration": calibration.as_dict()}


@dataclass(frozen=True)
class DnpuBackends:
    """The back ends of a DNPU task and what of them defines a run's result (its ``identity``)."""

    surrogate: SurrogateProcessor
    device: DeviceProcessor | None
    identity: dict[str, Any]


def prepare_dnpu_task(config: RunConfig) -> DnpuBackends:
    """The back ends of a DNPU task, checked before anything is trained or written.

    The identity holds the fingerprint of the surrogate's weights and the device's description, so
    a run is not resumed on another surrogate (e.g. a regenerated bundled model) or another device.
    """
    task = config.task
    on_device = getattr(task, "train_on", "surrogate") == "device"
    refine = getattr(task, "refine", None) is not None
    if refine and not config.validation.enabled:
        raise ConfigError("task.refine measures the device around the solutions: set validation.enabled: true")
    if refine and config.surrogate.ensemble:
        raise ConfigError("task.refine fine-tunes one surrogate, and surrogate.ensemble is true; "
                          "refine a single model (ensemble: false) or leave task.refine out")  # fmt: skip
    surrogate = build_surrogate_processor(config.surrogate)
    validation = config.validation.model_copy(update={"enabled": True}) if on_device else config.validation
    device = build_validation_processor(validation, surrogate)
    check_backends(config, surrogate, device)
    identity = backends_identity(surrogate, device)
    return DnpuBackends(surrogate, device, identity)


def run_dnpu_task(config: RunConfig, run: RunFolder, *, progress: bool, prepared: DnpuBackends) -> TaskOutcome:
    """Runner of the gates, rings and capacity tasks (trained on the surrogate, validated on the device)."""
    surrogate, device = prepared.surrogate, prepared.device
    task = config.task
    on_device = getattr(task, "train_on", "surrogate") == "device"
    repeats = config.validation.repeats
    out = run.path
    # the device's noise is keyed by the task, whatever the process measured before (a resumed run measures alike)
    streams = contextlib.nullcontext() if device is None else device.random_streams("task", task.type)
    with torch.random.fork_rng(), streams:  # seed the surrogate's output noise; leave the caller's generator alone
        torch.manual_seed(config.seed)
        if isinstance(task, GatesTask):
            from inmaterio.tasks.gates import run_gates

            outcome = run_gates(
                task, surrogate, device, out, seed=config.seed, progress=progress, repeats=repeats,
                trainer=device if on_device else surrogate, resumable=True,
            )  # fmt: skip
        elif isinstance(task, RingsTask):
            from inmaterio.tasks.rings import run_rings

            outcome = run_rings(task, surrogate, device, out, seed=config.seed, progress=progress, repeats=repeats)
        elif isinstance(task, CapacityTask):
            from inmaterio.tasks.capacity import run_capacity

            outcome = run_capacity(task, surrogate, device, run, seed=config.seed, progress=progress, repeats=repeats)
        else:  # pragma: no cover - the config's discriminated union admits nothing else
            raise ConfigError(f"unknown task type {type(task).__name__}")
    outcome.metrics = {
        "task": task.type,
        "trained_on": "device" if on_device else "surrogate",
        "surrogate": surrogate.describe(),
        "device": None if device is None else device.describe(),
        **outcome.metrics,
    }
    run.write_json("controls.json", outcome.controls)
    return outcome


def _history_rows(curves: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Named training curves as long-format rows: curve, then the row's own columns."""
    return [{"curve": name, **row} for name, rows in curves.items() for row in rows]


def run_task(config: RunnableConfig, out: str | Path, *, progress: bool = True, overwrite: bool = False) -> TaskOutcome:
    """Run (or resume, or read back) the task of ``config`` in the run folder ``out``.

    Raises
    ------
    ConfigError
        A config the task cannot run (checked before the folder is touched where the task can tell),
        or a folder holding a run of this task with other settings (the fields are named).
    RunFolderError
        ``out`` is a file, a foreign folder, a run of another kind, busy, not writable or on a full disk.
    """
    entry = task_of(config)
    # what the task needs (back ends, data) is built and checked before the folder is touched
    prepared = None if entry.prepare is None else resolve(entry.prepare)(config)
    identity = {"config": config.identity(), **getattr(prepared, "identity", {})}
    with contextlib.ExitStack() as stack:
        # the device the task was prepared with is closed when the run ends, normally or not (an instrument:
        # its driver tasks released, outputs at 0 V; nothing for a simulated device)
        device = getattr(prepared, "device", None)
        if callable(getattr(device, "close", None)):
            stack.callback(device.close)
        run = stack.enter_context(open_run(out, entry.kind, identity=identity, config=config, overwrite=overwrite))
        if run.finished:
            return TaskOutcome.from_metrics(run.metrics())
        with measurements_in(run.file(RUN_MEASUREMENT_FILE)), validation_progress(progress):
            outcome = resolve(entry.runner)(config, run, progress=progress, prepared=prepared)
        run.write_history(_history_rows(outcome.curves))
        outcome.metrics = {**outcome.metrics, "seconds": run.wall_s, "table": outcome.table()}
        run.finish(outcome.metrics)
        outcome.metrics = run.metrics()
    return outcome
