"""The surrogate-model generator (SMG) life cycle in one resumable call.

:func:`run_smg` goes through these stages, each writing into ``directory``::

    config.yaml                  the config of this run (a directory holds one run)
    train_data/                  acquisition of the training plan (resumable)    -> postprocess + split
    model/                       training (resumable); the final surrogate, load with load_surrogate
    test_data/                   acquisition of the independent test plan (resumable)
    learning_curve.png, test_predicted_vs_measured.png, iv_curves.png
    summary.json                 every number below, with the config and package version

After training, the model's :class:`~inmaterio.surrogate.DeviceInfo` gets
``noise_na`` = the RMSE on the independent test set and a provenance record
(device description, dataset fingerprints, package version, config), and is
saved again. Then the reference signal is re-measured (consistency check) and
the I-V curves of device and surrogate are compared.

Re-running with the same config resumes interrupted acquisitions and
training and reuses what is finished; once ``summary.json`` is written the
run is complete and a re-run just returns it (nothing is measured again).
Another config in the same directory raises :class:`~inmaterio.errors.ConfigError`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

import inmaterio
from inmaterio.config import validate_config
from inmaterio.devices.registry import build_device
from inmaterio.errors import ConfigError, ModelFileError
from inmaterio.fileio import atomic_write_json, atomic_write_text, read_json
from inmaterio.plots import plot_iv_curves, plot_learning_curve, plot_predicted_vs_measured
from inmaterio.smg.acquire import acquire
from inmaterio.smg.config import SamplingConfig, SMGConfig
from inmaterio.smg.consistency import consistency_check
from inmaterio.smg.dataset import Dataset, dataset_fingerprint, postprocess, split
from inmaterio.smg.evaluate import evaluate_surrogate
from inmaterio.smg.iv import iv_curves
from inmaterio.smg.sampling import sample_plan
from inmaterio.smg.train import train_surrogate
from inmaterio.surrogate import DeviceInfo, save_surrogate

__all__ = ["run_smg"]

CONFIG_FILE = "config.yaml"
SUMMARY_FILE = "summary.json"


def _result_defining(config_json: dict[str, Any]) -> dict[str, Any]:
    """The config without the knobs that change speed or display only (progress bar, threads)."""
    stripped = {**config_json, "acquisition": dict(config_json["acquisition"]), "training": dict(config_json["training"])}
    stripped["acquisition"].pop("progress")
    stripped["training"].pop("num_threads")
    return stripped


def _claim_directory(directory: Path, config: SMGConfig) -> None:
    """Write ``config.yaml``, or check that the one there describes the same run."""
    path = directory / CONFIG_FILE
    new = config.model_dump(mode="json")
    if path.exists():
        old = validate_config(SMGConfig, yaml.safe_load(path.read_text()), source=str(path))
        if _result_defining(old.model_dump(mode="json")) != _result_defining(new):
            raise ConfigError(
                f"'{directory}' holds an SMG run of another configuration ('{path}'); "
                "use a new directory for a new configuration"
            )
    atomic_write_text(path, yaml.safe_dump(new, sort_keys=False))


def run_smg(config: SMGConfig, directory: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the whole SMG life cycle; return the summary also written to ``summary.json``.

    Parameters
    ----------
    config : the validated run configuration.
    directory : the run directory (layout in the module docstring).
    progress : show progress bars (also requires ``config.acquisition.progress`` for acquisition).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _claim_directory(directory, config)
    if (directory / SUMMARY_FILE).is_file():
        print(f"SMG run in '{directory}' is already complete; returning its {SUMMARY_FILE}")
        return read_json(directory / SUMMARY_FILE, ModelFileError)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = now - clock
        clock = now

    device = build_device(config.device)
    ranges = device.voltage_ranges
    acquisition = config.acquisition.model_copy(update={"progress": config.acquisition.progress and progress})

    def measure_plan(sampling: SamplingConfig, folder: str) -> Dataset:
        """Acquire (or resume, or reload) one sampling plan into ``directory / folder``."""
        metadata = {"sampling": sampling.model_dump(mode="json")}
        return acquire(device, sample_plan(sampling, ranges), directory / folder, acquisition, metadata=metadata)

    raw = measure_plan(config.sampling, "train_data")
    lap("acquire_train_s")
    clean, cleaning = postprocess(raw, config.postprocess)
    train, val, held_out = split(clean, config.postprocess.split, config.postprocess.seed)
    info = DeviceInfo.from_device(device, output_clipping_na=config.postprocess.clip_na)
    result = train_surrogate(train, val, config.training, directory / "model", info, progress=progress)
    plot_learning_curve(result.history, directory / "learning_curve.png")
    lap("train_s")

    test_raw = measure_plan(config.test_sampling, "test_data")
    lap("acquire_test_s")
    test, test_cleaning = postprocess(test_raw, config.postprocess)
    model = result.model
    test_metrics = evaluate_surrogate(model, test)
    held_out_metrics = evaluate_surrogate(model, held_out) if len(held_out) else None
    plot_predicted_vs_measured(model.predict(test.voltages_v), test.current_na, directory / "test_predicted_vs_measured.png")

    provenance = {
        **model.info.provenance,
        "device": device.describe(),
        "train_data_fingerprint": raw.metadata["fingerprint"],
        "test_data_fingerprint": test_raw.metadata["fingerprint"],
        "training_set_fingerprint": dataset_fingerprint(train, val),
        "package_version": inmaterio.__version__,
        "smg_config": config.model_dump(mode="json"),
    }
    model.info = model.info.with_updates(noise_na=test_metrics["rmse_na"], provenance=provenance)
    save_surrogate(model, directory / "model", metadata={**model.metadata, "test_metrics": test_metrics}, overwrite=True)
    lap("evaluate_s")

    consistency = (
        consistency_check(device, raw, config.consistency_repeats, config.consistency_points)
        if config.consistency_repeats > 0
        else None
    )
    lap("consistency_s")

    device_iv = iv_curves(device.measure_with_error, ranges, config.iv_points)
    model_iv = iv_curves(model.predict, ranges, config.iv_points)
    plot_iv_curves({"device": device_iv, "surrogate": model_iv}, device.activation_names, directory / "iv_curves.png")
    lap("iv_s")

    summary = {
        "inmaterio_version": inmaterio.__version__,
        "device": device.describe(),
        "train_data": {"n_points": len(raw), "fingerprint": raw.metadata["fingerprint"], "postprocess": cleaning},
        "split": {"train": len(train), "validation": len(val), "test": len(held_out)},
        "training": result.as_dict(),
        "held_out_test_metrics": held_out_metrics,
        "test_data": {"n_points": len(test_raw), "fingerprint": test_raw.metadata["fingerprint"], "postprocess": test_cleaning},
        "test_metrics": test_metrics,
        "noise_na": test_metrics["rmse_na"],
        "consistency": consistency,
        "iv_rmse_device_vs_surrogate_na": float(np.sqrt(np.mean((device_iv.current_na - model_iv.current_na) ** 2))),
        "timings_s": timings,
        "config": config.model_dump(mode="json"),
    }
    atomic_write_json(directory / SUMMARY_FILE, summary)
    return summary
