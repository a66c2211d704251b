"""Training a surrogate MLP on measured data, with early stopping, checkpoints and resume.

The loss is the mean squared error of *normalised* currents: the model's
output map is set to the training set's mean and standard deviation
(:meth:`SurrogateModel.set_output_normalization`), and the network
``model.mlp`` is fitted to ``(I - mean) / std`` of inputs already mapped
onto the model's normalised coordinates. Reported RMSEs are in nA.

Speed (this is a hot path, see ``benchmarks/surrogate_training.py``): the
whole training set is one float32 tensor, normalised once; every epoch draws
one ``torch.randperm``, gathers the shuffled copy once and trains on
contiguous slices of it; the epoch's loss is accumulated in a tensor and read
once per epoch (no per-batch ``.item()``); Adam runs fused.

Run directory (``directory``)::

    model.json, model.safetensors  the best model so far (save_surrogate; load_surrogate reads it)
    history.json, history.csv      epoch, train_rmse_na, val_rmse_na, time_s (seconds of that epoch)
    training_state.json            config, data fingerprint, epochs done, best epoch, finished flag

Resume: calling :func:`train_surrogate` again on a directory with an
*unfinished* run of the same config and data continues after the last
finished epoch from the *best* checkpoint (its weights, a fresh Adam state,
the patience counter as it was), so a resumed run is valid but not
bit-identical to an uninterrupted one. A *finished* run is loaded, not
retrained. Another config or other data raise
:class:`~inmaterio.errors.ModelFileError`.
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inmaterio.errors import ModelFileError, TrainingDivergedError
from inmaterio.fileio import atomic_write_json, atomic_write_text, read_json
from inmaterio.progress import progress_bar
from inmaterio.smg.config import TrainConfig
from inmaterio.smg.dataset import Dataset, dataset_fingerprint, noise_floor_na
from inmaterio.surrogate import DeviceInfo, SurrogateModel, load_surrogate, save_surrogate

__all__ = ["TrainResult", "TrainingDivergedError", "train_surrogate", "epoch_generator"]

STATE_FILE = "training_state.json"
HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
HISTORY_FIELDS = ("epoch", "train_rmse_na", "val_rmse_na", "time_s")


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
            "directory": str(self.directory),
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


def _write_history(directory: Path, history: list[dict[str, float]]) -> None:
    atomic_write_json(directory / HISTORY_JSON, history)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(directory / HISTORY_CSV, buffer.getvalue())


def _run_identity(config: TrainConfig, fingerprint: str) -> dict[str, Any]:
    # num_threads changes the speed, not the result: a run may resume with another value.
    return {"config": config.model_dump(mode="json", exclude={"num_threads"}), "data_fingerprint": fingerprint}


def _normalised(model: SurrogateModel, ds: Dataset, mean: float, std: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs in the model's normalised coordinates ``(N, n)`` and targets ``(I - mean) / std`` ``(N,)``, float32."""
    offset = model.input_offset.double().numpy()
    scale = model.input_scale.double().numpy()
    x = torch.from_numpy(((ds.voltages_v - offset) * scale).astype(np.float32))
    y = torch.from_numpy(((ds.current_na - mean) / std).astype(np.float32))
    return x, y


def _rmse(mlp: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """RMSE of ``mlp`` on normalised data, a 0-d tensor (no sync)."""
    total = torch.zeros((), dtype=torch.float64)
    with torch.no_grad():
        for start in range(0, len(x), chunk):
            err = mlp(x[start : start + chunk]).squeeze(-1) - y[start : start + chunk]
            total += err.double().square().sum()
    return (total / len(x)).sqrt()


def train_surrogate(
    train: Dataset,
    val: Dataset,
    config: TrainConfig,
    directory: str | Path,
    info: DeviceInfo,
    progress: bool = True,
) -> TrainResult:
    """Fit a :class:`SurrogateModel` to ``train``, selecting the epoch with the best validation RMSE.

    Parameters
    ----------
    train, val : measured data, voltages ``(N, n_activation)`` V, currents ``(N,)`` nA.
    config : architecture, optimiser, batch size, early stopping, seed, threads.
    directory : run directory (see the module docstring); created if missing.
    info : the device description stored with the model.
    progress : show a progress bar over epochs (on a terminal).

    Raises
    ------
    TrainingDivergedError
        If the loss becomes NaN/inf; the best checkpoint so far stays in ``directory``.
    ModelFileError
        If ``directory`` holds a run of another config or other data.
    ValueError
        If the data are empty, have the wrong number of electrodes, or constant currents.
    """
    directory = Path(directory)
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
    if not (np.isfinite(std_na) and std_na > 0):
        raise ValueError(f"training currents must vary and be finite (std {std_na} nA); postprocess the data first")
    output_range_na = float(np.ptp(train.current_na))
    identity = _run_identity(config, dataset_fingerprint(train, val))
    summary_base = {"output_range_na": output_range_na, "noise_floor_na": noise_floor_na(val)}

    state_path = directory / STATE_FILE
    history: list[dict[str, float]] = []
    best_epoch, best_val = 0, math.inf
    if state_path.exists():
        state = read_json(state_path, ModelFileError)
        if {k: state.get(k) for k in identity} != identity:
            raise ModelFileError(
                f"'{directory}' holds a training run with another config or other data; "
                "choose another directory or remove it"
            )
        history = read_json(directory / HISTORY_JSON, ModelFileError)[: state["epochs_done"]]
        best_epoch, best_val = state["best_epoch"], state["best_val_rmse_na"]
        if state["finished"]:
            return _result(directory, history, best_epoch, best_val, state["stop_reason"], summary_base)
        model = load_surrogate(directory)
        print(f"resuming training in '{directory}' after epoch {len(history)} from the best epoch {best_epoch}")
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model = SurrogateModel(info, hidden_sizes=config.hidden_sizes, activation=config.activation)
        model.set_output_normalization(mean_na, std_na)
        directory.mkdir(parents=True, exist_ok=True)

    previous_threads = torch.get_num_threads()
    if config.num_threads is not None:
        torch.set_num_threads(config.num_threads)
    try:
        stop_reason = _fit(
            model, train, val, config, directory, identity, history, best_epoch, best_val, mean_na, std_na, progress
        )
    finally:
        torch.set_num_threads(previous_threads)
    state = read_json(state_path, ModelFileError)
    return _result(directory, history, state["best_epoch"], state["best_val_rmse_na"], stop_reason, summary_base)


def _fit(
    model: SurrogateModel,
    train: Dataset,
    val: Dataset,
    config: TrainConfig,
    directory: Path,
    identity: dict[str, Any],
    history: list[dict[str, float]],
    best_epoch: int,
    best_val: float,
    mean_na: float,
    std_na: float,
    progress: bool,
) -> str:
    """The epoch loop; appends to ``history``, checkpoints, returns the stop reason."""
    x, y = _normalised(model, train, mean_na, std_na)
    xv, yv = _normalised(model, val, mean_na, std_na)
    mlp = model.mlp
    optimizer = torch.optim.Adam(
        mlp.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, fused=True
    )
    n, batch = len(x), config.batch_size
    first_epoch = len(history) + 1
    stop_reason = "max_epochs"

    def save_state(finished: bool) -> None:
        _write_history(directory, history)
        atomic_write_json(
            directory / STATE_FILE,
            {
                **identity,
                "epochs_done": len(history),
                "best_epoch": best_epoch,
                "best_val_rmse_na": best_val,
                "finished": finished,
                "stop_reason": stop_reason if finished else None,
            },
        )

    with progress_bar(
        config.max_epochs, "training", unit="epochs", completed=first_epoch - 1, enabled=progress
    ) as bar:
        for epoch in range(first_epoch, config.max_epochs + 1):
            for group in optimizer.param_groups:
                group["lr"] = learning_rate_at(config, epoch)
            if epoch - best_epoch > config.patience:
                stop_reason = "early_stopping"
                break
            start_time = time.perf_counter()
            mlp.train()
            perm = torch.randperm(n, generator=epoch_generator(config.seed, epoch))
            xs, ys = x[perm], y[perm]
            total = torch.zeros(())
            for start in range(0, n, batch):
                xb, yb = xs[start : start + batch], ys[start : start + batch]
                optimizer.zero_grad(set_to_none=True)
                loss = torch.nn.functional.mse_loss(mlp(xb).squeeze(-1), yb)
                loss.backward()
                optimizer.step()
                total += loss.detach() * len(xb)
            mlp.eval()
            train_rmse = math.sqrt(total.item() / n) * std_na
            val_rmse = _rmse(mlp, xv, yv).item() * std_na
            if not (math.isfinite(train_rmse) and math.isfinite(val_rmse)):
                raise TrainingDivergedError(
                    f"training diverged in epoch {epoch}: train RMSE {train_rmse} nA, validation RMSE {val_rmse} nA "
                    f"(learning_rate {config.learning_rate}); the best model (epoch {best_epoch}, validation RMSE "
                    f"{best_val:.4g} nA) is kept in '{directory}'"
                )
            history.append(
                {
                    "epoch": epoch,
                    "train_rmse_na": train_rmse,
                    "val_rmse_na": val_rmse,
                    "time_s": time.perf_counter() - start_time,
                }
            )
            if val_rmse < best_val:
                best_epoch, best_val = epoch, val_rmse
                save_surrogate(
                    model,
                    directory,
                    metadata={"epoch": epoch, "val_rmse_na": val_rmse, "training": identity},
                    overwrite=True,
                )
            save_state(finished=False)
            bar.set_description(f"training (val RMSE {val_rmse:.3g} nA, best {best_val:.3g})")
            bar.advance(1)
    save_state(finished=True)
    return stop_reason


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
