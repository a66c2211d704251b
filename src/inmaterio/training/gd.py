"""Gradient-descent training of torch models: model selection, early stopping, schedules, callbacks, run folders.

:func:`train_gd` trains any :class:`torch.nn.Module`; in inmaterio it trains
DNPU networks whose learnable parameters are control voltages, through a
differentiable surrogate. The model and any of its sub-modules (e.g. the
DNPU layers of an ``nn.Sequential``) may offer two hooks:

``model.regularizer()``
    a scalar tensor (summed over the modules that have one) added to the objective with weight
    ``config.regularization_weight`` (e.g. a penalty on voltages outside
    their range). It is recorded separately in the history as ``regularizer``
    and is *not* part of ``train_loss`` / ``val_loss``.
``model.constrain()``
    called under :func:`torch.no_grad` after every optimiser step (the DNPU
    layer clamps the control voltages to their ranges there).

Losses. ``loss_fn(output, target)`` returns a scalar or a tensor of
*independent* losses, e.g. one per node or per problem trained in parallel.
A non-scalar loss is **summed** for the backward pass, so each independent
problem gets exactly the gradient it would get alone (a mean would divide
every gradient by the number of problems), and its **mean** is recorded in
the history.

Epoch. The training set is shuffled (when ``batch_size`` is set) with a
:class:`torch.Generator` seeded from ``config.seed``, which also draws the
validation split; each batch takes one step on
``sum(loss) + regularization_weight * regularizer()``, then ``constrain()``,
then the scheduler's step (``scheduler_interval="step"``), then the
callbacks' ``on_step_end``. After the updates the model is evaluated in eval
mode, without gradients and inside ``eval_context()`` if one is given (e.g.
a processor's ``noise_off``): ``train_loss`` is the loss of the weights *at
the end of the epoch* on the whole training set (with
``config.evaluate_train=False`` it is instead the sample-weighted mean of the
batch losses seen during the epoch, and no pass over the training set is
made), ``val_loss`` that on the validation set; then the metrics, the
callbacks' ``on_epoch_end``, model selection, and the scheduler's step
(``scheduler_interval="epoch"``). The global torch RNG (dropout, noise of a
:class:`~inmaterio.processors.SurrogateProcessor`) is re-seeded from the
generator every epoch inside :func:`torch.random.fork_rng`, so a run is
reproducible, a resumed run is bit-identical to an uninterrupted one, and the
caller's RNG state is left untouched.

Model selection. Every epoch has a *selection value*: with
``config.select_by = "loss"`` (the default) the objective that is minimised,
``val_loss`` (``train_loss`` without a validation set) plus
``regularization_weight * regularizer`` when the model has a regularizer;
otherwise the history entry it names (``train_loss``, ``val_loss`` or a
metric, e.g. a validation accuracy with ``select_mode="max"``). The weights
of the epoch with the best value (the first one on ties; NaN never wins)
are kept and restored at the end; ``config.patience`` stops after that many
epochs without a better value.

Callbacks (:class:`Callback`; every method optional, plain objects with some
of them work too): ``on_step_end(StepEnd)`` after every optimiser step,
``on_epoch_end(EpochEnd)`` after the epoch's evaluation, returning ``None`` or
a mapping of extra history entries; ``state_dict()`` / ``load_state_dict()``
make a callback's state part of the checkpoint, so a resumed run continues
it exactly.

Run folder (``directory``, optional; :mod:`inmaterio.runs`, kind
``"inmaterio.training.gd"``)::

    run.json, config.yaml      state of the run, its identity and wall time; the GDConfig
    checkpoint.pt              model, optimiser, scheduler and callback states, epoch, best epoch/value/
                               weights, history, generator state: after an epoch, at most every
                               ``checkpoint_interval_s``, always after the last one and on an exception
    history.json, history.csv  one row per epoch: epoch, train_loss, val_loss, [regularizer], metrics...,
                               [lr], callback entries..., time_s
    metrics.json               the outcome of a finished run

Calling :func:`train_gd` again with the same directory and the same
identity (config, model structure, optimiser class and its parameter-group
hyper-parameters, scheduler class and interval, data, metric and callback
names, the caller's ``identity``) resumes after the last finished epoch; a
finished run is returned without training. Another identity raises
:class:`~inmaterio.errors.ConfigError` naming every differing field;
``overwrite=True`` replaces the run.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import Tensor, nn

from inmaterio.checkpoints import CheckpointWriter, history_of, pack_tensors, unpack_tensors
from inmaterio.config import StrictModel
from inmaterio.denormals import flushed_denormals
from inmaterio.errors import ConfigError, ModelFileError, TrainingDivergedError
from inmaterio.progress import progress_bar
from inmaterio.runs import CHECKPOINT_FILE, RunFolder, fingerprint_tensors, open_run, read_run

__all__ = [
    "KIND",
    "GDConfig",
    "GDResult",
    "OPTIMIZERS",
    "Callback",
    "StepEnd",
    "EpochEnd",
    "train_gd",
    "read_checkpoint",
]

KIND = "inmaterio.training.gd"
"""The kind of run folder :func:`train_gd` writes."""

_RESERVED = ("epoch", "train_loss", "val_loss", "regularizer", "lr", "time_s")
_LOSS_KEYS = ("loss", "train_loss", "val_loss")
_MAX_SEED = 2**63 - 1

OPTIMIZERS: dict[str, type[torch.optim.Optimizer]] = {
    "adam": torch.optim.Adam,
    "sgd": torch.optim.SGD,
    "adamw": torch.optim.AdamW,
    "rmsprop": torch.optim.RMSprop,
}
"""The only place where an optimiser is looked up by name (``GDConfig.optimizer``)."""

OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]
Scheduler = Any  # torch.optim.lr_scheduler.LRScheduler or ReduceLROnPlateau
SchedulerFactory = Callable[[torch.optim.Optimizer], Scheduler]
Metric = Callable[[Tensor, Tensor], float]


class GDConfig(StrictModel):
    """Settings of :func:`train_gd`.

    ``betas`` are used by adam/adamw only, ``momentum`` by sgd/rmsprop only;
    setting one for an optimiser that ignores it is an error. ``select_by``
    names the selection value (see the module docstring: ``"loss"``,
    ``"train_loss"``, ``"val_loss"`` or a metric), ``select_mode`` whether
    it is minimised or maximised; losses are always minimised. ``patience``
    (None = off) stops after that many epochs without a better selection
    value. ``evaluate_train=False`` records the mean of the epoch's batch
    losses as ``train_loss`` instead of evaluating the training set after the
    epoch (faster on large training sets).
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
    select_by: str = Field("loss", min_length=1)
    select_mode: Literal["min", "max"] = "min"
    evaluate_train: bool = True
    seed: int = Field(0, ge=0, le=_MAX_SEED)

    @field_validator("betas")
    @classmethod
    def _check_betas(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(math.isfinite(b) and 0.0 <= b < 1.0 for b in value):
            raise ValueError(f"betas {value} must both lie in [0, 1)")
        return value

    @model_validator(mode="after")
    def _check_optimizer_settings(self) -> GDConfig:
        if self.optimizer in ("adam", "adamw") and self.momentum != 0.0:
            raise ValueError(f"momentum {self.momentum} is not used by optimizer '{self.optimizer}' (sgd, rmsprop only)")
        if self.optimizer in ("sgd", "rmsprop") and self.betas != (0.9, 0.999):
            raise ValueError(f"betas {self.betas} are not used by optimizer '{self.optimizer}' (adam, adamw only)")
        if self.select_by in _LOSS_KEYS and self.select_mode != "min":
            raise ValueError(f"select_by '{self.select_by}' is a loss and is minimised; select_mode must be 'min'")
        return self


@dataclass
class GDResult:
    """Outcome of :func:`train_gd`.

    Attributes
    ----------
    history : one dict per epoch: ``epoch`` (1-based), ``train_loss``, ``val_loss`` (None without a
        validation set), ``regularizer`` (if the model has one), one key per metric, ``lr`` (the first
        parameter group's learning rate at the epoch's last step, when a scheduler is given), the
        callbacks' entries, ``time_s``.
    best_epoch : the epoch whose weights were kept (1-based; 0 if no epoch had a comparable
        selection value, then the initial weights are kept).
    best_loss : the objective of that epoch: its validation loss (training loss without a
        validation set), plus ``regularization_weight * regularizer`` when the model has one.
    stopped_because : ``"epochs"`` (all epochs run) or ``"early_stopping"``.
    model : the trained model (the same object that was passed in) with the best weights loaded.
    best_value : the selection value of the best epoch (equals ``best_loss`` with ``select_by="loss"``).
    directory : the run folder, or None.
    """

    history: list[dict[str, Any]]
    best_epoch: int
    best_loss: float
    stopped_because: str
    model: nn.Module = field(repr=False)
    best_value: float = math.nan
    directory: Path | None = None


# ----------------------------------------------------------------------------------------- callbacks


@dataclass
class StepEnd:
    """What :meth:`Callback.on_step_end` sees after an optimiser step (and the scheduler's step).

    Attributes
    ----------
    epoch : the epoch (1-based).
    step : optimiser steps taken in the run so far, this one included.
    batch : index of the batch in the epoch (0-based).
    objective : the detached scalar that was minimised on this batch.
    model, optimizer : the model (in train mode) and the optimiser.
    """

    epoch: int
    step: int
    batch: int
    objective: Tensor
    model: nn.Module
    optimizer: torch.optim.Optimizer


class EpochEnd:
    """What :meth:`Callback.on_epoch_end` sees after the epoch's evaluation (model in eval mode).

    Attributes
    ----------
    epoch : the epoch (1-based).
    row : the history row so far (read it, do not change it).
    model, optimizer : the model and the optimiser.
    targets : the evaluation targets (validation set, else the training set).
    outputs : ``model(inputs)`` on the evaluation set, no gradients, computed on first use and
        shared with the metrics.
    """

    def __init__(
        self,
        epoch: int,
        row: Mapping[str, Any],
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        targets: Tensor,
        outputs: Callable[[], Tensor],
    ) -> None:
        self.epoch = epoch
        self.row = row
        self.model = model
        self.optimizer = optimizer
        self.targets = targets
        self._outputs = outputs

    @property
    def outputs(self) -> Tensor:
        return self._outputs()


class Callback:
    """Base of training callbacks; every method is optional (override what you need).

    A callback whose state changes during training (a running best, a counter)
    returns it from :meth:`state_dict` as plain data (tensors, numbers,
    strings, containers) and takes it back in :meth:`load_state_dict`; the
    run folder's checkpoint keeps it, so a resumed run continues exactly.
    """

    def on_step_end(self, step: StepEnd) -> None:
        """Called after every optimiser step."""

    def on_epoch_end(self, end: EpochEnd) -> Mapping[str, Any] | None:
        """Called after the epoch's evaluation; extra history entries (name -> number) or None."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """The callback's state (saved with every checkpoint)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (on resume, and for a finished run)."""


# ----------------------------------------------------------------------------------------- helpers


def _qualname(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


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


def _make_scheduler(
    scheduler: Scheduler | SchedulerFactory | None, optimizer: torch.optim.Optimizer, interval: str
) -> Scheduler | None:
    if interval not in ("step", "epoch"):
        raise ConfigError(f"scheduler_interval must be 'step' or 'epoch', got {interval!r}")
    if scheduler is None:
        return None
    if not hasattr(scheduler, "state_dict") and callable(scheduler):
        scheduler = scheduler(optimizer)
    if not all(callable(getattr(scheduler, name, None)) for name in ("step", "state_dict", "load_state_dict")):
        raise ConfigError(
            f"scheduler must be a torch.optim.lr_scheduler instance or a callable f(optimizer) returning one, "
            f"got {type(scheduler).__name__}"
        )
    if getattr(scheduler, "optimizer", optimizer) is not optimizer:
        raise ConfigError("the scheduler drives another optimiser than the one being trained; build it on that optimiser")
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau) and interval != "epoch":
        raise ConfigError("ReduceLROnPlateau needs scheduler_interval='epoch' (it is stepped with the selection value)")
    return scheduler


def _param_groups(optimizer: torch.optim.Optimizer) -> dict[str, dict[str, Any]]:
    """The hyper-parameters of every parameter group (tensors as numbers), for the run's identity."""
    groups = {}
    for group in optimizer.param_groups:
        entry: dict[str, Any] = {"n_parameters": len(group["params"])}
        for key, value in group.items():
            if key in ("params", "initial_lr"):
                continue
            entry[key] = value.tolist() if isinstance(value, Tensor) else value
        groups[f"group {len(groups)}"] = entry
    return groups


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


def _check_data(x: Any, y: Any, what: str) -> None:
    """Refuse non-tensors, missing sample dimensions, other lengths, no samples, non-float inputs, NaN/inf."""
    if not (isinstance(x, Tensor) and isinstance(y, Tensor)):
        raise ConfigError(f"{what} inputs and targets must be torch tensors, got {type(x).__name__}, {type(y).__name__}")
    if x.ndim == 0 or y.ndim == 0:
        raise ConfigError(f"{what} inputs and targets need a sample dimension, got shapes {tuple(x.shape)}, {tuple(y.shape)}")
    if len(x) != len(y):
        raise ConfigError(f"{what} inputs have {len(x)} samples but targets {len(y)}")
    if len(x) == 0:
        raise ConfigError(f"{what} data are empty (0 samples)")
    if not x.is_floating_point():
        raise ConfigError(f"{what} inputs have dtype {x.dtype}; give floating-point inputs (e.g. x.float())")
    if y.is_complex():
        raise ConfigError(f"{what} targets have the complex dtype {y.dtype}; give real targets")
    for name, t in (("inputs", x), ("targets", y)):
        if t.is_floating_point():
            bad = ~torch.isfinite(t)
            if bool(bad.any()):
                sample = int(bad.reshape(len(t), -1).any(dim=1).nonzero()[0, 0])
                value = float(t[sample].reshape(-1)[bad[sample].reshape(-1)][0])
                raise ConfigError(f"{what} {name} hold {value} at sample {sample}; every value must be finite")


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


def _better(value: float, best: float, mode: str) -> bool:
    """``value`` improves on ``best`` (strictly; NaN never does)."""
    return value < best if mode == "min" else value > best


# ---------------------------------------------------------------------------------------- training


def train_gd(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    config: GDConfig,
    *,
    optimizer: torch.optim.Optimizer | OptimizerFactory | None = None,
    scheduler: Scheduler | SchedulerFactory | None = None,
    scheduler_interval: Literal["step", "epoch"] = "epoch",
    callbacks: Sequence[Callback | Any] = (),
    validation: tuple[Tensor, Tensor] | None = None,
    metrics: Mapping[str, Metric] | None = None,
    eval_context: Callable[[], AbstractContextManager[Any]] | None = None,
    directory: str | Path | None = None,
    overwrite: bool = False,
    identity: Mapping[str, Any] | None = None,
    checkpoint_interval_s: float = 1.0,
    progress: bool = False,
) -> GDResult:
    """Train ``model`` by gradient descent on ``loss_fn(model(x), y)``; keep and restore the best weights.

    Parameters
    ----------
    model : the module to train (in place). Only parameters with ``requires_grad`` are optimised.
        Optional hooks ``regularizer()`` and ``constrain()``: see the module docstring.
    loss_fn : ``loss_fn(output, target)`` for a batch: a scalar, or a tensor of independent losses
        that is summed for the gradient and averaged for the history.
    x, y : inputs ``(n, ...)`` (floating point, finite) and targets ``(n, ...)``; the first
        dimension indexes samples.
    config : optimiser, learning rate, epochs, batch size, validation split, patience, model
        selection, seed.
    optimizer : a torch optimiser over the model's parameters, or a factory
        ``f(trainable_parameters) -> Optimizer``; either overrides ``config.optimizer``,
        ``learning_rate``, ``betas``, ``momentum`` and ``weight_decay``.
    scheduler : a learning-rate scheduler on that optimiser (``torch.optim.lr_scheduler``), or a
        factory ``f(optimizer) -> scheduler``; its state is checkpointed. A
        ``ReduceLROnPlateau`` is stepped with the epoch's selection value.
    scheduler_interval : ``"step"`` (after every optimiser step) or ``"epoch"`` (after the epoch's
        evaluation).
    callbacks : :class:`Callback` objects (or any objects with some of its methods), called in order.
    validation : an explicit validation set ``(x_val, y_val)`` (then ``validation_fraction`` must be 0).
    metrics : ``name -> f(output, target) -> float``, evaluated every epoch on the validation
        outputs (training outputs without a validation set) and recorded under ``name``.
    eval_context : a factory of a context manager entered around every end-of-epoch evaluation,
        e.g. ``processor.noise_off`` to evaluate without output noise.
    directory : the run folder (see the module docstring); None: nothing is saved.
    overwrite : replace a run of another identity in ``directory`` (an unfinished one is moved aside).
    identity : anything else that defines the result (e.g. the device's description), JSON-able;
        resuming with another is refused.
    checkpoint_interval_s : write the checkpoint and the history at most this often, s (0: after
        every epoch); always after the last epoch and when training stops with an exception, so a
        run killed outright loses at most this much work
        (:class:`~inmaterio.checkpoints.CheckpointWriter`).
    progress : show a progress bar over epochs (on a terminal), with the latest loss.

    Raises
    ------
    ConfigError
        Bad data (mismatched, empty, non-float or non-finite inputs, non-finite targets), a split
        leaving no training data, a metric or callback entry clashing with a history key, an unknown
        ``select_by``, or a run in ``directory`` with another identity (every differing field named).
    TrainingDivergedError
        When a loss becomes NaN or infinite; the checkpoint in ``directory`` stays that of the last
        good epoch (the model in memory is left as it diverged).
    ModelFileError
        When ``directory`` holds an unreadable or foreign checkpoint.
    RunFolderError
        When ``directory`` is a file, a foreign folder, a run of another kind, busy or not writable.
    """
    if not isinstance(config, GDConfig):
        raise ConfigError(
            f"config must be a GDConfig, got {type(config).__name__}; build one with GDConfig(...) or "
            "validate_config(GDConfig, mapping)"
        )
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    metrics = dict(metrics or {})
    callbacks = list(callbacks)
    for name in metrics:
        if name in _RESERVED:
            raise ConfigError(f"metric name '{name}' clashes with a history key; reserved: {', '.join(_RESERVED)}")
    _check_data(x, y, "training")
    if validation is not None:
        if config.validation_fraction > 0:
            raise ConfigError(f"both a validation set and validation_fraction {config.validation_fraction} are given; use one")
        if not (isinstance(validation, tuple | list) and len(validation) == 2):
            raise ConfigError(f"validation must be a pair (x_val, y_val), got {type(validation).__name__}")
        _check_data(*validation, "validation")
    has_validation = validation is not None or config.validation_fraction > 0
    selectable = ["loss", "train_loss", *(["val_loss"] if has_validation else []), *metrics]
    if config.select_by not in selectable:
        raise ConfigError(f"select_by '{config.select_by}' is not a value of this run; choose one of: {', '.join(selectable)}")
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

    CheckpointWriter(None, checkpoint_interval_s)  # refuses a negative or non-finite interval before any work
    opt = _make_optimizer(model, config, optimizer)
    optimizer_identity = {"class": _qualname(opt), "param_groups": _param_groups(opt)}
    sched = _make_scheduler(scheduler, opt, scheduler_interval)
    if directory is None:
        return _train(model, loss_fn, x, y, config, opt, sched, scheduler_interval, callbacks, validation, metrics,
                      eval_context, generator, None, 0.0, progress)  # fmt: skip
    data = (x, y) if validation is None else (x, y, *validation)
    run_identity = {
        "config": config.model_dump(mode="json"),
        "model": _structure(model),
        "optimizer": optimizer_identity,
        "scheduler": None if sched is None else {"class": _qualname(sched), "interval": scheduler_interval},
        "data_sha256": fingerprint_tensors(*data),
        "metrics": list(metrics),
        "callbacks": {str(i): _qualname(c) for i, c in enumerate(callbacks)},
        "extra": dict(identity or {}),
    }
    with open_run(directory, KIND, identity=run_identity, config=config, overwrite=overwrite) as run:
        return _train(model, loss_fn, x, y, config, opt, sched, scheduler_interval, callbacks, validation, metrics,
                      eval_context, generator, run, checkpoint_interval_s, progress)  # fmt: skip


def _train(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    config: GDConfig,
    opt: torch.optim.Optimizer,
    sched: Scheduler | None,
    scheduler_interval: str,
    callbacks: list[Any],
    validation: tuple[Tensor, Tensor] | None,
    metrics: dict[str, Metric],
    eval_context: Callable[[], AbstractContextManager[Any]] | None,
    generator: torch.Generator,
    run: RunFolder | None,
    checkpoint_interval_s: float,
    progress: bool,
) -> GDResult:
    """The epochs of :func:`train_gd` (arguments checked there), saving to ``run`` when given."""
    regularizer, constrain = _hooks(model)
    stateful = [c for c in callbacks if callable(getattr(c, "state_dict", None))]
    step_hooks = [c.on_step_end for c in callbacks if callable(getattr(c, "on_step_end", None))]
    epoch_hooks = [c.on_epoch_end for c in callbacks if callable(getattr(c, "on_epoch_end", None))]
    mode = config.select_mode
    directory = None if run is None else run.path

    history: list[dict[str, Any]] = []
    best_epoch, best_value, best_loss = 0, (math.inf if mode == "min" else -math.inf), math.inf
    best_state = _clone_state(model)
    saved = None if run is None else run.load_checkpoint()
    if saved is not None:
        try:
            saved = {**saved, **unpack_tensors(saved["packed"]), "history": history_of(saved)}
            history = list(saved["history"])
            best_epoch, best_value, best_loss = saved["best_epoch"], saved["best_value"], saved["best_loss"]
            best_state = saved["best_model"]
            for callback, state in zip(stateful, saved["callbacks"], strict=True):
                callback.load_state_dict(state)
            if saved["finished"]:
                model.load_state_dict(best_state)
                result = GDResult(history, best_epoch, best_loss, saved["stopped_because"], model, best_value, directory)
                if not run.finished:  # killed between the last checkpoint and the end of the run
                    _finish(run, result)
                return result
            model.load_state_dict(saved["model"])
            opt.load_state_dict(saved["optimizer"])
            if sched is not None:
                sched.load_state_dict(saved["scheduler"])
            generator.set_state(saved["generator"])
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as err:
            raise ModelFileError(
                f"checkpoint '{run.file(CHECKPOINT_FILE)}' does not fit this run ({type(err).__name__}: {err}); "
                "replace the run with overwrite=True (--overwrite)"
            ) from None
    elif run is not None and run.finished:
        raise ModelFileError(f"the finished run in '{run.path}' has no checkpoint; replace it with overwrite=True (--overwrite)")

    writer = CheckpointWriter(run, checkpoint_interval_s)

    def save(epoch: int, finished: bool, stopped_because: str | None) -> None:
        if run is None:
            return
        tensors = {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": None if sched is None else sched.state_dict(),
            "callbacks": [c.state_dict() for c in stateful],
            "generator": generator.get_state(),
            "best_model": best_state,
        }
        state = {
            "epoch": epoch,
            "best_epoch": best_epoch,
            "best_value": best_value,
            "best_loss": best_loss,
            "finished": finished,
            "stopped_because": stopped_because,
            "packed": pack_tensors(tensors),  # a snapshot: the tensors are copied
        }
        writer.offer(state, history, final=finished)

    n_train = len(x)
    batch = config.batch_size if config.batch_size is not None and config.batch_size < n_train else None
    n_batches = 1 if batch is None else math.ceil(n_train / batch)
    cuda_devices = _rng_devices(model)
    x_eval, y_eval = (x, y) if validation is None else validation
    was_training = model.training
    stopped_because = "epochs"
    first_epoch = len(history) + 1
    weight = config.regularization_weight

    def diverged(epoch: int, where: str, value: float) -> TrainingDivergedError:
        if directory is None:
            kept = "no checkpoint was written (no directory given)"
        elif epoch == 1:
            kept = "no epoch finished, so there is no checkpoint"
        else:
            kept = f"the last good checkpoint (epoch {epoch - 1}) is kept in '{directory}'"
        return TrainingDivergedError(
            f"training diverged in epoch {epoch}: {where} is {value} (optimizer {type(opt).__name__}, "
            f"learning rate {opt.param_groups[0].get('lr')}); {kept}"
        )

    try:
        with (
            writer.flushing_on_exit(),
            progress_bar(config.epochs, "training", unit="epoch", completed=first_epoch - 1, enabled=progress) as bar,
        ):
            for epoch in range(first_epoch, config.epochs + 1):
                start_time = time.perf_counter()
                epoch_seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator))
                if batch is not None:
                    perm = torch.randperm(n_train, generator=generator).to(x.device)
                    xs, ys = x[perm], y[perm.to(y.device)]
                else:
                    xs, ys = x, y
                with torch.random.fork_rng(devices=cuda_devices), flushed_denormals():
                    _seed_global_rng(epoch_seed, cuda_devices)
                    model.train()
                    objectives, batch_losses = [], []
                    lr = opt.param_groups[0]["lr"]
                    for b, start in enumerate(range(0, n_train, batch or n_train)):
                        xb, yb = (xs, ys) if batch is None else (xs[start : start + batch], ys[start : start + batch])
                        loss = loss_fn(model(xb), yb)
                        objective = loss.sum() if loss.ndim else loss
                        if regularizer is not None and weight > 0:
                            objective = objective + weight * regularizer()
                        opt.zero_grad(set_to_none=True)
                        objective.backward()
                        opt.step()
                        if constrain is not None:
                            with torch.no_grad():
                                constrain()
                        objectives.append(objective.detach())
                        if not config.evaluate_train:
                            batch_losses.append(loss.detach().mean() * len(xb))
                        if sched is not None and scheduler_interval == "step":
                            lr = opt.param_groups[0]["lr"]
                            sched.step()
                        if step_hooks:
                            info = StepEnd(epoch, (epoch - 1) * n_batches + b + 1, b, objectives[-1], model, opt)
                            for hook in step_hooks:
                                hook(info)
                    values = torch.stack(objectives)
                    bad = ~torch.isfinite(values)
                    if bool(bad.any()):
                        i = int(bad.nonzero()[0, 0])
                        raise diverged(epoch, f"the objective of batch {i + 1} of {n_batches}", float(values[i]))
                    if sched is not None and scheduler_interval == "epoch":
                        lr = opt.param_groups[0]["lr"]

                    model.eval()
                    eval_outputs = _Once(lambda: _forward(model, x_eval, batch))
                    with eval_context() if eval_context is not None else contextlib.nullcontext():
                        if config.evaluate_train:
                            train_out = _forward(model, x, batch) if validation is not None else eval_outputs()
                            train_loss = float(loss_fn(train_out, y).mean())
                        else:
                            train_loss = float(torch.stack(batch_losses).sum() / n_train)
                        row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "val_loss": None}
                        if validation is not None:
                            row["val_loss"] = float(loss_fn(eval_outputs(), y_eval).mean())
                        if regularizer is not None:
                            with torch.no_grad():
                                row["regularizer"] = float(regularizer())
                        for key in ("train_loss", "val_loss", "regularizer"):
                            if row.get(key) is not None and not math.isfinite(row[key]):
                                raise diverged(epoch, f"the {key} after the epoch's last step", row[key])
                        for name, metric in metrics.items():
                            row[name] = float(metric(eval_outputs(), y_eval))
                        if sched is not None:
                            row["lr"] = float(lr)
                        if epoch_hooks:
                            end = EpochEnd(epoch, row, model, opt, y_eval, eval_outputs)
                            for hook in epoch_hooks:
                                _add_entries(row, hook(end), hook)
                row["time_s"] = time.perf_counter() - start_time
                history.append(row)

                objective_value = (train_loss if validation is None else row["val_loss"]) + (
                    weight * row["regularizer"] if regularizer is not None else 0.0
                )
                value = objective_value if config.select_by == "loss" else row[config.select_by]
                if value is not None and _better(float(value), best_value, mode):
                    best_epoch, best_value, best_loss, best_state = epoch, float(value), objective_value, _clone_state(model)
                if sched is not None and scheduler_interval == "epoch":
                    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
                        sched.step(objective_value if config.select_by == "loss" else float(value))
                    else:
                        sched.step()
                stop = config.patience is not None and epoch - best_epoch >= config.patience
                finished = stop or epoch == config.epochs
                if stop and epoch < config.epochs:
                    stopped_because = "early_stopping"
                save(epoch, finished, stopped_because if finished else None)
                description = f"loss {train_loss:.4g}"
                if row["val_loss"] is not None:
                    description += f", val {row['val_loss']:.4g}"
                bar.set_description(f"training ({description}; best {best_value:.4g} at epoch {best_epoch})")
                bar.advance(1)
                if finished:
                    break
    finally:
        model.train(was_training)
    model.load_state_dict(best_state)
    result = GDResult(history, best_epoch, best_loss, stopped_because, model, best_value, directory)
    if run is not None:
        _finish(run, result)
    return result


def read_checkpoint(directory: str | Path) -> dict[str, Any]:
    """The last checkpoint of a :func:`train_gd` run folder, for inspection (loaded without pickle).

    Returns a dict with ``epoch``, ``model`` and ``best_model`` (state dicts), ``optimizer``,
    ``scheduler``, ``callbacks`` (their states), ``generator`` (state), ``history``,
    ``best_epoch``, ``best_value``, ``best_loss``, ``finished`` and ``stopped_because``.

    Raises
    ------
    RunFolderError
        If ``directory`` is not a run folder.
    ModelFileError
        If it is not a ``train_gd`` run, or its checkpoint is missing or cannot be read.
    """
    folder = Path(directory)
    record = read_run(folder)
    if record["kind"] != KIND:
        raise ModelFileError(f"'{folder}' holds a run of kind '{record['kind']}', not '{KIND}'")
    path = folder / CHECKPOINT_FILE
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        state = dict(payload["state"])
        return {**state, **unpack_tensors(state.pop("packed")), "history": history_of(state)}
    except FileNotFoundError:
        raise ModelFileError(f"'{path}' is missing: the run has no checkpoint yet") from None
    except Exception as err:  # noqa: BLE001 - any failure to read is a bad file
        raise ModelFileError(f"checkpoint '{path}' cannot be read ({type(err).__name__}: {err})") from None


class _Once:
    """``make()`` on the first call, the same value afterwards (the epoch's evaluation outputs)."""

    def __init__(self, make: Callable[[], Tensor]) -> None:
        self._make = make
        self._value: Tensor | None = None

    def __call__(self) -> Tensor:
        if self._value is None:
            self._value = self._make()
        return self._value


def _add_entries(row: dict[str, Any], entries: Mapping[str, Any] | None, hook: Any) -> None:
    """Add a callback's history entries to ``row``: numbers, strings or None (one-element tensors and numpy
    scalars become numbers); a name already in the row is an error."""
    if entries is None:
        return
    if not isinstance(entries, Mapping):
        raise ConfigError(f"{hook.__qualname__} returned a {type(entries).__name__}; return None or a mapping name -> value")
    for key, value in entries.items():
        if key in row or key in _RESERVED:
            raise ConfigError(f"{hook.__qualname__} returned the entry '{key}', which the history already has")
        one_number = (isinstance(value, Tensor) and value.numel() == 1) or (
            getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None))  # numpy scalars
        )
        if one_number:
            value = value.item()
        if not isinstance(value, bool | int | float | str | None):
            raise ConfigError(
                f"{hook.__qualname__} returned the entry '{key}' = {type(value).__name__}; history entries are numbers, "
                "strings or None"
            )
        row[key] = value


def _finish(run: RunFolder, result: GDResult) -> None:
    run.write_history(result.history)
    run.finish(
        {
            "best_epoch": result.best_epoch,
            "best_value": result.best_value,
            "best_loss": result.best_loss,
            "stopped_because": result.stopped_because,
            "epochs_run": len(result.history),
        }
    )
