"""Fit single-DNPU binary classifiers for many problems at once (gates, capacity labelings).

Every problem is the same inputs ``x (batch, n_inputs)`` with its own binary
targets. Gradient descent trains all problems and all restarts ("attempts") as
the nodes of ONE :class:`~inmaterio.nn.DNPU` layer: the losses of the nodes
are independent and summed, so each node gets exactly the gradient it would
get alone, and one processor call per step evaluates them all; each node keeps
the controls of its own best epoch (lowest own loss), so a node ends exactly
where it would end if trained alone from the same start (the
:class:`BestPerNode` callback of :func:`~inmaterio.training.gd.train_gd`). The
genetic algorithm evolves each problem's population in one batched call per
generation. On a device (a processor with a ``device``) every measurement's
noise is keyed by what it serves (the seed, the attempt, the problem and the
generation; the final evaluation), so a repeated fit measures the same numbers. A problem's best attempt is the one
with the highest threshold accuracy, then the widest class separation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from inmaterio.errors import ConfigError
from inmaterio.nn import DNPU
from inmaterio.processors import Processor
from inmaterio.training.ga import GAConfig, GeneticAlgorithm
from inmaterio.training.gd import Callback, EpochEnd, GDConfig, train_gd
from inmaterio.training.losses import get_loss
from inmaterio.training.metrics import separation_na, threshold_accuracy

__all__ = ["NodeFits", "BestPerNode", "best_of_groups", "fit_binary_nodes", "evaluate_nodes"]


@dataclass
class NodeFits:
    """Best solution per problem.

    Attributes
    ----------
    controls : ``(problems, n_controls)`` V, the best attempt of each problem.
    loss : ``(problems,)`` loss of that attempt on the (noise-free) processor.
    accuracy : ``(problems,)`` threshold accuracy in [0, 1].
    separation_na : ``(problems,)`` margin between the classes (nA, negative: overlap),
        :func:`~inmaterio.training.metrics.separation_na`.
    output_na : ``(problems, batch)`` output current of that attempt.
    history : per epoch (GD) or generation (GA) and problem-averaged: ``step``, ``loss``.
    seconds : wall time of the fit.
    layer : a one-node-per-problem DNPU layer holding the best controls.
    """

    controls: torch.Tensor
    loss: torch.Tensor
    accuracy: torch.Tensor
    separation_na: torch.Tensor
    output_na: torch.Tensor
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    layer: DNPU | None = None

    def select(self, rows: torch.Tensor, input_electrodes: Sequence[int | str], data_range: tuple[float, float]) -> NodeFits:
        """The fits of ``rows`` only, with a new layer of one node per row on the same processor."""
        layer = DNPU(self.layer.processor, len(rows), input_electrodes, data_range)
        with torch.no_grad():
            layer.controls.copy_(self.controls[rows])
        return dataclasses.replace(
            self, controls=self.controls[rows], loss=self.loss[rows], accuracy=self.accuracy[rows],
            separation_na=self.separation_na[rows], output_na=self.output_na[rows], layer=layer,
        )  # fmt: skip


def best_of_groups(accuracy: torch.Tensor, separation_na: torch.Tensor, n_problems: int) -> torch.Tensor:
    """``(n_problems,)`` row of the best of each problem's candidates; row ``g * n_problems + p`` is candidate g of problem p.

    The best is the most accurate, then the one with the widest class separation (nA): what has to
    survive the device's noise and the surrogate's error. ``accuracy`` and ``separation_na`` are flat
    ``(groups * n_problems,)``.
    """
    acc = accuracy.reshape(-1, n_problems)
    margin = separation_na.reshape(-1, n_problems).nan_to_num(nan=-torch.inf)
    most_accurate = acc == acc.max(dim=0, keepdim=True).values
    best = torch.where(most_accurate, margin, -torch.inf).argmax(dim=0)
    return best * n_problems + torch.arange(n_problems)


def _loss_function(loss: str | Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """A loss by its registry name, or ``loss`` itself when it is already a function ``loss(output, target)``."""
    return loss if callable(loss) else get_loss(loss)


def evaluate_nodes(
    layer: DNPU, x: torch.Tensor, targets: torch.Tensor, loss: str | Callable[..., torch.Tensor]
) -> tuple[torch.Tensor, ...]:
    """Outputs ``(nodes, batch)`` nA, loss ``(nodes,)`` and threshold accuracy ``(nodes,)`` of every node.

    ``loss`` is a name in :data:`~inmaterio.training.losses.LOSSES` or a function ``loss(output, target)``.
    """
    loss_fn = _loss_function(loss)
    with torch.no_grad():
        out = layer(x).T
        return out, loss_fn(out, targets), threshold_accuracy(out, targets)


def fit_binary_nodes(
    processor: Processor,
    x: torch.Tensor,
    targets: torch.Tensor,
    *,
    input_electrodes: Sequence[int | str],
    data_range: tuple[float, float],
    loss: str | Callable[..., torch.Tensor],
    algorithm: str = "gd",
    gd: GDConfig | None = None,
    ga: GAConfig | None = None,
    attempts: int = 1,
    seed: int = 0,
    progress: bool = False,
    directory: str | Path | None = None,
    initial_controls: torch.Tensor | None = None,
    trust_radius_v: float | None = None,
) -> NodeFits:
    """Train one DNPU node per problem (``targets (problems, batch)``) and keep the best attempt.

    ``loss`` is a name in :data:`~inmaterio.training.losses.LOSSES` or a function
    ``loss(output (..., batch), target) -> (...)`` (a registered loss with its settings bound).
    ``algorithm`` is ``"gd"`` (all problems x attempts in one layer) or
    ``"ga"`` (one evolution per problem and attempt, population batched).
    With a ``directory`` the training is resumable: the GD run is the run folder
    ``<directory>/gd``, each evolution ``<directory>/ga_<attempt>_<problem>``.
    ``initial_controls`` ``(problems, controls)`` V starts gradient descent from given solutions
    (every attempt from the same one) instead of random ones; with ``trust_radius_v`` (V) the
    controls then stay within that distance of where they started (a trust region, e.g. the
    box where a refined surrogate was fitted).
    Accuracy and loss are measured without a surrogate's output noise (a device's own noise is keyed, see above).
    """
    targets = torch.as_tensor(targets, dtype=torch.float32)
    if targets.ndim == 1:
        targets = targets[None, :]
    n_problems = targets.shape[0]
    if initial_controls is not None and algorithm != "gd":
        raise ConfigError(f"initial_controls start gradient descent only; algorithm is '{algorithm}'")
    if trust_radius_v is not None and (initial_controls is None or not (math.isfinite(trust_radius_v) and trust_radius_v > 0)):
        raise ConfigError(f"trust_radius_v needs initial_controls and a finite radius > 0 V, got {trust_radius_v}")
    loss_fn = _loss_function(loss)
    start = time.perf_counter()
    if algorithm == "gd":
        layer, history = _fit_gd(
            processor, x, targets, input_electrodes, data_range, loss_fn, gd or GDConfig(), attempts, seed, progress, directory,
            initial_controls, trust_radius_v,
        )  # fmt: skip
    elif algorithm == "ga":
        layer, history = _fit_ga(
            processor, x, targets, input_electrodes, data_range, loss_fn, ga or GAConfig(), attempts, seed, progress, directory
        )
    else:
        raise ConfigError(f"unknown algorithm '{algorithm}'; choose 'gd' or 'ga'")
    seconds = time.perf_counter() - start

    streams = _device_streams(processor, "fit", seed, "evaluate")
    with processor.noise_off(), streams() if streams is not None else contextlib.nullcontext():
        out, losses, acc = evaluate_nodes(layer, x, targets.repeat(attempts, 1), loss)
    # node index = attempt * n_problems + problem: the best attempt of each problem is kept
    every = NodeFits(
        controls=layer.controls.detach(), loss=losses, accuracy=acc,
        separation_na=separation_na(out, targets.repeat(attempts, 1)), output_na=out, history=history, seconds=seconds,
        layer=layer,
    )  # fmt: skip
    return every.select(best_of_groups(acc, every.separation_na, n_problems), input_electrodes, data_range)


class BestPerNode(Callback):
    """Model selection per node: keeps each node's controls of the epoch where its own loss was lowest.

    :func:`~inmaterio.training.gd.train_gd` keeps the epoch of the lowest *mean*
    loss, which would make one node's result depend on the other problems
    trained beside it. After every epoch's evaluation this callback compares
    each node's loss (``per_node_loss(outputs, targets) -> (nodes,)``, on the
    trainer's evaluation outputs) with the node's best so far and keeps the
    controls ``(nodes, n_controls)`` of every node that improved (NaN never
    improves). Its state is checkpointed with the run.
    """

    def __init__(self, layer: DNPU, per_node_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        self.layer = layer
        self.per_node_loss = per_node_loss
        self.best_loss = torch.full((layer.controls.shape[0],), math.inf, dtype=torch.float64)
        self.best_controls = layer.controls.detach().clone()

    def on_epoch_end(self, end: EpochEnd) -> None:
        with torch.no_grad():
            per_node = self.per_node_loss(end.outputs, end.targets).detach().to(self.best_loss.dtype)
            better = per_node < self.best_loss
            self.best_loss[better] = per_node[better]
            self.best_controls[better] = self.layer.controls.detach()[better]

    def state_dict(self) -> dict[str, Any]:
        return {"best_loss": self.best_loss.clone(), "best_controls": self.best_controls.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best_loss = state["best_loss"].clone()
        self.best_controls = state["best_controls"].clone()


def _fit_gd(
    processor, x, targets, input_electrodes, data_range, loss_fn, config, attempts, seed, progress, directory, initial=None,
    trust_radius_v=None,
):  # fmt: skip
    n_nodes = targets.shape[0] * attempts
    layer = DNPU(processor, n_nodes, input_electrodes, data_range, seed=seed)
    if initial is not None:
        initial = torch.as_tensor(initial, dtype=layer.controls.dtype)
        if initial.shape != (targets.shape[0], layer.n_controls):
            raise ConfigError(
                f"initial_controls must be (problems, controls) = {(targets.shape[0], layer.n_controls)}, got {tuple(initial.shape)}"
            )
        with torch.no_grad():
            layer.controls.copy_(initial.repeat(attempts, 1))
            if trust_radius_v is not None:  # the layer's own ranges shrink to the trust region
                layer.keep_controls_within(trust_radius_v)
    y = targets.repeat(attempts, 1).T  # (batch, nodes): the trainer splits data along dim 0
    best = BestPerNode(layer, lambda out, yb: loss_fn(out.T, yb.T))
    result = train_gd(
        layer, lambda out, yb: loss_fn(out.T, yb.T), x, y, config.model_copy(update={"seed": seed}),
        progress=progress, callbacks=[best], directory=None if directory is None else Path(directory) / "gd",
    )  # fmt: skip
    with torch.no_grad():
        layer.controls.copy_(best.best_controls)
    history = [{"step": h["epoch"], "loss": h["train_loss"]} for h in result.history]
    return layer, history


def _device_streams(processor: Processor, *keys: Any) -> Callable[..., Any] | None:
    """``device.random_streams`` with ``keys`` in front, for a processor that measures on a device; else None."""
    device = getattr(processor, "device", None)
    if device is None or not callable(getattr(device, "random_streams", None)):
        return None
    return lambda *more: device.random_streams(*keys, *more)


def _fit_ga(processor, x, targets, input_electrodes, data_range, loss_fn, config, attempts, seed, progress, directory):
    n_problems = targets.shape[0]
    layer = DNPU(processor, n_problems * attempts, input_electrodes, data_range, seed=seed)
    probe = DNPU(processor, 1, input_electrodes, data_range)
    bounds = probe.control_bounds()
    curves = []
    for a in range(attempts):
        for p in range(n_problems):

            def fitness(genomes: torch.Tensor, target=targets[p]) -> torch.Tensor:
                with torch.no_grad():
                    out = probe(x, genomes[:, None, :])[..., 0]  # (pop, batch)
                    return -loss_fn(out, target)

            ga = GeneticAlgorithm(config.model_copy(update={"seed": seed + a * n_problems + p}), bounds)  # one seed per node
            result = ga.evolve(
                fitness, progress=progress, random_streams=_device_streams(processor, "fit", seed, a, p),
                directory=None if directory is None else Path(directory) / f"ga_{a}_{p}",
            )  # fmt: skip
            with torch.no_grad():
                layer.controls[a * n_problems + p] = result.best_genome.to(layer.controls.dtype)
            curves.append([-h["best_fitness"] for h in result.history])
    steps = max(len(c) for c in curves)
    history = [{"step": g + 1, "loss": sum(c[min(g, len(c) - 1)] for c in curves) / len(curves)} for g in range(steps)]
    return layer, history
