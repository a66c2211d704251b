"""Gradient-descent training of torch models, with model selection, early stopping, checkpoints and resume.

:func:`train_gd` trains any :class:`torch.nn.Module`; in inmaterio it trains
DNPU networks whose learnable parameters are control voltages, through a
differentiable surrogate. The model and any of its sub-modules (e.g. the
DNPU layers of an ``nn.Sequential``) may offer two hooks:

``model.regularizer()``
    a scalar tensor (summed over the modules that have one) added to the objective with weight
    ``config.regularization_weight`` (e.g. a penalty on voltages outside
    their range). It is recorded separately in the history as ``regularizer``
    and is *not* part of ``train_loss`` / ``val_loss``; model selection and
    early stopping use ``loss + regularization_weight * regularizer`` (the
    objective that is minimised, so a run without validation data does not
    pick an early epoch whose lower loss came with a larger penalty).
``model.constrain()``
    called under :func:`torch.no_grad` after every optimiser step (the DNPU
    layer clamps the control voltages to their ranges there).

Losses. ``loss_fn(output, target)`` returns a scalar or a tensor of
*independent* losses, e.g. one per node or per problem trained in parallel.
A non-scalar loss is **summed** for the backward pass, so each independent
problem gets exactly the gradient it would get alone (a mean would divide
every gradient by the number of problems), and its **mean** is recorded in
the history. Model selection and early stopping use that mean: the best
epoch is shared by all problems, not chosen per problem.

Epoch. The training set is shuffled (when ``batch_size`` is set) with a
:class:`torch.Generator` seeded from ``config.seed``, which also draws the
validation split; each batch takes one step on
``sum(loss) + regularization_weight * regularizer()``. After the updates the
model is evaluated in eval mode (no gradients) on the whole training set and
on the validation set: ``train_loss`` and ``val_loss`` are the losses of the
weights *at the end of the epoch*, so the weights kept as the best and the
recorded best loss belong together. The global torch RNG (dropout, noise of
a :class:`~inmaterio.processors.SurrogateProcessor`) is re-seeded from the
generator every epoch inside :func:`torch.random.fork_rng`, so a run is
reproducible, a resumed run is bit-identical to an uninterrupted one, and the
caller's RNG state is left untouched.

Run directory (``directory``, optional)::

    checkpoint.pt              torch.save dict (load with torch.load(weights_only=True)): model and
                               optimiser state, epoch, best epoch/loss/model state, history, generator
                               state, config, package version; written atomically after every epoch
    history.json, history.csv  one row per epoch: epoch, train_loss, val_loss, [regularizer], metrics..., time_s

Calling :func:`train_gd` again with the same directory, config, model
structure, optimiser class, data and metric names resumes after the last
finished epoch; a finished run is returned without training. Anything else
raises :class:`~inmaterio.errors.ConfigError` naming the difference; the
checkpoint is never overwritten by another run.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from inmaterio import __version__
from inmaterio.config import StrictModel
from inmaterio.errors import ConfigError, ModelFileError, TrainingDivergedError
from inmaterio.fileio import atomic_torch_save, atomic_write_json, atomic_write_text, read_torch_state
from inmaterio.progress import progress_bar

__all__ = ["GDConfig", "GDResult", "OPTIMIZERS", "train_gd", "CHECKPOINT_FILE", "HISTORY_JSON", "HISTORY_CSV"]

CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
_FORMAT = "inmaterio.training.gd/1"
_RESERVED = ("epoch", "train_loss", "val_loss", "regularizer", "time_s")

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
}
"""The only place where an optimiser is looked up by name (``GDConfig.optimizer``)."""

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
Metric = Callable[[Tensor, Tensor], float]


class GDConfig(StrictModel):
    """Settings of :func:`train_gd`.

    ``betas`` are used by adam/adamw only, ``momentum`` by sgd/rmsprop only;
    setting one for an optimiser that ignores it is an error. ``patience``
    (None = off) stops after that many epochs without a lower validation
    loss (training loss when there is no validation set).
    """

    optimizer: Literal["adam", "sgd", "adamw", "rmsprop"] = "adam"
    learning_rate: float = Field(0.01, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = Field(0.0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    epochs: int = Field(200, ge=1)
    batch_size: int | None = Field(None, ge=1)
    validation_fraction: float = Field(0.0, ge=0, lt=1)
    patience: int | None = Field(None, ge=1)
    regularization_weight: float = Field(1.0, ge=0)
    seed: int = 0

    @model_validator(mode="after")
    def _check_optimizer_settings(self) -> GDConfig:
        if not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas {self.betas} must both lie in [0, 1)")
        if self.optimizer in ("adam", "adamw") and self.momentum != 0.0:
            raise ValueError(f"momentum {self.momentum} is not used by optimizer '{self.optimizer}' (sgd, rmsprop only)")
        if self.optimizer in ("sgd", "rmsprop") and self.betas != (0.9, 0.999):
            raise ValueError(f"betas {self.betas} are not used by optimizer '{self.optimizer}' (adam, adamw only)")
        return self


@dataclass
class GDResult:
    """Outcome of :func:`train_gd`.

    Attributes
    ----------
    history : one dict per epoch: ``epoch`` (1-based), ``train_loss``, ``val_loss`` (None without a
        validation set), ``regularizer`` (if the model has one), one key per metric, ``time_s``.
    best_epoch : the epoch whose weights were kept (1-based).
    best_loss : its validation loss (training loss without a validation set), plus
        ``regularization_weight * regularizer`` when the model has a regularizer.
    stopped_because : ``"epochs"`` (all epochs run) or ``"early_stopping"``.
    model : the trained model (the same object that was passed in) with the best weights loaded.
    """

    history: list[dict[str, Any]]
    best_epoch: int
    best_loss: float
    stopped_because: str
    model: nn.Module = field(repr=False)


# ----------------------------------------------------------------------------------------- helpers


def _make_optimizer(
    model: nn.Module,
    config: GDConfig,
    optimizer: torch.optim.Optimizer | OptimizerFactory | None,
) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"{type(model).__name__} has no parameters with requires_grad=True; nothing to train")
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if optimizer is not None:
        if not callable(optimizer):
            raise ConfigError(
                f"optimizer must be a torch.optim.Optimizer or a callable returning one, got {type(optimizer).__name__}"
            )
        made = optimizer(params)
        if not isinstance(made, torch.optim.Optimizer):
            raise ConfigError(f"the optimizer factory returned a {type(made).__name__}, not a torch.optim.Optimizer")
        return made
    kwargs: dict[str, Any] = {"lr": config.learning_rate, "weight_decay": config.weight_decay}
    if config.optimizer in ("adam", "adamw"):
        kwargs["betas"] = config.betas
    else:
        kwargs["momentum"] = config.momentum
    return OPTIMIZERS[config.optimizer](params, **kwargs)


def _hooks(model: nn.Module) -> tuple[Callable[[], Tensor] | None, Callable[[], None] | None]:
    """The summed ``regularizer()`` and the combined ``constrain()`` of ``model`` and all its sub-modules."""
    regs = [m.regularizer for m in model.modules() if callable(getattr(m, "regularizer", None))]
    cons = [m.constrain for m in model.modules() if callable(getattr(m, "constrain", None))]

    def regularizer() -> Tensor:
        return sum(r() for r in regs[1:]) + regs[0]()

    def constrain() -> None:
        for c in cons:
            c()

    return (regularizer if regs else None), (constrain if cons else None)


def _check_data(x: Tensor, y: Tensor, what: str) -> None:
    if not (isinstance(x, Tensor) and isinstance(y, Tensor)):
        raise ConfigError(f"{what} inputs and targets must be torch tensors, got {type(x).__name__}, {type(y).__name__}")
    if x.ndim == 0 or y.ndim == 0:
        raise ConfigError(f"{what} inputs and targets need a sample dimension, got shapes {tuple(x.shape)}, {tuple(y.shape)}")
    if len(x) != len(y):
        raise ConfigError(f"{what} inputs have {len(x)} samples but targets {len(y)}")
    if len(x) == 0:
        raise ConfigError(f"{what} data are empty (0 samples)")


def _fingerprint(*tensors: Tensor) -> str:
    """SHA-256 of the shapes, dtypes and bytes of ``tensors``: resuming on other data is refused."""
    digest = hashlib.sha256()
    for t in tensors:
        t = t.detach()
        digest.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
        digest.update(t.contiguous().reshape(-1).view(torch.uint8).cpu().numpy().tobytes())
    return digest.hexdigest()


def _structure(model: nn.Module) -> dict[str, list]:
    return {name: [list(t.shape), str(t.dtype)] for name, t in model.state_dict().items()}


def _clone_state(model: nn.Module) -> dict[str, Tensor]:
    return {name: t.detach().clone() for name, t in model.state_dict().items()}


def _forward(model: nn.Module, x: Tensor, chunk: int | None) -> Tensor:
    """Outputs of ``model`` on ``x`` without gradients, in chunks of ``chunk`` samples (None: at once)."""
    with torch.no_grad():
        if chunk is None or chunk >= len(x):
            return model(x)
        return torch.cat([model(x[start : start + chunk]) for start in range(0, len(x), chunk)])


def _rng_devices(model: nn.Module) -> list[int]:
    return sorted({t.device.index or 0 for t in model.state_dict().values() if t.device.type == "cuda"})


def _seed_global_rng(seed: int, cuda_devices: list[int]) -> None:
    torch.default_generator.manual_seed(seed)
    for index in cuda_devices:
        with torch.cuda.device(index):
            torch.cuda.manual_seed(seed)


def _write_history(directory: Path, history: list[dict[str, Any]]) -> None:
    atomic_write_json(directory / HISTORY_JSON, history)
    buffer = io.StringIO()
    if history:
        writer = csv.DictWriter(buffer, fieldnames=list(history[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(history)
    atomic_write_text(directory / HISTORY_CSV, buffer.getvalue())




def _check_identity(path: Path, saved: dict[str, Any], identity: dict[str, Any]) -> None:
    """Raise ConfigError naming the first kind of difference between a checkpoint and this run."""
    advice = "use another directory or delete the checkpoint"
    if saved["config"] != identity["config"]:
        diffs = [
            f"{key} {saved['config'].get(key)!r} there, {identity['config'].get(key)!r} here"
            for key in sorted(set(saved["config"]) | set(identity["config"]))
            if saved["config"].get(key) != identity["config"].get(key)
        ]
        raise ConfigError(f"checkpoint '{path}' was made with another config: {'; '.join(diffs)}; {advice}")
    if saved["structure"] != identity["structure"]:
        there, here = saved["structure"], identity["structure"]
        diffs = [f"'{k}' only in the checkpoint" for k in there if k not in here]
        diffs += [f"'{k}' only in this model" for k in here if k not in there]
        diffs += [
            f"'{k}' has shape {tuple(there[k][0])} {there[k][1]} there, {tuple(here[k][0])} {here[k][1]} here"
            for k in here
            if k in there and there[k] != here[k]
        ]
        raise ConfigError(f"checkpoint '{path}' was made with a model of other parameters: {'; '.join(diffs)}; {advice}")
    if saved["optimizer_class"] != identity["optimizer_class"]:
        raise ConfigError(
            f"checkpoint '{path}' was made with optimizer {saved['optimizer_class']}, this run uses "
            f"{identity['optimizer_class']}; {advice}"
        )
    if saved["data"] != identity["data"]:
        raise ConfigError(f"checkpoint '{path}' was made with other training/validation data; {advice}")
    if saved["metrics"] != identity["metrics"]:
        raise ConfigError(
            f"checkpoint '{path}' was made with metrics {saved['metrics']}, this run has {identity['metrics']}; {advice}"
        )


# ---------------------------------------------------------------------------------------- training


def train_gd(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    config: GDConfig,
    *,
    optimizer: torch.optim.Optimizer | OptimizerFactory | None = None,
    validation: tuple[Tensor, Tensor] | None = None,
    directory: str | Path | None = None,
    progress: bool = False,
    metrics: Mapping[str, Metric] | None = None,
) -> GDResult:
    """Train ``model`` by gradient descent on ``loss_fn(model(x), y)``; keep and restore the best weights.

    Parameters
    ----------
    model : the module to train (in place). Only parameters with ``requires_grad`` are optimised.
        Optional hooks ``regularizer()`` and ``constrain()``: see the module docstring.
    loss_fn : ``loss_fn(output, target)`` for a batch: a scalar, or a tensor of independent losses
        that is summed for the gradient and averaged for the history.
    x, y : inputs ``(n, ...)`` and targets ``(n, ...)``; the first dimension indexes samples.
    config : optimiser, learning rate, epochs, batch size, validation split, patience, seed.
    optimizer : a torch optimiser over the model's parameters, or a factory
        ``f(trainable_parameters) -> Optimizer``; either overrides ``config.optimizer``,
        ``learning_rate``, ``betas``, ``momentum`` and ``weight_decay``.
    validation : an explicit validation set ``(x_val, y_val)`` (then ``validation_fraction`` must be 0).
    directory : run directory for ``checkpoint.pt`` and the history; resumes from its checkpoint.
    progress : show a progress bar over epochs (on a terminal), with the latest loss.
    metrics : ``name -> f(output, target) -> float``, evaluated every epoch on the validation
        outputs (training outputs without a validation set) and recorded under ``name``.

    Raises
    ------
    ConfigError
        Mismatched or empty data, a split leaving no training data, a metric name clashing with a
        history key, or a checkpoint in ``directory`` from another config, model, optimiser, data
        or set of metrics.
    TrainingDivergedError
        When a loss becomes NaN or infinite; the checkpoint in ``directory`` stays that of the last
        good epoch (the model in memory is left as it diverged).
    ModelFileError
        When ``directory`` holds an unreadable checkpoint.
    """
    metrics = dict(metrics or {})
    for name in metrics:
        if name in _RESERVED:
            raise ConfigError(f"metric name '{name}' clashes with a history key; reserved: {', '.join(_RESERVED)}")
    _check_data(x, y, "training")
    if validation is not None:
        if config.validation_fraction > 0:
            raise ConfigError(
                f"both a validation set and validation_fraction {config.validation_fraction} are given; use one"
            )
        _check_data(*validation, "validation")
    generator = torch.Generator().manual_seed(config.seed)
    if config.validation_fraction > 0:
        n = len(x)
        n_val = max(1, int(n * config.validation_fraction + 0.5))
        if n_val >= n:
            raise ConfigError(
                f"validation_fraction {config.validation_fraction} of {n} samples takes {n_val} for validation "
                f"and leaves {n - n_val} for training; give more data or a smaller fraction"
            )
        perm = torch.randperm(n, generator=generator).to(x.device)
        val_idx, train_idx = perm[:n_val], perm[n_val:]
        validation = (x[val_idx], y[val_idx.to(y.device)])
        x, y = x[train_idx], y[train_idx.to(y.device)]
    directory = None if directory is None else Path(directory)
    regularizer, constrain = _hooks(model)

    opt = _make_optimizer(model, config, optimizer)
    data = (x, y) if validation is None else (x, y, *validation)
    identity = {
        "config": config.model_dump(mode="json"),
        "structure": _structure(model),
        "optimizer_class": f"{type(opt).__module__}.{type(opt).__qualname__}",
        "data": _fingerprint(*data),
        "metrics": list(metrics),
    }

    history: list[dict[str, Any]] = []
    best_epoch, best_loss = 0, math.inf
    best_state = _clone_state(model)
    path = None if directory is None else directory / CHECKPOINT_FILE
    if path is not None and path.exists():
        saved = read_torch_state(path, _FORMAT, "checkpoint of inmaterio.training.gd", ModelFileError)
        _check_identity(path, saved, identity)
        history = saved["history"]
        best_epoch, best_loss = saved["best_epoch"], saved["best_loss"]
        best_state = saved["best_model"]
        if saved["finished"]:
            model.load_state_dict(best_state)
            return GDResult(history, best_epoch, best_loss, saved["stopped_because"], model)
        model.load_state_dict(saved["model"])
        try:
            opt.load_state_dict(saved["optimizer"])
        except (ValueError, KeyError) as err:
            raise ConfigError(f"checkpoint '{path}': the optimiser state does not fit this optimiser: {err}") from None
        generator.set_state(saved["generator"])
        print(f"resuming training in '{directory}' after epoch {saved['epoch']} (best epoch {best_epoch})")

    def save(epoch: int, finished: bool, stopped_because: str | None) -> None:
        if directory is None:
            return
        checkpoint = {
            "format": _FORMAT,
            "inmaterio_version": __version__,
            **identity,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "epoch": epoch,
            "best_epoch": best_epoch,
            "best_loss": best_loss,
            "best_model": best_state,
            "history": history,
            "generator": generator.get_state(),
            "finished": finished,
            "stopped_because": stopped_because,
        }
        atomic_torch_save(path, checkpoint)
        _write_history(directory, history)

    n_train = len(x)
    batch = config.batch_size if config.batch_size is not None and config.batch_size < n_train else None
    n_batches = 1 if batch is None else math.ceil(n_train / batch)
    cuda_devices = _rng_devices(model)
    x_eval, y_eval = (x, y) if validation is None else validation
    was_training = model.training
    stopped_because = "epochs"
    first_epoch = len(history) + 1

    def diverged(epoch: int, where: str, value: float) -> TrainingDivergedError:
        kept = (
            f"the last good checkpoint (epoch {epoch - 1}) is kept in '{directory}'"
            if directory is not None and epoch > 1
            else "no checkpoint was written (no directory given)" if directory is None
            else "no epoch finished, so there is no checkpoint"
        )
        return TrainingDivergedError(
            f"training diverged in epoch {epoch}: {where} is {value} (optimizer {type(opt).__name__}, "
            f"learning rate {opt.param_groups[0].get('lr')}); {kept}"
        )

    try:
        with progress_bar(
            config.epochs, "training", unit="epoch", completed=first_epoch - 1, enabled=progress
        ) as bar:
            for epoch in range(first_epoch, config.epochs + 1):
                start_time = time.perf_counter()
                epoch_seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator))
                if batch is not None:
                    perm = torch.randperm(n_train, generator=generator).to(x.device)
                    xs, ys = x[perm], y[perm.to(y.device)]
                else:
                    xs, ys = x, y
                with torch.random.fork_rng(devices=cuda_devices):
                    _seed_global_rng(epoch_seed, cuda_devices)
                    model.train()
                    objectives = []
                    for start in range(0, n_train, batch or n_train):
                        xb, yb = (xs, ys) if batch is None else (xs[start : start + batch], ys[start : start + batch])
                        loss = loss_fn(model(xb), yb)
                        objective = loss.sum() if loss.ndim else loss
                        if regularizer is not None and config.regularization_weight > 0:
                            objective = objective + config.regularization_weight * regularizer()
                        opt.zero_grad(set_to_none=True)
                        objective.backward()
                        opt.step()
                        if constrain is not None:
                            with torch.no_grad():
                                constrain()
                        objectives.append(objective.detach())
                    values = torch.stack(objectives)
                    bad = ~torch.isfinite(values)
                    if bool(bad.any()):
                        b = int(bad.nonzero()[0, 0])
                        raise diverged(epoch, f"the objective of batch {b + 1} of {n_batches}", float(values[b]))

                    model.eval()
                    train_loss = float(loss_fn(_forward(model, x, batch), y).mean())
                    row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "val_loss": None}
                    eval_out = None
                    if validation is not None:
                        eval_out = _forward(model, x_eval, batch)
                        row["val_loss"] = float(loss_fn(eval_out, y_eval).mean())
                    if regularizer is not None:
                        with torch.no_grad():
                            row["regularizer"] = float(regularizer())
                    if metrics:
                        if eval_out is None:
                            eval_out = _forward(model, x_eval, batch)
                        for name, metric in metrics.items():
                            row[name] = float(metric(eval_out, y_eval))
                for key in ("train_loss", "val_loss", "regularizer"):
                    if row.get(key) is not None and not math.isfinite(row[key]):
                        raise diverged(epoch, f"the {key} after the epoch's last step", row[key])
                row["time_s"] = time.perf_counter() - start_time
                history.append(row)

                selected = train_loss if validation is None else row["val_loss"]
                if regularizer is not None:
                    selected += config.regularization_weight * row["regularizer"]
                if selected < best_loss:
                    best_epoch, best_loss, best_state = epoch, selected, _clone_state(model)
                stop = config.patience is not None and epoch - best_epoch >= config.patience
                finished = stop or epoch == config.epochs
                if stop and epoch < config.epochs:
                    stopped_because = "early_stopping"
                save(epoch, finished, stopped_because if finished else None)
                description = f"loss {train_loss:.4g}"
                if row["val_loss"] is not None:
                    description += f", val {row['val_loss']:.4g}"
                bar.set_description(f"training ({description}; best {best_loss:.4g} at epoch {best_epoch})")
                bar.advance(1)
                if finished:
                    break
    finally:
        model.train(was_training)
    model.load_state_dict(best_state)
    return GDResult(history, best_epoch, best_loss, stopped_because, model)
