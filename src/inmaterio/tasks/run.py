"""``inmaterio run CONFIG.yaml``: run one task and write its results folder.

The folder holds::

    config.yaml          the validated config (every default filled in)
    metrics.json         the task's numbers, the back ends, package version, wall time
    controls.json        learned control voltages (V) per solution, by electrode name
    history.json, .csv   training curves: loss per epoch / generation (csv columns: curve, step, loss)
    learning_curve.png   loss per epoch / generation
    outputs_per_class.png  output current per class, surrogate and device
    solution_iv.png      output current over the input plane (gates, rings)
    capacity.png         fraction found vs N (capacity)
    model.safetensors    the whole trained network: controls, batch-norm state (rings)

A folder that already holds results is never overwritten unless asked.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import torch

import inmaterio
from inmaterio.config import dump_config
from inmaterio.errors import ConfigError, ModelFileError
from inmaterio.fileio import atomic_write_json, atomic_write_text
from inmaterio.processors import DeviceProcessor, SurrogateProcessor, check_interchangeable
from inmaterio.tasks.config import CapacityTask, GatesTask, RingsTask, RunConfig, SurrogateBackend, ValidationConfig
from inmaterio.tasks.outcome import TaskOutcome

#: Every file a run may write; ``overwrite`` removes them all first, so no stale figure survives.
RESULT_FILES = (
    "config.yaml", "metrics.json", "controls.json", "learning_curve.png", "outputs_per_class.png",
    "solution_iv.png", "capacity.png", "capacity_partial.json", "history.json", "history.csv", "model.safetensors",
)  # fmt: skip

__all__ = ["build_surrogate_processor", "build_validation_processor", "check_backends", "run_task"]


def build_surrogate_processor(config: SurrogateBackend) -> SurrogateProcessor:
    """The surrogate of ``config`` (the bundled one by default), with its output noise."""
    from inmaterio.surrogate import load_default_surrogate, load_surrogate

    model = load_default_surrogate() if config.model_dir is None else load_surrogate(config.model_dir)
    return SurrogateProcessor(model, noise=config.noise, noise_std_na=config.noise_std_na if config.noise else None)


def build_validation_processor(config: ValidationConfig, surrogate: SurrogateProcessor) -> DeviceProcessor | None:
    """The device to validate on: ``config.device``, else the virtual DNPU in the surrogate's provenance."""
    if not config.enabled:
        return None
    from inmaterio.devices.registry import build_device, device_config_from_description

    if config.device is not None:
        device = build_device(config.device)
    else:
        description = surrogate.info.provenance.get("device")
        if not isinstance(description, dict) or description.get("type") != "HoppingDevice":
            raise ConfigError(
                "validation.device is not given and the surrogate's provenance records no virtual DNPU "
                f"(provenance device: {description!r}); give validation.device or set validation.enabled: false"
            )
        from inmaterio.devices.hopping import HoppingDevice

        device = HoppingDevice(device_config_from_description(description))
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


def run_task(config: RunConfig, out: str | Path, *, progress: bool = True, overwrite: bool = False) -> TaskOutcome:
    """Run the task of ``config``; write the results folder ``out`` (see the module docstring)."""
    out = Path(out)
    if (out / "metrics.json").exists() and not overwrite:
        raise ModelFileError(f"'{out}' already holds results (metrics.json); choose another --out or pass --overwrite")
    task = config.task
    on_device = getattr(task, "train_on", "surrogate") == "device"
    surrogate = build_surrogate_processor(config.surrogate)
    validation = config.validation.model_copy(update={"enabled": True}) if on_device else config.validation
    device = build_validation_processor(validation, surrogate)
    check_backends(config, surrogate, device)  # before anything is trained or written
    if overwrite:
        for name in RESULT_FILES:
            (out / name).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    dump_config(config, out / "config.yaml")
    start = time.perf_counter()
    repeats = config.validation.repeats
    with torch.random.fork_rng():  # seed the surrogate's output noise; leave the caller's generator alone
        torch.manual_seed(config.seed)
        if isinstance(task, GatesTask):
            from inmaterio.tasks.gates import run_gates

            outcome = run_gates(
                task, surrogate, device, out, seed=config.seed, progress=progress, repeats=repeats,
                trainer=device if on_device else surrogate,
            )  # fmt: skip
        elif isinstance(task, RingsTask):
            from inmaterio.tasks.rings import run_rings

            outcome = run_rings(task, surrogate, device, out, seed=config.seed, progress=progress, repeats=repeats)
        elif isinstance(task, CapacityTask):
            from inmaterio.tasks.capacity import run_capacity

            outcome = run_capacity(task, surrogate, device, out, seed=config.seed, progress=progress, repeats=repeats)
        else:  # pragma: no cover - the config's discriminated union admits nothing else
            raise ConfigError(f"unknown task type {type(task).__name__}")
    seconds = time.perf_counter() - start
    metrics = {
        "task": task.type,
        "trained_on": "device" if on_device else "surrogate",
        "package_version": inmaterio.__version__,
        "seconds": seconds,
        "surrogate": surrogate.describe(),
        "device": None if device is None else device.describe(),
        **outcome.metrics,
    }
    atomic_write_json(out / "controls.json", outcome.controls)
    _write_history(out, outcome.curves)
    atomic_write_json(out / "metrics.json", metrics)  # written last: its presence marks a finished run
    outcome.metrics = metrics
    return outcome


def _write_history(out: Path, curves: dict[str, list[dict]]) -> None:
    """The training curves as JSON and as a long-format CSV (curve, step, loss)."""
    atomic_write_json(out / "history.json", curves)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["curve", "step", "loss"])
    for name, rows in curves.items():
        writer.writerows([name, r["step"], r["loss"]] for r in rows)
    atomic_write_text(out / "history.csv", buffer.getvalue())
