"""The surrogate-model generator (SMG) life cycle in one resumable call, and the export of its model.

:func:`run_smg` runs in one run folder (:mod:`inmaterio.runs`, kind ``inmaterio.smg``)
with the long stages as run folders nested in it::

    run.json, config.yaml        state, identity (the config without progress bars and threads), wall time
    train_data/                  acquisition of the training plan (kind inmaterio.smg.acquisition)
    adaptive/round_<r>/          with adaptive set: each round's ensemble, plan and acquisition
                                 (see inmaterio.smg.adaptive); the rounds' points join the training data
    training/                    training (kind inmaterio.smg.training): checkpoints, history, best model
    test_data/                   acquisition of the independent test plan
    model/                       the tested surrogate (load with load_surrogate; export with export_smg_model)
    ensemble/member_<k>/         with ensemble_members >= 2: members 1.. (member 0 is training/), seeds + k
    ensemble/calibration.json    the spread's calibration fitted on the validation split (SpreadCalibration)
    learning_curve.png, test_predicted_vs_measured.png, iv_curves.png
    adaptive_rounds.png          with adaptive set: per round, the error on the picks and what was picked
    metrics.json                 the summary: every number below, with the config and package version

After training, the model's :class:`~inmaterio.surrogate.DeviceInfo` gets
``noise_na`` = the RMSE on the independent test set and a provenance record
(device description, dataset fingerprints, package version, config), and is
saved in ``model/``. Then the reference signal is re-measured (consistency
check) and the I-V curves of device and surrogate are compared; both key the
device's random streams by what they measure, so a re-run measures them alike.
With ``ensemble_members >= 2`` the other members are trained last, and the
summary's ``ensemble`` gives the ensemble's errors, mean spread and
:func:`~inmaterio.smg.evaluate.calibration` on the test set, the held-out part
and the I-V sweeps of the device, first with the members' raw spread, then
(``calibrated``) with the spread's calibration fitted on the validation split
(:func:`~inmaterio.smg.evaluate.fit_spread_calibration`, saved in
``ensemble/calibration.json``; load it with ``SpreadCalibration.from_dict``).

Re-running with the same config resumes interrupted acquisitions and
training (to the same numbers as an uninterrupted run) and reuses what is
finished; a finished run is returned as it is (nothing is measured again).
Another config in the same folder raises :class:`~inmaterio.errors.ConfigError`
naming the differing fields; ``overwrite=True`` (``--overwrite``) replaces it.
The device built for the run is closed when it ends, normally or by an
exception (an instrument's driver tasks released, its outputs at 0 V).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

import inmaterio
from inmaterio.devices.base import Device
from inmaterio.devices.registry import build_device
from inmaterio.errors import ConfigError, ModelFileError, RunFolderError
from inmaterio.fileio import read_json
from inmaterio.plots import plot_adaptive_rounds, plot_iv_curves, plot_learning_curve, plot_predicted_vs_measured
from inmaterio.runs import METRICS_FILE, RunFolder, open_run, read_run
from inmaterio.smg.acquire import acquire
from inmaterio.smg.adaptive import adaptive_rounds
from inmaterio.smg.config import SamplingConfig, SMGConfig
from inmaterio.smg.consistency import consistency_check
from inmaterio.smg.dataset import Dataset, dataset_fingerprint, postprocess, split
from inmaterio.smg.ensemble import member_directory, train_member
from inmaterio.smg.evaluate import evaluate_ensemble, evaluate_surrogate, fit_spread_calibration
from inmaterio.smg.iv import IVCurves, iv_curves, iv_dataset
from inmaterio.smg.sampling import sample_plan
from inmaterio.smg.train import train_surrogate
from inmaterio.surrogate import DeviceInfo, SurrogateModel, export_surrogate, load_surrogate
from inmaterio.surrogate.ensemble import CALIBRATION_FILE, SMG_MODEL_DIR, SurrogateEnsemble
from inmaterio.surrogate.io import ENSEMBLE_DIR, surrogate_files

__all__ = ["KIND", "run_smg", "smg_identity", "export_smg_model"]

KIND = "inmaterio.smg"
MODEL_DIR = SMG_MODEL_DIR


def smg_identity(config: SMGConfig) -> dict[str, Any]:
    """What defines an SMG run's result: the config without the progress bar and the torch threads."""
    stripped = config.model_dump(mode="json")
    stripped["acquisition"].pop("progress")
    stripped["training"].pop("num_threads")
    if stripped["ensemble_members"] == 1:  # the defaults: runs made before the fields existed keep their identity
        stripped.pop("ensemble_members")
    if stripped["adaptive"] is None:
        stripped.pop("adaptive")
    else:
        for key in ("max_epochs", "stop_ratio"):  # None, the default: runs made before the fields existed keep theirs
            if stripped["adaptive"][key] is None:
                stripped["adaptive"].pop(key)
    return {"config": stripped}


def _save_figure(run: RunFolder, name: str, fig: Figure) -> None:
    run.write_file(name, lambda path: fig.savefig(path, format="png", dpi=120, bbox_inches="tight"), what=f"figure {name}")


def run_smg(
    config: SMGConfig,
    directory: str | Path,
    progress: bool = True,
    *,
    overwrite: bool = False,
    notify: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run (or resume) the whole SMG life cycle; return the summary (``metrics.json`` of the run folder).

    Parameters
    ----------
    config : the validated run configuration.
    directory : the run folder (layout in the module docstring).
    progress : show progress bars (also requires ``config.acquisition.progress`` for acquisition).
    overwrite : replace a run of another config in ``directory`` (a resumable one is moved aside).
    notify : where messages go (resuming, a replaced run moved aside).

    Raises
    ------
    ConfigError
        ``directory`` holds an SMG run of another config (the fields are named), or the sampling
        cannot be made (checked before the folder is touched).
    RunFolderError
        ``directory`` is a file, a foreign folder, a run of another kind, busy or not writable.
    SimulationError
        The device cannot be built (checked before the folder is touched).
    """
    device = build_device(config.device)  # a device that cannot be built, or a plan that cannot be sampled,
    ranges = device.voltage_ranges  # is refused before the folder is touched
    plans = {"train_data": (config.sampling, sample_plan(config.sampling, ranges)),
             "test_data": (config.test_sampling, sample_plan(config.test_sampling, ranges))}  # fmt: skip
    # the device is closed when the run ends, normally or by an exception (an instrument: tasks released, outputs at 0 V)
    with (
        device,
        open_run(directory, KIND, identity=smg_identity(config), config=config, overwrite=overwrite, notify=notify) as run,
    ):
        if run.finished:
            notify(f"the SMG run in '{run.path}' is complete; returning its {METRICS_FILE}")
            return run.metrics()
        from inmaterio.devices.instruments.measurement_file import RUN_MEASUREMENT_FILE, measurements_in

        with measurements_in(run.file(RUN_MEASUREMENT_FILE)):  # an instrument's acquisitions, checks and I-V: one file
            summary = _run_stages(config, run, device, plans, progress, notify)
        run.finish(summary)
        return run.metrics()


def _run_stages(
    config: SMGConfig,
    run: RunFolder,
    device: Device,
    plans: dict[str, tuple[SamplingConfig, np.ndarray]],
    progress: bool,
    notify: Callable[[str], None],
) -> dict[str, Any]:
    """Acquire, train, test, check and sweep inside the open run folder; return the summary."""
    ranges = device.voltage_ranges
    acquisition = config.acquisition.model_copy(update={"progress": config.acquisition.progress and progress})

    def measure(folder: str):
        sampling, voltages = plans[folder]
        metadata = {"sampling": sampling.model_dump(mode="json")}
        return acquire(device, voltages, run.subfolder(folder), acquisition, metadata=metadata, notify=notify)

    raw = measure("train_data")
    info = DeviceInfo.from_device(device, output_clipping_na=config.postprocess.clip_na)
    data, adaptive = raw, None
    if config.adaptive is not None:
        first_clean, first_cleaning = postprocess(raw, config.postprocess)  # what the first round's ensemble trains on
        _check_trainable(*split(first_clean, config.postprocess.split, config.postprocess.seed)[:2], first_cleaning, config)
        data, rounds = adaptive_rounds(config, run, device, raw, info, acquisition, progress, notify)
        adaptive = {"n_points": len(data), "rounds": rounds}
        _save_figure(run, "adaptive_rounds.png", plot_adaptive_rounds(rounds))
    clean, cleaning = postprocess(data, config.postprocess)
    train, val, held_out = split(clean, config.postprocess.split, config.postprocess.seed)
    _check_trainable(train, val, cleaning, config)
    result = train_surrogate(train, val, config.training, run.subfolder("training"), info, progress=progress, notify=notify)
    _save_figure(run, "learning_curve.png", plot_learning_curve(result.history))

    test_raw = measure("test_data")
    clock = time.perf_counter()
    test, test_cleaning = postprocess(test_raw, config.postprocess)
    model = result.model
    test_metrics = evaluate_surrogate(model, test)
    held_out_metrics = evaluate_surrogate(model, held_out) if len(held_out) else None
    _save_figure(
        run, "test_predicted_vs_measured.png", plot_predicted_vs_measured(model.predict(test.voltages_v), test.current_na)
    )
    provenance = {
        **model.info.provenance,
        "device": device.describe(),
        "train_data_fingerprint": raw.metadata["fingerprint"],
        "test_data_fingerprint": test_raw.metadata["fingerprint"],
        "training_set_fingerprint": dataset_fingerprint(train, val),
        **({"adaptive_round_fingerprints": [r["fingerprint"] for r in adaptive["rounds"]]} if adaptive else {}),
        "package_version": inmaterio.__version__,
        "smg_config": config.model_dump(mode="json"),
    }
    model.info = model.info.with_updates(noise_na=test_metrics["rmse_na"], provenance=provenance)
    for name, data in surrogate_files(model, {**model.metadata, "test_metrics": test_metrics}).items():
        run.write_file(f"{MODEL_DIR}/{name}", lambda path, data=data: path.write_bytes(data), what=f"tested model ({name})")
    timings = {"evaluate_s": time.perf_counter() - clock}

    clock = time.perf_counter()
    consistency = (
        consistency_check(device, raw, config.consistency_repeats, config.consistency_points)
        if config.consistency_repeats > 0
        else None
    )
    timings["consistency_s"] = time.perf_counter() - clock

    clock = time.perf_counter()
    with device.random_streams("iv", config.iv_points):
        device_iv = iv_curves(device.measure_with_error, ranges, config.iv_points)
    model_iv = iv_curves(model.predict, ranges, config.iv_points)
    _save_figure(run, "iv_curves.png", plot_iv_curves({"device": device_iv, "surrogate": model_iv}, device.activation_names))
    timings["iv_s"] = time.perf_counter() - clock
    ensemble = None
    if config.ensemble_members > 1:
        clock = time.perf_counter()
        ensemble = _ensemble_summary(config, run, model, train, val, test, held_out, device_iv, info, progress, notify)
        timings["ensemble_s"] = time.perf_counter() - clock
    # the long stages' wall time summed over every session that worked on them
    stage_walls = {f"{stage}_s": float(read_run(run.subfolder(folder))["wall_s"])
                   for stage, folder in (("acquire_train", "train_data"), ("train", "training"), ("acquire_test", "test_data"))}  # fmt: skip

    return {
        "inmaterio_version": inmaterio.__version__,
        "device": device.describe(),
        "train_data": {"n_points": len(raw), "fingerprint": raw.metadata["fingerprint"], "postprocess": cleaning},
        "adaptive": adaptive,
        "split": {"train": len(train), "validation": len(val), "test": len(held_out)},
        "training": result.as_dict(),
        "held_out_test_metrics": held_out_metrics,
        "test_data": {"n_points": len(test_raw), "fingerprint": test_raw.metadata["fingerprint"], "postprocess": test_cleaning},
        "test_metrics": test_metrics,
        "noise_na": test_metrics["rmse_na"],
        "consistency": consistency,
        "iv_rmse_device_vs_surrogate_na": float(np.sqrt(np.mean((device_iv.current_na - model_iv.current_na) ** 2))),
        "iv_rmse_per_electrode_na": np.sqrt(np.mean((device_iv.current_na - model_iv.current_na) ** 2, axis=1)).tolist(),
        "ensemble": ensemble,
        "timings_s": {**stage_walls, **timings},
        "config": config.model_dump(mode="json"),
    }


def _ensemble_summary(
    config: SMGConfig,
    run: RunFolder,
    model: SurrogateModel,
    train: Dataset,
    val: Dataset,
    test: Dataset,
    held_out: Dataset,
    device_iv: IVCurves,
    info: DeviceInfo,
    progress: bool,
    notify: Callable[[str], None],
) -> dict[str, Any]:
    """Train members 1.. beside the tested model (member 0); their mean, spread and calibration on fresh points."""
    members = [model]
    for k in range(1, config.ensemble_members):
        notify(f"ensemble member {k + 1} of {config.ensemble_members} (seed {config.training.seed + k})")
        folder = member_directory(run.subfolder("ensemble"), k)
        members.append(train_member(train, val, config.training, folder, info, k, progress, notify=notify).model)
    raw = SurrogateEnsemble(members)
    fitted = fit_spread_calibration(raw, val)
    run.write_file(
        f"{ENSEMBLE_DIR}/{CALIBRATION_FILE}",
        lambda path: path.write_text(json.dumps(fitted.as_dict()) + "\n"),
        what="the spread's calibration",
    )
    calibrated = raw.with_calibration(fitted)
    parts = {"test": test, "held_out_test": held_out, "iv_sweeps": iv_dataset(device_iv)}
    return {
        "members": config.ensemble_members,
        **{name: evaluate_ensemble(raw, data) if len(data) else None for name, data in parts.items()},
        "spread_calibration": {"fitted_on": "validation", "n_points": len(val), **fitted.as_dict()},
        "calibrated": {name: evaluate_ensemble(calibrated, data) if len(data) else None for name, data in parts.items()},
    }


def _check_trainable(train: Dataset, val: Dataset, cleaning: dict[str, int], config: SMGConfig) -> None:
    """Refuse, naming the settings, a cleaning and split that leave nothing to train or validate on."""
    settings = f"postprocess clip_na {config.postprocess.clip_na}, outlier_sigma {config.postprocess.outlier_sigma}"
    if len(train) < 2 or len(val) < 1:
        raise ConfigError(
            f"postprocess kept {cleaning['n_kept']} of {cleaning['n_input']} measured points ({cleaning['n_nonfinite']} "
            f"not finite, {cleaning['n_clipped']} clipped, {cleaning['n_outliers']} outliers; {settings}) and split "
            f"{list(config.postprocess.split)} gives {len(train)} training and {len(val)} validation points: at least "
            "2 and 1 are needed; widen clip_na or outlier_sigma, or measure more points (sampling.n_samples)"
        )
    if not np.std(train.current_na) > 0:
        raise ConfigError(
            f"the {len(train)} training points all have the current {train.current_na[0]:.6g} nA ({settings}): "
            "a surrogate of a constant is no model; check the device and clip_na"
        )


def export_smg_model(
    run_dir: str | Path,
    destination: str | Path | None = None,
    *,
    overwrite: bool = False,
    replace_bundled: bool = False,
) -> Path:
    """Install the tested surrogate of a finished SMG run, with its summary as ``summary.json``.

    A run with ``ensemble_members >= 2`` exports its ensemble too: the other members in
    ``ensemble/member_<k>`` and the spread's calibration in ``ensemble/calibration.json``
    (load it with :func:`~inmaterio.surrogate.ensemble.load_ensemble` on the folder).
    ``destination`` defaults to the package's bundled model folder, which is replaced only with
    ``replace_bundled=True``. The folder is written whole and swapped in
    (:func:`~inmaterio.surrogate.export_surrogate`): it never holds half a model, and an
    ensemble of a model it replaces is not kept.

    Raises
    ------
    RunFolderError
        ``run_dir`` is not a finished SMG run.
    ModelFileError
        The destination is a file, holds something else, holds a model and ``overwrite`` is False,
        is the bundled model and ``replace_bundled`` is False, or cannot be written.
    """
    run_dir = Path(run_dir)
    try:
        record = read_run(run_dir)
    except RunFolderError as err:
        raise RunFolderError(f"'{run_dir}' is not a finished SMG run: {err}") from None
    if record["kind"] != KIND:
        raise RunFolderError(f"'{run_dir}' is not a finished SMG run: it holds a run of kind '{record['kind']}'")
    if record["state"] != "finished":
        raise RunFolderError(
            f"'{run_dir}' is not a finished SMG run: it is {record['state']}; run the same 'smg run' command to finish it"
        )
    model = load_surrogate(run_dir / MODEL_DIR)
    summary = read_json(run_dir / METRICS_FILE, ModelFileError)
    extra: dict[str, bytes] = {}
    if (summary.get("ensemble") or {}).get("members", 1) > 1:
        for k in range(1, summary["ensemble"]["members"]):
            member = load_surrogate(member_directory(run_dir / ENSEMBLE_DIR, k))
            for name, data in surrogate_files(member, member.metadata).items():
                extra[f"{ENSEMBLE_DIR}/member_{k}/{name}"] = data
        calibration = run_dir / ENSEMBLE_DIR / CALIBRATION_FILE
        if calibration.is_file():  # runs made before the calibration existed have none
            extra[f"{ENSEMBLE_DIR}/{CALIBRATION_FILE}"] = calibration.read_bytes()
    return export_surrogate(model, destination, metadata=model.metadata, extra_json={"summary.json": summary},
                            extra_files=extra, overwrite=overwrite, replace_bundled=replace_bundled)  # fmt: skip
