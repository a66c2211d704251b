"""Training a deep resistive network (:mod:`inmaterio.circuits.drn`): SGD on EP or exact gradients, resumable per epoch.

:func:`fit_drn` runs plain SGD (optional momentum) with a learning rate per layer for the conductances and
for the bias currents, multiplied by ``lr_decay`` after every epoch, on gradients from
:func:`~inmaterio.circuits.drn.drn_ep_gradients` (``algorithm: ep``) or
:func:`~inmaterio.circuits.drn.drn_implicit_gradients` (``algorithm: implicit``, the exact-gradient twin);
after every step the conductances are clipped at 0.

The order of the training samples in epoch ``e`` and the signs of the random-sign estimator are drawn from
generators seeded by ``(seed, e)``, so a run interrupted inside an epoch restarts that epoch from the state
saved after the previous one and ends with the same parameters as an uninterrupted run. Given a
``directory``, the training is a run folder (kind ``inmaterio.circuits.drn``) with ``checkpoint.pt`` after
every epoch and ``history.json``/``history.csv``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator

from inmaterio.circuits.drn import DeepResistiveNetwork, SolveSettings, drn_ep_gradients, drn_implicit_gradients
from inmaterio.config import StrictModel
from inmaterio.errors import ConfigError, SimulationError

__all__ = ["DRN_FIT_KIND", "DRNTrainConfig", "drn_error", "fit_drn"]

DRN_FIT_KIND = "inmaterio.circuits.drn"


class DRNTrainConfig(StrictModel):
    """How a DRN is trained.

    algorithm : ``ep`` (Equilibrium Propagation) or ``implicit`` (exact gradients by implicit differentiation).
    variant : EP's estimator: symmetric (+-beta), positive / negative (one-sided), random_sign.
    beta : nudging strength (normalised siemens), > 0.
    epochs, batch_size : passes over the training set; samples per step.
    lr_weights, lr_biases : learning rate of each layer's conductances and bias currents (one number for all
        layers, or one per layer ``1 .. L``).
    lr_decay : factor applied to every learning rate after each epoch (1: constant).
    momentum : SGD momentum (0: plain SGD).
    sweeps : odd/even sweeps per steady state while training (null: to ``tol_v``).
    inference_sweeps : sweeps per steady state when evaluating (null: to ``tol_v``).
    tol_v : convergence tolerance (V) of the solves with null sweeps.
    seed : the shuffling and the random signs.
    """

    algorithm: Literal["ep", "implicit"] = "ep"
    variant: Literal["symmetric", "positive", "negative", "random_sign"] = "symmetric"
    beta: float = Field(1.0, gt=0, le=1e6)
    epochs: int = Field(10, ge=1, le=100_000)
    batch_size: int = Field(4, ge=1, le=1_000_000)
    lr_weights: float | list[float] = 0.006
    lr_biases: float | list[float] = 0.006
    lr_decay: float = Field(0.99, gt=0, le=1)
    momentum: float = Field(0.0, ge=0, lt=1)
    sweeps: int | None = Field(4, ge=1, le=1_000_000)
    inference_sweeps: int | None = Field(4, ge=1, le=1_000_000)
    tol_v: float = Field(1e-9, gt=0, le=1)
    seed: int = Field(0, ge=0)

    @field_validator("lr_weights", "lr_biases")
    @classmethod
    def _positive_rates(cls, value: float | list[float]) -> float | list[float]:
        rates = value if isinstance(value, list) else [value]
        if not rates or any(not (0 < r <= 1e6 and math.isfinite(r)) for r in rates):
            raise ValueError(f"learning rates must be finite numbers in (0, 1e6], got {value}")
        return value

    def rates(self, n_layers: int) -> tuple[list[float], list[float]]:
        """``(weights, biases)`` learning rates of layers ``1 .. n_layers``.

        Raises:
            ConfigError: a per-layer list of another length.
        """
        out = []
        for name in ("lr_weights", "lr_biases"):
            value = getattr(self, name)
            if isinstance(value, list) and len(value) != n_layers:
                raise ConfigError(
                    f"{name} lists {len(value)} rates for a network of {n_layers} layers: give one per layer or one number"
                )
            out.append(list(value) if isinstance(value, list) else [value] * n_layers)
        return out[0], out[1]

    def settings(self, *, inference: bool = False) -> SolveSettings:
        return SolveSettings(sweeps=self.inference_sweeps if inference else self.sweeps, tol_v=self.tol_v)


def drn_error(model: DeepResistiveNetwork, x: torch.Tensor, labels: torch.Tensor, settings: SolveSettings,
              *, batch_size: int = 1000) -> float:  # fmt: skip
    """Fraction of samples whose largest output voltage is not their class."""
    wrong = 0
    for i in range(0, len(x), batch_size):
        out = model(x[i : i + batch_size], settings)
        wrong += int((out.argmax(1) != labels[i : i + batch_size].to(out.device)).sum())
    return wrong / len(x)


def _optimizer(model: DeepResistiveNetwork, config: DRNTrainConfig) -> torch.optim.SGD:
    lr_w, lr_b = config.rates(model.n_layers)
    groups = [{"params": [w], "lr": r} for w, r in zip(model.weights, lr_w)]
    groups += [{"params": [b], "lr": r} for b, r in zip(model.biases, lr_b)]
    for g in groups:
        g["initial_lr"] = g["lr"]
    return torch.optim.SGD(groups, lr=lr_w[0], momentum=config.momentum)


def _epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 7 + stream) % (2**63))


def fit_drn(
    model: DeepResistiveNetwork,
    x: torch.Tensor,
    labels: torch.Tensor,
    config: DRNTrainConfig,
    *,
    evaluation: Mapping[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
    directory: str | Path | None = None,
    identity: Mapping[str, Any] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Train ``model`` in place; one history row per epoch.

    Args:
        model: the network (its present parameters are the start; restored from the checkpoint on resume).
        x: ``(n, n_features)`` training features; labels ``(n,)`` class indices.
        config: the :class:`DRNTrainConfig`.
        evaluation: name -> ``(x, labels)`` sets whose error is measured after every epoch (``<name>_error``).
        directory: a run folder to checkpoint into and resume from (None: no saving).
        identity: more of what defines the result (e.g. the data's fingerprint), stored with the run.
        progress: a progress bar with rate and ETA per epoch.
        overwrite: replace a run of another identity in ``directory``.

    Returns:
        rows ``{epoch, loss, train_error, <name>_error..., lr_weights_1, seconds}``: ``loss`` and ``train_error``
        from the free phases seen while training (running means), ``seconds`` the training time of the epoch.

    Raises:
        ConfigError: wrong shapes or learning-rate lists, a run folder of another identity.
        SimulationError: a non-finite loss (names the epoch and step; lower the learning rates).
    """
    from inmaterio.runs import open_run

    x = torch.as_tensor(x)
    labels = torch.as_tensor(labels)
    if x.dim() != 2 or x.shape[1] != model.sizes[0] or len(x) != len(labels) or len(x) == 0:
        raise ConfigError(f"training features must be (n >= 1, {model.sizes[0]}) with n labels, got {tuple(x.shape)} "
                          f"and {tuple(labels.shape)}")  # fmt: skip
    x = x.to(model.dtype)
    evaluation = {
        name: (torch.as_tensor(ex).to(model.dtype), torch.as_tensor(ey)) for name, (ex, ey) in (evaluation or {}).items()
    }
    optimizer = _optimizer(model, config)
    if directory is None:
        return _epochs(model, x, labels, config, optimizer, [], evaluation, None, progress)
    ident = {"config": config.model_dump(mode="json"), "sizes": list(model.sizes), "input_gain": model.input_gain,
             "dtype": str(model.dtype), "n_train": len(x), **dict(identity or {})}  # fmt: skip
    with open_run(directory, DRN_FIT_KIND, identity=ident, config=config, overwrite=overwrite, notify=lambda m: None) as run:
        saved = run.load_checkpoint()
        history: list[dict[str, Any]] = []
        if saved is not None:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            history = list(saved["history"])
        history = _epochs(model, x, labels, config, optimizer, history, evaluation, run, progress)
        if not run.finished:
            run.finish({"epochs": len(history), **{k: v for k, v in history[-1].items() if k != "epoch"}})
    return history


def _epochs(
    model, x, labels, config: DRNTrainConfig, optimizer, history, evaluation, run, progress: bool
) -> list[dict[str, Any]]:
    """The epochs after those in ``history`` (see :func:`fit_drn`); checkpoints into ``run`` after each."""
    from inmaterio.progress import progress_bar

    train_settings, eval_settings = config.settings(), config.settings(inference=True)
    step = drn_ep_gradients if config.algorithm == "ep" else drn_implicit_gradients
    for epoch in range(len(history) + 1, config.epochs + 1):
        for g in optimizer.param_groups:
            g["lr"] = g["initial_lr"] * config.lr_decay ** (epoch - 1)
        order = torch.randperm(len(x), generator=_epoch_generator(config.seed, epoch, 0))
        signs = _epoch_generator(config.seed, epoch, 1)
        kwargs = {"beta": config.beta, "variant": config.variant, "generator": signs} if config.algorithm == "ep" else {}
        loss_sum, wrong, seen = 0.0, 0, 0
        start = time.perf_counter()
        with progress_bar(len(x), f"epoch {epoch}/{config.epochs}", unit="samples", enabled=progress) as bar:
            for i in range(0, len(x), config.batch_size):
                idx = order[i : i + config.batch_size]
                optimizer.zero_grad(set_to_none=True)
                result = step(model, x[idx], labels[idx], settings=train_settings, **kwargs)
                if not math.isfinite(result.loss):
                    raise SimulationError(f"the loss is {result.loss} at epoch {epoch}, samples {i}..{i + len(idx) - 1}: "
                                          "lower the learning rates")  # fmt: skip
                optimizer.step()
                model.constrain()
                loss_sum += result.loss * len(idx)
                wrong += len(idx) - result.correct
                seen += len(idx)
                bar.advance(len(idx))
                if seen % (250 * config.batch_size) == 0:
                    bar.set_description(f"epoch {epoch}/{config.epochs} loss {loss_sum / seen:.4f} err {100 * wrong / seen:.2f}%")
        seconds = time.perf_counter() - start
        row = {"epoch": epoch, "loss": loss_sum / seen, "train_error": wrong / seen}
        for name, (ex, ey) in evaluation.items():
            row[f"{name}_error"] = drn_error(model, ex, ey, eval_settings)
        row["lr_weights_1"] = optimizer.param_groups[0]["lr"]
        row["seconds"] = seconds
        history.append(row)
        if run is not None:
            run.save_checkpoint({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "history": history})
            run.write_history(history)
    return history
