"""`fit` and `evaluate` for circuit models trained with Equilibrium Propagation.

Mini-batches of the whole circuit are solved at once (free and nudged phases
batched). The gradient estimate of each batch goes to the ``.grad`` of the
model's normalised parameters (:func:`~inmaterio.circuits.ep.ep_gradients`);
a ``torch.optim`` optimiser chosen by :class:`EPTrainConfig` (Adam, SGD with
momentum, SGD, or pulses on simulated devices:
:class:`~inmaterio.circuits.pulsed.PulsedDeviceOptimizer`) takes the step, and :meth:`~inmaterio.circuits.graph.Model.constrain`
keeps every parameter inside its bounds. An optional LR scheduler steps
after every epoch.

With a ``directory``, training keeps a run folder (:mod:`inmaterio.runs`,
kind :data:`FIT_KIND`): ``config.yaml``, ``run.json``, ``checkpoint.pt``
after every epoch (normalised parameters, optimiser and scheduler state,
random generator state, history), ``history.json`` / ``history.csv``, and
``metrics.json`` (the last epoch's row) when finished. A rerun resumes from
the checkpoint and gives the same numbers, bit for bit, as an uninterrupted
run. The folder's identity is the config (all but ``epochs``), the model's
structure and seed, fingerprints of the data, the scheduler and the solver
options: another of any is refused, naming the differing fields. ``epochs``
may grow to train longer: a finished run then continues.

Model selection: with ``restore_best=True`` (and ``validation`` with class
labels), :func:`fit` also keeps a copy of the parameters of the best epoch
on the validation data, by :func:`best_epoch`'s rule (highest
``val_accuracy``; ties: lowest ``val_loss``, then the earliest epoch), and
loads them into the model when training ends. The copy and its epoch are in
the checkpoint (key ``best``), so a resumed run selects the same epoch and
the same parameters; ``restore_best`` joins the folder's identity (only when
true, so folders made without it keep theirs).
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from pydantic import Field, model_serializer, model_validator

from inmaterio.checkpoints import CheckpointWriter, history_of
from inmaterio.circuits.ep import LossFn, check_targets, ep_gradients, output_loss, readout
from inmaterio.circuits.graph import Model
from inmaterio.circuits.pulsed import PulsedDeviceOptimizer, PulsedOptimizerConfig
from inmaterio.circuits.solve.native import SolverOptions
from inmaterio.config import StrictModel
from inmaterio.errors import ConfigError, ModelFileError
from inmaterio.progress import progress_bar
from inmaterio.runs import RunFolder, fingerprint_tensors, open_run

__all__ = ["FIT_KIND", "EPTrainConfig", "best_epoch", "evaluate", "fit"]

#: The kind of run folder :func:`fit` keeps.
FIT_KIND = "inmaterio.circuits.fit"

SchedulerFactory = Callable[[torch.optim.Optimizer], Any]

_Beta = Annotated[float, Field(ge=0, lt=1)]


class EPTrainConfig(StrictModel):
    """Settings of EP training (unknown keys, NaN and infinite numbers are errors).

    Attributes:
        epochs: passes over the training data (>= 1).
        batch_size: circuits solved together per step.
        beta: nudging strength (see :func:`~inmaterio.circuits.ep.ep_gradients`).
        variant: "symmetric", "one-sided" or "random-sign".
        optimizer: "adam" (``torch.optim.Adam`` with ``betas``), "momentum"
            (``torch.optim.SGD`` with ``momentum``) or "sgd" (``torch.optim.SGD``),
            on the normalised parameters: ``lr`` is relative to each parameter's bound width; or
            "pulsed": every parameter element a pulsed device updated by pulses
            (:class:`~inmaterio.circuits.pulsed.PulsedDeviceOptimizer`, settings in ``pulsed``, seeded by ``seed``).
        lr: learning rate (> 0).
        lr_decay: factor applied to the learning rate after every epoch (``lr`` is the first epoch's), in (0, 1]
            (1: constant; ``0.01 ** (1 / epochs)`` ends a hundred times lower, so the last epochs settle).
            Left out of the dumped config when 1, so the configs of earlier runs dump as before.
        momentum: heavy-ball momentum of "momentum", in [0, 1).
        betas: Adam's decay rates, each in [0, 1).
        loss: "mse" or "cross_entropy" on the class scores of ``readout``.
        readout: "direct" or "differential" (see :func:`~inmaterio.circuits.ep.readout`).
        target_v: MSE target score (V) of the true class (``-target_v`` for the others).
        scale_per_v: logits per volt for cross-entropy.
        seed: seeds the shuffling (and the sign of random-sign EP; and the devices and pulses of "pulsed").
        pulsed: the device and update rule of ``optimizer: pulsed`` (given with it and only with it;
            left out of the dumped config when absent, so other configs dump as before).
    """

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    beta: float = Field(1e-7, gt=0)
    variant: Literal["symmetric", "one-sided", "random-sign"] = "symmetric"
    optimizer: Literal["adam", "momentum", "sgd", "pulsed"] = "adam"
    lr: float = Field(0.01, gt=0)
    lr_decay: float = Field(1.0, gt=0, le=1)
    momentum: float = Field(0.9, ge=0, lt=1)
    betas: tuple[_Beta, _Beta] = (0.9, 0.999)
    loss: Literal["mse", "cross_entropy"] = "mse"
    readout: Literal["direct", "differential"] = "direct"
    target_v: float = Field(0.1, gt=0)
    scale_per_v: float = Field(10.0, gt=0)
    seed: int = 0
    pulsed: PulsedOptimizerConfig | None = None

    @model_validator(mode="after")
    def _pulsed_with_its_settings(self) -> EPTrainConfig:
        if self.optimizer == "pulsed" and self.pulsed is None:
            raise ValueError("optimizer 'pulsed' needs the 'pulsed' settings (device, rule, ...)")
        if self.optimizer != "pulsed" and self.pulsed is not None:
            raise ValueError(f"'pulsed' settings are given but optimizer is {self.optimizer!r}; use optimizer: pulsed")
        return self

    @model_serializer(mode="wrap")
    def _dump_without_absent_options(self, handler) -> dict[str, Any]:
        data = handler(self)
        if self.pulsed is None:
            data.pop("pulsed", None)
        if self.lr_decay == 1.0:
            data.pop("lr_decay", None)
        return data

    def loss_fn(self) -> LossFn:
        """The per-sample loss of the output voltages."""
        return output_loss(self.loss, readout_kind=self.readout, scale_per_v=self.scale_per_v, target_v=self.target_v)

    def make_optimizer(self, parameters: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        """The ``torch.optim`` optimiser of :attr:`optimizer` over ``parameters`` (a model's normalised parameters)."""
        if self.optimizer == "adam":
            return torch.optim.Adam(parameters, lr=self.lr, betas=self.betas, fused=True)
        if self.optimizer == "momentum":
            return torch.optim.SGD(parameters, lr=self.lr, momentum=self.momentum)
        if self.optimizer == "pulsed":
            return PulsedDeviceOptimizer(parameters, self.pulsed, lr=self.lr, seed=self.seed)
        return torch.optim.SGD(parameters, lr=self.lr)


def _targets(model: Model, y, n: int, config: EPTrainConfig, what: str) -> torch.Tensor:
    """``y`` as a tensor, checked against ``n`` samples, the model's outputs and the loss."""
    try:
        y = torch.as_tensor(y)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ConfigError(f"{what} must be class indices or target voltages, got {type(y).__name__} ({err})") from None
    if y.dim() == 0:
        raise ConfigError(f"{what} is a single number ({y.item()!r}); give one target per sample ({n})")
    if len(y) != n:
        raise ConfigError(f"{what} has {len(y)} targets for {n} samples; give one target per sample")
    check_targets(y, config.loss, readout(torch.zeros(1, model.n_outputs, dtype=torch.float64), config.readout).shape[1], what)
    return y


def evaluate(
    model: Model, x, y, config: EPTrainConfig | None = None, *, batch_size: int = 512, options: SolverOptions | None = None
) -> dict[str, float]:
    """Mean loss and accuracy (argmax of the class scores vs integer labels ``y``) of the free circuits.

    Raises:
        VoltageError: bad input data (names the sample and feature).
        ConfigError: bad labels (names the sample), a config that is not an :class:`EPTrainConfig`.
    """
    cfg = EPTrainConfig() if config is None else config
    if not isinstance(cfg, EPTrainConfig):
        raise ConfigError(f"config must be an EPTrainConfig, got {type(cfg).__name__}")
    data = model.input_list(x)
    y = _targets(model, y, len(data[0]), cfg, "y")
    out = model.predict(data, batch_size=batch_size, options=options)  # checks every sample before solving
    result = {"loss": cfg.loss_fn()(out, y).mean().item()}
    if not y.dtype.is_floating_point:
        result["accuracy"] = (readout(out, cfg.readout).argmax(1) == y).double().mean().item()
    return result


def _selection_key(row: dict[str, Any]) -> tuple[float, float, int]:
    """Larger is better: validation accuracy, then lower validation loss, then the earlier epoch."""
    return (row["val_accuracy"], -row["val_loss"], -row["epoch"])


def best_epoch(history: list[dict[str, Any]]) -> int:
    """The epoch (1-based) of the best validation result in a :func:`fit` history.

    The rule of ``fit(..., restore_best=True)``: the highest ``val_accuracy``; among equal ones the
    lowest ``val_loss``; among equal ones the earliest epoch. Only validation numbers are read.

    Raises:
        ConfigError: an empty history, or one without ``val_accuracy`` / ``val_loss`` (no labelled validation data).
    """
    if not history or any("val_accuracy" not in r or "val_loss" not in r for r in history):
        raise ConfigError("best_epoch needs a history with val_accuracy and val_loss in every epoch "
                          "(fit with validation data of class labels)")  # fmt: skip
    return max(history, key=_selection_key)["epoch"]


def _identity(
    model: Model, data, y, validation, config: EPTrainConfig, scheduler, options: SolverOptions | None, device, restore_best=False
) -> dict[str, Any]:
    """Everything that defines a training run's result, but ``epochs`` (which may grow)."""
    identity = {
        "config": {k: v for k, v in config.model_dump(mode="json").items() if k != "epochs"},
        "model": model.describe(),
        "data": {
            "train": fingerprint_tensors(*data, y),
            "validation": None if validation is None else fingerprint_tensors(*validation[0], validation[1]),
        },
        "scheduler": _scheduler_identity(scheduler),
        "solver": asdict(options or SolverOptions()),
        "device": str(torch.device(device)) if device is not None else "cpu",
    }
    if restore_best:  # only when asked, so that the folders made before it keep their identity
        identity["restore_best"] = True
    return identity


def _scheduler_identity(scheduler) -> dict[str, Any] | None:
    """The scheduler's type and settings (its state before any step, numbers and strings only)."""
    if scheduler is None:
        return None
    moving = {
        "last_epoch",
        "_step_count",
        "_last_lr",
        "_get_lr_called_within_step",
        "verbose",
        "best",
        "num_bad_epochs",
        "cooldown_counter",
        "_is_initial",
    }
    settings = {k: v for k, v in scheduler.state_dict().items()
                if k not in moving and isinstance(v, int | float | str | bool | list | tuple | type(None))}  # fmt: skip
    return {"type": type(scheduler).__name__, **settings}


def _checkpoint(
    model: Model, optimizer, scheduler, generator: torch.Generator, best: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A snapshot of the training state (the history is added by the :class:`CheckpointWriter`).

    ``best``: ``{"epoch", "parameters"}`` of ``restore_best`` (a snapshot already), stored under ``best``.
    """
    state = {
        "parameters": {k: p.detach().clone() for k, p in model.normalised_parameters().items()},
        "optimizer": copy.deepcopy(optimizer.state_dict()),
        "scheduler": None if scheduler is None else copy.deepcopy(scheduler.state_dict()),
        "generator": generator.get_state(),
    }
    if best is not None:
        state["best"] = best
    return state


def _check_parameters(where: Path, saved: Any, params: dict[str, torch.nn.Parameter], what: str = "parameters") -> None:
    """``saved`` holds a finite tensor of the right shape for every parameter of the model."""
    if not isinstance(saved, dict) or sorted(saved) != sorted(params):
        raise ModelFileError(
            f"checkpoint '{where}' holds {what} {sorted(saved) if isinstance(saved, dict) else saved!r}, the model has {sorted(params)}"
        )
    for key, value in saved.items():
        if not isinstance(value, torch.Tensor) or value.shape != params[key].shape or not torch.isfinite(value).all():
            raise ModelFileError(
                f"checkpoint '{where}': {what[:-1]} {key!r} is not a finite tensor of shape {tuple(params[key].shape)}"
            )


def _restore(
    run: RunFolder, state: dict[str, Any], model: Model, optimizer, scheduler, generator: torch.Generator, restore_best=False
) -> tuple[list[dict[str, float]], dict[str, Any] | None]:
    """Load a checkpoint into the model, optimiser, scheduler and generator; returns the history and the best epoch's state."""
    where = run.file("checkpoint.pt")
    keys = {"parameters", "optimizer", "scheduler", "generator", "history_json"} | ({"best"} if restore_best else set())
    if not isinstance(state, dict) or set(state) != keys:
        raise ModelFileError(
            f"checkpoint '{where}' is not an EP training checkpoint{' with restore_best' if restore_best else ''} "
            f"(keys {sorted(state) if isinstance(state, dict) else type(state).__name__})"
        )
    params = model.normalised_parameters()
    saved = state["parameters"]
    _check_parameters(where, saved, params)
    best = state.get("best")
    if restore_best:
        if not (isinstance(best, dict) and set(best) == {"epoch", "parameters"} and isinstance(best["epoch"], int)):
            raise ModelFileError(f"checkpoint '{where}' has a damaged 'best' entry (want epoch and parameters)")
        _check_parameters(where, best["parameters"], params, "best parameters")
    try:
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        generator.set_state(state["generator"])
    except (KeyError, ValueError, TypeError, RuntimeError) as err:
        raise ModelFileError(f"checkpoint '{where}' does not fit this training ({type(err).__name__}: {err})") from None
    with torch.no_grad():
        for key, value in saved.items():
            params[key].copy_(value)
    try:
        history = history_of(state)
    except (TypeError, ValueError):
        history = None
    if not isinstance(history, list) or not all(isinstance(r, dict) for r in history):
        raise ModelFileError(f"checkpoint '{where}' has a damaged history")
    if restore_best and not 1 <= best["epoch"] <= len(history):
        raise ModelFileError(f"checkpoint '{where}': best epoch {best['epoch']} is not one of its {len(history)} epochs")
    return history, best


def fit(
    model: Model,
    x,
    y,
    config: EPTrainConfig,
    *,
    validation: tuple[Any, Any] | None = None,
    directory: str | Path | None = None,
    overwrite: bool = False,
    scheduler: SchedulerFactory | None = None,
    progress: bool = True,
    options: SolverOptions | None = None,
    device=None,
    checkpoint_interval_s: float = 1.0,
    restore_best: bool = False,
) -> list[dict[str, float]]:
    """Train ``model`` with EP on ``(x, y)``; returns the history (one dict per epoch).

    Args:
        model: the circuit model (its parameters are updated in place).
        x: ``(n, features)`` data in volts (a list for several inputs).
        y: ``(n,)`` integer class labels (or float targets ``(n, classes)`` for MSE).
        config: :class:`EPTrainConfig`.
        validation: ``(x_val, y_val)`` evaluated after every epoch.
        directory: the run folder (see the module docstring); an unfinished
            run there resumes, a finished one returns its history (the model
            gets its trained parameters) or continues if ``epochs`` grew.
        overwrite: replace the run in ``directory`` (see :func:`inmaterio.runs.open_run`).
        scheduler: ``f(optimizer) -> LR scheduler``, stepped after every epoch
            (``ReduceLROnPlateau`` with the epoch's training loss); not together with ``config.lr_decay`` < 1,
            which is itself an exponential scheduler.
        progress: show a progress bar (samples, rate, ETA).
        options: solver tolerances; device: where to solve.
        checkpoint_interval_s: write the checkpoint at most this often (always after the last
            epoch and on an interrupt; :class:`~inmaterio.checkpoints.CheckpointWriter`).
        restore_best: when training ends, load into the model the parameters of the epoch
            :func:`best_epoch` picks on ``validation`` (needs ``validation`` with class labels;
            kept in the checkpoint, see the module docstring). The history keeps every epoch.

    Returns:
        rows ``epoch``, ``loss`` (training loss during the epoch), ``accuracy``
        (for class labels), ``lr`` (the learning rate of the epoch), ``seconds``
        (the epoch's EP steps), and ``val_loss`` / ``val_accuracy`` with ``validation``.

    Raises:
        VoltageError: bad input data (names the sample and feature).
        ConfigError: bad labels, a config that is not an :class:`EPTrainConfig`,
            a run folder made with other settings (names the fields), one
            holding more epochs than ``config.epochs``, ``restore_best`` without
            labelled ``validation``, a ``scheduler`` beside ``config.lr_decay`` < 1.
        RunFolderError: an unusable ``directory`` (checked before any training).
        ModelFileError: a corrupt or foreign checkpoint.
        SimulationError: a solve that fails or a non-finite gradient.
    """
    if not isinstance(config, EPTrainConfig):
        raise ConfigError(f"config must be an EPTrainConfig, got {type(config).__name__}")
    data = model.input_list(x)
    model.source_voltages(data)  # checks every sample first, so an error names its index in x (not in a shuffled batch)
    n = len(data[0])
    if any(len(d) != n for d in data):
        raise ConfigError(f"the inputs disagree on the number of samples: {[len(d) for d in data]}")
    y = _targets(model, y, n, config, "y")
    if validation is not None:
        if not (isinstance(validation, tuple | list) and len(validation) == 2):
            raise ConfigError(f"validation must be a pair (x_val, y_val), got {type(validation).__name__}")
        x_val = model.input_list(validation[0])
        model.source_voltages(x_val)
        validation = (x_val, _targets(model, validation[1], len(x_val[0]), config, "validation y"))
    if restore_best and (validation is None or validation[1].dtype.is_floating_point):
        raise ConfigError("restore_best=True needs validation=(x_val, y_val) with integer class labels, "
                          f"got {'no validation data' if validation is None else 'float targets'}")  # fmt: skip
    optimizer = config.make_optimizer(model.parameters())
    if config.lr_decay != 1.0:
        if scheduler is not None:
            raise ConfigError(f"lr_decay = {config.lr_decay} and a scheduler would both set the learning rate; "
                              "give one of them (lr_decay 1 keeps the scheduler's)")  # fmt: skip
        scheduler = functools.partial(torch.optim.lr_scheduler.ExponentialLR, gamma=config.lr_decay)
    sched = scheduler(optimizer) if scheduler is not None else None
    generator = torch.Generator().manual_seed(config.seed)
    train = _Training(model, data, y, config, optimizer, sched, generator, validation, options, device, restore_best)
    if directory is None:
        history = train.epochs([], progress)
        train.load_best()
        return history
    identity = _identity(model, data, y, validation, config, sched, options, device, restore_best)
    done = None if overwrite else _epochs_done(Path(directory))
    if done is not None and done > config.epochs:
        raise ConfigError(f"'{directory}' already holds {done} epochs, more than epochs={config.epochs}; "
                          f"ask for at least {done} epochs or use another folder")  # fmt: skip
    with open_run(directory, FIT_KIND, identity=identity, config=config, overwrite=overwrite) as run:
        state = run.load_checkpoint()
        if state is None and run.finished:
            raise ModelFileError(
                f"'{run.path}' holds a finished run without its checkpoint; pass overwrite=True (--overwrite) to replace it"
            )
        history, train.best = [], None
        if state is not None:
            history, train.best = _restore(run, state, model, optimizer, sched, generator, restore_best)
        if len(history) > config.epochs:  # the checkpoint changed since _epochs_done looked
            raise ConfigError(f"'{run.path}' already holds {len(history)} epochs, more than epochs={config.epochs}")
        if run.finished and len(history) == config.epochs:
            train.load_best()
            return history
        run.reopen(config)
        history = train.epochs(history, progress, CheckpointWriter(run, checkpoint_interval_s))
        run.finish({k: v for k, v in history[-1].items() if k != "seconds"})
    train.load_best()
    return history


def _epochs_done(folder: Path) -> int | None:
    """Epochs in the checkpoint of an EP run folder, read before the folder is opened (None if unknown).

    So that asking for fewer epochs than a run holds is refused before the folder changes.
    """
    path = folder / "checkpoint.pt"
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return len(history_of(payload["state"])) if payload.get("kind") == FIT_KIND else None
    except Exception:  # noqa: BLE001 - a damaged checkpoint is reported when the run folder loads it
        return None


class _Training:
    """The epoch loop of :func:`fit` (one object so that the arguments travel together)."""

    def __init__(
        self, model, data, y, config, optimizer, scheduler, generator, validation, options, device, restore_best=False
    ) -> None:
        self.model, self.data, self.y, self.config = model, data, y, config
        self.optimizer, self.scheduler, self.generator = optimizer, scheduler, generator
        self.validation, self.options, self.device = validation, options, device
        self.restore_best = restore_best
        #: ``{"epoch", "parameters"}`` of the best validation epoch so far (``restore_best`` only).
        self.best: dict[str, Any] | None = None

    def load_best(self) -> None:
        """With ``restore_best``: put the best epoch's parameters (constrained when they were kept) into the model."""
        if not self.restore_best or self.best is None:
            return
        params = self.model.normalised_parameters()
        with torch.no_grad():
            for key, value in self.best["parameters"].items():
                params[key].copy_(value)

    def epochs(
        self, history: list[dict[str, float]], progress: bool, writer: CheckpointWriter | None = None
    ) -> list[dict[str, float]]:
        model, data, y, cfg = self.model, self.data, self.y, self.config
        n = len(data[0])
        loss_fn = cfg.loss_fn()
        labels = not y.dtype.is_floating_point
        start = len(history)
        writer = writer or CheckpointWriter(None, 0.0)
        if writer.run is not None and start:
            writer.run.write_history(history)
        with (
            writer.flushing_on_exit(),
            progress_bar(
                total=cfg.epochs * n, completed=start * n, description="EP training", unit="samples", enabled=progress
            ) as bar,
        ):
            for epoch in range(start, cfg.epochs):
                t0 = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]
                order = torch.randperm(n, generator=self.generator)
                total_loss, correct = 0.0, 0
                for s in range(0, n, cfg.batch_size):
                    idx = order[s : s + cfg.batch_size]
                    self.optimizer.zero_grad()
                    result = ep_gradients(model, [d[idx] for d in data], y[idx], loss_fn, beta=cfg.beta, variant=cfg.variant,
                                          generator=self.generator, options=self.options, device=self.device)  # fmt: skip
                    self.optimizer.step()
                    model.constrain()
                    total_loss += result.loss.sum().item()
                    if labels:
                        correct += (readout(result.outputs_v, cfg.readout).argmax(1).cpu() == y[idx]).sum().item()
                    bar.advance(len(idx))
                record = {"epoch": epoch + 1, "loss": total_loss / n}
                if labels:
                    record["accuracy"] = correct / n
                record.update(lr=lr, seconds=time.perf_counter() - t0)
                if self.validation is not None:
                    val = evaluate(model, self.validation[0], self.validation[1], cfg, options=self.options)
                    record.update({f"val_{k}": v for k, v in val.items()})
                history.append(record)
                if self.restore_best and (
                    self.best is None or _selection_key(record) > _selection_key(history[self.best["epoch"] - 1])
                ):
                    params = {k: p.detach().clone() for k, p in model.normalised_parameters().items()}
                    self.best = {"epoch": epoch + 1, "parameters": params}
                if self.scheduler is not None:
                    plateau = isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
                    self.scheduler.step(record["loss"]) if plateau else self.scheduler.step()
                bar.set_description(f"EP epoch {epoch + 1}: loss {record['loss']:.4g}")
                if writer.run is not None:
                    state = _checkpoint(model, self.optimizer, self.scheduler, self.generator, self.best)
                    writer.offer(state, history, final=epoch + 1 == cfg.epochs)
        return history
