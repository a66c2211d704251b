"""`fit`, `evaluate`, `predict` for circuit models trained with Equilibrium Propagation.

Mini-batches of the whole circuit are solved at once (free and nudged phases
batched); the gradient estimate of each batch drives an optimiser of
:mod:`inmaterio.circuits.optim`. With a ``directory``, the state after every
epoch (parameters, optimiser, random generator, history) is saved
atomically to ``checkpoint.pt`` and a rerun resumes from it, bit for bit
(with the same settings; ``epochs`` may grow to train longer);
``history.json`` / ``history.csv`` record loss and accuracy per epoch.
"""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ConfigError, ModelFileError
from ..fileio import atomic_torch_save, atomic_write_json, atomic_write_text, read_torch_state
from ..progress import progress_bar
from .ep import LossFn, ep_gradients, output_loss, readout
from .graph import Model
from .optim import make_optimizer
from .solve.native import SolverOptions

__all__ = ["EPTrainConfig", "evaluate", "fit"]

CHECKPOINT_FORMAT = "inmaterio-ep-checkpoint-v1"


class EPTrainConfig(BaseModel):
    """Settings of EP training (unknown keys are errors).

    Attributes:
        epochs: passes over the training data.
        batch_size: circuits solved together per step.
        beta: nudging strength (see :func:`~inmaterio.circuits.ep.ep_gradients`).
        variant: "symmetric", "one-sided" or "random-sign".
        optimizer: "adam", "momentum" or "sgd"; ``lr`` relative to each parameter's bound width.
        loss: "mse" or "cross_entropy" on the class scores of ``readout``.
        target_v: MSE target score (V) of the true class (``-target_v`` for the others).
        scale_per_v: logits per volt for cross-entropy.
        seed: seeds the shuffling (and the sign of random-sign EP).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(32, ge=1)
    beta: float = Field(1e-7, gt=0)
    variant: Literal["symmetric", "one-sided", "random-sign"] = "symmetric"
    optimizer: Literal["adam", "momentum", "sgd"] = "adam"
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    betas: tuple[float, float] = (0.9, 0.999)
    loss: Literal["mse", "cross_entropy"] = "mse"
    readout: Literal["direct", "differential"] = "direct"
    target_v: float = Field(0.1, gt=0)
    scale_per_v: float = Field(10.0, gt=0)
    seed: int = 0

    def loss_fn(self) -> LossFn:
        return output_loss(self.loss, readout_kind=self.readout, scale_per_v=self.scale_per_v, target_v=self.target_v)

    def optimizer_options(self) -> dict[str, Any]:
        if self.optimizer == "adam":
            return {"betas": self.betas}
        if self.optimizer == "momentum":
            return {"momentum": self.momentum}
        return {}


def evaluate(model: Model, x, y, config: EPTrainConfig | None = None, *, batch_size: int = 512, options: SolverOptions | None = None) -> dict[str, float]:
    """Mean loss and accuracy (argmax of the class scores vs integer labels ``y``) of the free circuits."""
    cfg = config or EPTrainConfig()
    data = model.input_list(x)
    y = torch.as_tensor(y)
    model.source_voltages(data)  # an error names the sample's index in x, not in a batch of predict
    out = model.predict(data, batch_size=batch_size, options=options)
    loss = cfg.loss_fn()(out, y).mean().item()
    result = {"loss": loss}
    if not y.dtype.is_floating_point:
        result["accuracy"] = (readout(out, cfg.readout).argmax(1) == y).double().mean().item()
    return result


def _write_history(directory: Path, history: list[dict[str, float]]) -> None:
    atomic_write_json(directory / "history.json", history)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(history[0]))
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(directory / "history.csv", buf.getvalue())


def fit(
    model: Model,
    x,
    y,
    config: EPTrainConfig,
    *,
    validation: tuple[Any, Any] | None = None,
    directory: str | Path | None = None,
    progress: bool = True,
    options: SolverOptions | None = None,
    device=None,
) -> list[dict[str, float]]:
    """Train ``model`` with EP on ``(x, y)``; returns the history (one dict per epoch).

    Args:
        model: the circuit model (its parameters are updated in place).
        x: ``(n, features)`` data in volts (a list for several inputs).
        y: ``(n,)`` integer class labels (or float targets for MSE).
        config: :class:`EPTrainConfig`.
        validation: ``(x_val, y_val)`` evaluated after every epoch.
        directory: where to keep ``checkpoint.pt`` and ``history.json/.csv``;
            an existing checkpoint is resumed.
        progress: show a progress bar (samples, rate, ETA).
    """
    data = model.input_list(x)
    y = torch.as_tensor(y)
    n = len(data[0])
    if any(len(d) != n for d in data) or len(y) != n:
        raise ConfigError(f"x and y disagree on the number of samples: {[len(d) for d in data]} vs {len(y)}")
    model.source_voltages(data)  # checks every sample first, so an error names its index in x (not in a shuffled batch)
    if validation is not None:
        model.source_voltages(model.input_list(validation[0]))
    loss_fn = config.loss_fn()
    optimizer = make_optimizer(config.optimizer, model, config.lr, **config.optimizer_options())
    generator = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    start_epoch = 0
    ckpt = Path(directory) / "checkpoint.pt" if directory is not None else None
    if ckpt is not None and ckpt.exists():
        state = read_torch_state(ckpt, CHECKPOINT_FORMAT, "EP checkpoint", ModelFileError)
        saved = {k: v for k, v in state["config"].items() if k != "epochs"}
        if saved != {k: v for k, v in config.model_dump(mode="json").items() if k != "epochs"}:
            raise ConfigError(f"checkpoint '{ckpt}' was made with another training config; use a new directory")
        if len(state["history"]) > config.epochs:
            raise ConfigError(f"checkpoint '{ckpt}' already holds {len(state['history'])} epochs, more than epochs={config.epochs}")
        if sorted(state["parameters"]) != sorted(model.parameters):
            raise ModelFileError(f"checkpoint '{ckpt}' holds parameters {sorted(state['parameters'])}, the model has {sorted(model.parameters)}")
        model.set_parameters(state["parameters"])
        optimizer.load_state_dict(state["optimizer"])
        generator.set_state(state["generator"])
        history = list(state["history"])
        start_epoch = len(history)
    if directory is not None:
        Path(directory).mkdir(parents=True, exist_ok=True)
    steps_per_epoch = -(-n // config.batch_size)
    with progress_bar(total=config.epochs * n, completed=start_epoch * n, description="EP training", unit="samples", enabled=progress) as bar:
        for epoch in range(start_epoch, config.epochs):
            t0 = time.perf_counter()
            order = torch.randperm(n, generator=generator)
            total_loss, correct = 0.0, 0
            for s in range(steps_per_epoch):
                idx = order[s * config.batch_size : (s + 1) * config.batch_size]
                result = ep_gradients(
                    model, [d[idx] for d in data], y[idx], loss_fn, beta=config.beta, variant=config.variant,
                    generator=generator, options=options, device=device,
                )
                optimizer.step(result.gradients)
                total_loss += result.loss.sum().item()
                if not y.dtype.is_floating_point:
                    correct += (readout(result.outputs_v, config.readout).argmax(1).cpu() == y[idx]).sum().item()
                bar.advance(len(idx))
            record = {"epoch": epoch + 1, "loss": total_loss / n, "seconds": time.perf_counter() - t0}
            if not y.dtype.is_floating_point:
                record["accuracy"] = correct / n
            if validation is not None:
                val = evaluate(model, validation[0], validation[1], config, options=options)
                record.update({f"val_{k}": v for k, v in val.items()})
            history.append(record)
            bar.set_description(f"EP epoch {epoch + 1}: loss {record['loss']:.4g}")
            if directory is not None:
                atomic_torch_save(ckpt, {  # type: ignore[arg-type]
                    "format": CHECKPOINT_FORMAT,
                    "config": config.model_dump(mode="json"),
                    "parameters": dict(model.parameters),
                    "optimizer": optimizer.state_dict(),
                    "generator": generator.get_state(),
                    "history": history,
                })
                _write_history(Path(directory), history)
    return history
