"""Training a surrogate MLP on measured data, with early stopping, checkpoints and an exact resume.

The loss is the mean squared error of *normalised* currents: the model's
output map is set to the training set's mean and standard deviation
(:meth:`SurrogateModel.set_output_normalization`), and the network
``model.mlp`` is fitted to ``(I - mean) / std`` of inputs already mapped
onto the model's normalised coordinates. Reported RMSEs are in nA.

Speed (this is a hot path, see ``benchmarks/surrogate_training.py``): the
whole training set is one float32 tensor, normalised once; every epoch draws
one ``torch.randperm``, gathers the shuffled copy once and trains on
contiguous slices of it; the epoch's loss is accumulated in a tensor and read
once per epoch (no per-batch ``.item()``); the steps run in
:class:`~inmaterio.smg.mlp_trainer.MLPTrainer` (a hand-written backward pass
into preallocated buffers, one fused Adam call on the flat parameters).

A training is a run folder (:mod:`inmaterio.runs`, kind ``inmaterio.smg.training``)::

    run.json, config.yaml          state, identity, wall time; the TrainConfig
    model.json, weights.safetensors the best model (load_surrogate reads the folder), written when the
                                   training ends, stops on Ctrl-C or diverges
    checkpoint.pt                  after every epoch: the model, Adam's state, the best model, the best
                                   epoch and its RMSE (the patience state), the history
    history.json, history.csv      epoch, train_rmse_na, val_rmse_na, time_s (seconds of that epoch)
    metrics.json                   the summary of a finished training (TrainResult.as_dict)

The identity is the config (without ``num_threads``, which changes the speed
only), the fingerprint of the training and validation data, and the device
info without its provenance. Calling :func:`train_surrogate` again on an
unfinished run continues after the last finished epoch from the saved model
and optimiser state, so a resumed run is bit-identical to an uninterrupted
one (epoch ``e`` shuffles with a generator keyed by ``(seed, e)``, the learning
rate is a function of the epoch). A finished run is loaded, not retrained;
another identity raises :class:`~inmaterio.errors.ConfigError` naming the
differing fields.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inmaterio.errors import InmaterioError, TrainingDivergedError
from inmaterio.progress import progress_bar
from inmaterio.runs import RunFolder, open_run
from inmaterio.smg.config import TrainConfig
from inmaterio.smg.dataset import Dataset, dataset_fingerprint, noise_floor_na
from inmaterio.smg.mlp_trainer import MLPTrainer
from inmaterio.surrogate import DeviceInfo, SurrogateModel, load_surrogate
from inmaterio.surrogate.io import surrogate_files

__all__ = ["KIND", "TrainResult", "TrainingDivergedError", "train_surrogate", "training_identity", "epoch_generator"]

KIND = "inmaterio.smg.training"


@dataclass
class TrainResult:
    """Outcome of :func:`train_surrogate`.

    Attributes
    ----------
    model : the best model (lowest validation RMSE), as reloaded from ``directory``.
    history : one dict per epoch: ``epoch``, ``train_rmse_na``, ``val_rmse_na``, ``time_s``.
    best_epoch : epoch of the best model (1-based).
    best_val_rmse_na : its validation RMSE, nA.
    best_val_rmse_percent : the same in % of ``output_range_na``.
    output_range_na : max - min of the training currents, nA.
    noise_floor_na : RMS standard error of the validation currents, nA (the best RMSE a model can reach).
    stop_reason : ``"early_stopping"`` or ``"max_epochs"``.
    directory : the run directory.
    """

    model: SurrogateModel
    history: list[dict[str, float]]
    best_epoch: int
    best_val_rmse_na: float
    best_val_rmse_percent: float
    output_range_na: float
    noise_floor_na: float
    stop_reason: str
    directory: Path

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (everything but the model and the history)."""
        return {
            "best_epoch": self.best_epoch,
            "epochs_run": len(self.history),
            "best_val_rmse_na": self.best_val_rmse_na,
            "best_val_rmse_percent": self.best_val_rmse_percent,
            "output_range_na": self.output_range_na,
            "noise_floor_na": self.noise_floor_na,
            "stop_reason": self.stop_reason,
        }


def learning_rate_at(config: TrainConfig, epoch: int) -> float:
    """Learning rate of ``epoch`` (1-based) under ``config.lr_schedule``; a function of the epoch
    alone, so a resumed run continues the same schedule."""
    if config.lr_schedule == "cosine":
        return config.learning_rate * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / config.max_epochs))
    return config.learning_rate


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator that shuffles ``epoch``: a pure function of (seed, epoch), so resumed runs shuffle alike."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))


def training_identity(config: TrainConfig, train: Dataset, val: Dataset, info: DeviceInfo) -> dict[str, Any]:
    """What defines a training's result: the config without ``num_threads`` (speed only), the data, the device info."""
    return {
        "config": config.model_dump(mode="json", exclude={"num_threads"}),
        "data_fingerprint": dataset_fingerprint(train, val),
        "device_info": info.model_dump(mode="json", exclude={"provenance"}),
    }


def _normalised(model: SurrogateModel, ds: Dataset, mean: float, std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs in the model's normalised coordinates ``(N, n)`` and targets ``(I - mean) / std`` ``(N,)``, float32."""
    offset = model.input_offset.double().numpy()
    scale = model.input_scale.double().numpy()
    x = torch.from_numpy(((ds.voltages_v - offset) * scale).astype(np.float32))
    y = torch.from_numpy(((ds.current_na - mean) / std).astype(np.float32))
    return x, y


def _check_data(train: Dataset, val: Dataset, info: DeviceInfo) -> tuple[float, float]:
    """The training currents' mean and standard deviation, nA, after checking both datasets."""
    for name, ds in (("train", train), ("val", val)):
        if len(ds) == 0:
            raise ValueError(f"the {name} dataset is empty")
        if ds.voltages_v.shape[1] != info.n_activation:
            raise ValueError(
                f"the {name} dataset has {ds.voltages_v.shape[1]} voltage columns, the device info "
                f"{info.n_activation} electrodes {info.electrode_names}"
            )
    mean_na = float(np.mean(train.current_na))
    std_na = float(np.std(train.current_na))
    if not (np.isfinite(mean_na) and np.isfinite(std_na) and std_na > 0):
        raise ValueError(f"training currents must vary and be finite (std {std_na} nA); postprocess the data first")
    return mean_na, std_na


def train_surrogate(
    train: Dataset,
    val: Dataset,
    config: TrainConfig,
    directory: str | Path,
    info: DeviceInfo,
    progress: bool = True,
    *,
    overwrite: bool = False,
    notify: Callable[[str], None] = print,
) -> TrainResult:
    """Fit a :class:`SurrogateModel` to ``train``, selecting the epoch with the best validation RMSE.

    Parameters
    ----------
    train, val : measured data, voltages ``(N, n_activation)`` V, currents ``(N,)`` nA.
    config : architecture, optimiser, batch size, early stopping, seed, threads.
    directory : the run folder (see the module docstring); created if missing.
    info : the device description stored with the model.
    progress : show a progress bar over epochs (on a terminal).
    overwrite : replace a training of another identity in ``directory``.
    notify : where messages go (resuming, a replaced run moved aside).

    Raises
    ------
    TrainingDivergedError
        If the loss becomes NaN/inf; the best model so far stays in ``directory``.
    ConfigError
        If ``directory`` holds a training of another config, other data or another device.
    RunFolderError
        If ``directory`` is a file, a foreign folder, a run of another kind, or not writable.
    ValueError
        If the data are empty, have the wrong number of electrodes, or constant currents.
    """
    mean_na, std_na = _check_data(train, val, info)
    summary_base = {"output_range_na": float(np.ptp(train.current_na)), "noise_floor_na": noise_floor_na(val)}
    identity = training_identity(config, train, val, info)
    with open_run(directory, KIND, identity=identity, config=config, overwrite=overwrite, notify=notify) as run:
        if run.finished:
            done = run.metrics()
            return _result(
                run.path, run.read_history(), done["best_epoch"], done["best_val_rmse_na"], done["stop_reason"], summary_base
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = SurrogateModel(info, hidden_sizes=config.hidden_sizes, activation=config.activation)
        model.set_output_normalization(mean_na, std_na)
        previous_threads = torch.get_num_threads()
        if config.num_threads is not None:
            torch.set_num_threads(config.num_threads)
        try:
            history, best_epoch, best_val, stop_reason = _fit(model, train, val, config, run, mean_na, std_na, progress, notify)
        finally:
            torch.set_num_threads(previous_threads)
        result = _result(run.path, history, best_epoch, best_val, stop_reason, summary_base)
        run.finish(result.as_dict())
    return result


def _fit(
    model: SurrogateModel,
    train: Dataset,
    val: Dataset,
    config: TrainConfig,
    run: RunFolder,
    mean_na: float,
    std_na: float,
    progress: bool,
    notify: Callable[[str], None],
) -> tuple[list[dict[str, float]], int, float, str]:
    """The epoch loop, from the run's checkpoint if it has one; returns history, best epoch and RMSE, stop reason."""
    x, y = _normalised(model, train, mean_na, std_na)
    xv, yv = _normalised(model, val, mean_na, std_na)
    mlp = model.mlp
    trainer = MLPTrainer(mlp, lr=config.learning_rate, weight_decay=config.weight_decay)
    state = run.load_checkpoint()
    if state is None:
        history: list[dict[str, float]] = []
        best_epoch, best_val, best_model = 0, math.inf, None
    else:
        _load_flat_state(model, state["model"])
        trainer.load_from(mlp)
        trainer.load_adam_state(state["adam"])
        history = _history_rows(state["history"])
        best_epoch, best_val, best_model = state["best_epoch"], state["best_val_rmse_na"], state["best_model"]
        notify(f"resuming training after epoch {len(history)} (best epoch {best_epoch})")
    stop_reason = "max_epochs"

    try:
        with progress_bar(config.max_epochs, "training", unit="epochs", completed=len(history), enabled=progress) as bar:
            for epoch in range(len(history) + 1, config.max_epochs + 1):
                trainer.lr = learning_rate_at(config, epoch)
                if epoch - best_epoch > config.patience:
                    stop_reason = "early_stopping"
                    break
                start_time = time.perf_counter()
                train_rmse = math.sqrt(trainer.train_epoch(x, y, config.batch_size, epoch_generator(config.seed, epoch))) * std_na
                trainer.store_into(mlp)
                val_rmse = math.sqrt(trainer.squared_error(xv, yv, config.batch_size).item() / len(xv)) * std_na
                if not (math.isfinite(train_rmse) and math.isfinite(val_rmse)):
                    raise TrainingDivergedError(
                        f"training diverged in epoch {epoch}: train RMSE {train_rmse} nA, validation RMSE {val_rmse} nA "
                        f"(learning_rate {config.learning_rate}); the best model (epoch {best_epoch}, validation RMSE "
                        f"{best_val:.4g} nA) is kept in '{run.path}'"
                    )
                history.append({"epoch": epoch, "train_rmse_na": train_rmse, "val_rmse_na": val_rmse,
                                "time_s": time.perf_counter() - start_time})  # fmt: skip
                if val_rmse < best_val:
                    best_epoch, best_val, best_model = epoch, val_rmse, _flat_state(model)
                run.save_checkpoint({
                    "model": _flat_state(model), "adam": trainer.adam_state(), "best_model": best_model,
                    "best_epoch": best_epoch, "best_val_rmse_na": best_val, "history": _history_tensor(history),
                })  # fmt: skip
                run.write_history(history)
                bar.set_description(f"training (val RMSE {val_rmse:.3g} nA, best {best_val:.3g})")
                bar.advance(1)
    except (TrainingDivergedError, KeyboardInterrupt):
        if best_model is not None:  # leave the best model in the folder; the checkpoint has it in any case
            with contextlib.suppress(InmaterioError):
                _write_best(run, model, best_model, best_epoch, best_val)
        raise
    if best_model is not None:
        _write_best(run, model, best_model, best_epoch, best_val)
    return history, best_epoch, best_val, stop_reason


# The checkpoint holds a few flat tensors rather than dicts of many small ones: torch.save pays per
# object, and a checkpoint is written after every epoch.


def _flat_state(model: SurrogateModel) -> torch.Tensor:
    """Every parameter and buffer of ``model``, in state-dict order, as one float32 vector (a copy)."""
    return torch.cat([value.detach().reshape(-1) for value in model.state_dict().values()]).clone()


def _load_flat_state(model: SurrogateModel, flat: torch.Tensor) -> None:
    """Inverse of :func:`_flat_state`."""
    state, offset = {}, 0
    for key, value in model.state_dict().items():
        state[key] = flat[offset : offset + value.numel()].view_as(value)
        offset += value.numel()
    model.load_state_dict(state)


_HISTORY_COLUMNS = ("epoch", "train_rmse_na", "val_rmse_na", "time_s")


def _history_tensor(history: list[dict[str, float]]) -> torch.Tensor:
    """The history rows as a ``(epochs, 4)`` float64 tensor (columns of :data:`_HISTORY_COLUMNS`)."""
    return torch.tensor([[row[c] for c in _HISTORY_COLUMNS] for row in history], dtype=torch.float64).reshape(-1, 4)


def _history_rows(table: torch.Tensor) -> list[dict[str, float]]:
    """Inverse of :func:`_history_tensor`."""
    return [{"epoch": int(row[0]), **dict(zip(_HISTORY_COLUMNS[1:], row[1:]))} for row in table.tolist()]


def _write_best(run: RunFolder, model: SurrogateModel, best_model: torch.Tensor, epoch: int, val_rmse_na: float) -> None:
    """``model.json`` and ``weights.safetensors`` of the best state (flat) in the run folder (weights first)."""
    _load_flat_state(model, best_model)
    files = surrogate_files(model, metadata={"epoch": epoch, "val_rmse_na": val_rmse_na, "training": run.record["identity"]})
    for name, data in files.items():
        run.write_file(name, lambda path, data=data: path.write_bytes(data), what=f"best model ({name})")


def _result(
    directory: Path,
    history: list[dict[str, float]],
    best_epoch: int,
    best_val: float,
    stop_reason: str,
    summary_base: dict[str, float],
) -> TrainResult:
    range_na = summary_base["output_range_na"]
    return TrainResult(
        model=load_surrogate(directory),
        history=history,
        best_epoch=best_epoch,
        best_val_rmse_na=best_val,
        best_val_rmse_percent=100.0 * best_val / range_na,
        output_range_na=range_na,
        noise_floor_na=summary_base["noise_floor_na"],
        stop_reason=stop_reason,
        directory=directory,
    )
