"""Fit single-DNPU binary classifiers for many problems at once (gates, capacity labelings).

Every problem is the same inputs ``x (batch, n_inputs)`` with its own binary
targets. Gradient descent trains all problems and all restarts ("attempts") as
the nodes of ONE :class:`~inmaterio.nn.DNPU` layer: the losses of the nodes
are independent and summed, so each node gets exactly the gradient it would
get alone, and one processor call per step evaluates them all; each node keeps
the controls of its own best epoch (lowest own loss), so a node ends exactly
where it would end if trained alone from the same start. The genetic
algorithm evolves each problem's population in one batched call per
generation. A problem's best attempt is the one with the highest threshold
accuracy, then the lowest loss.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from inmaterio.errors import ConfigError
from inmaterio.nn import DNPU
from inmaterio.processors import Processor
from inmaterio.training.ga import GAConfig, GeneticAlgorithm
from inmaterio.training.gd import GDConfig, train_gd
from inmaterio.training.losses import get_loss
from inmaterio.training.metrics import separation_na, threshold_accuracy

__all__ = ["NodeFits", "fit_binary_nodes", "evaluate_nodes"]


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


def evaluate_nodes(layer: DNPU, x: torch.Tensor, targets: torch.Tensor, loss_name: str) -> tuple[torch.Tensor, ...]:
    """Outputs ``(nodes, batch)`` nA, loss ``(nodes,)`` and threshold accuracy ``(nodes,)`` of every node."""
    loss_fn = get_loss(loss_name)
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
    loss: str,
    algorithm: str = "gd",
    gd: GDConfig | None = None,
    ga: GAConfig | None = None,
    attempts: int = 1,
    seed: int = 0,
    progress: bool = False,
) -> NodeFits:
    """Train one DNPU node per problem (``targets (problems, batch)``) and keep the best attempt.

    ``algorithm`` is ``"gd"`` (all problems x attempts in one layer) or
    ``"ga"`` (one evolution per problem and attempt, population batched).
    Accuracy and loss are measured without output noise.
    """
    targets = torch.as_tensor(targets, dtype=torch.float32)
    if targets.ndim == 1:
        targets = targets[None, :]
    n_problems = targets.shape[0]
    loss_fn = get_loss(loss)
    start = time.perf_counter()
    if algorithm == "gd":
        layer, history = _fit_gd(processor, x, targets, input_electrodes, data_range, loss_fn, gd or GDConfig(), attempts, seed, progress)
    elif algorithm == "ga":
        layer, history = _fit_ga(processor, x, targets, input_electrodes, data_range, loss_fn, ga or GAConfig(), attempts, seed, progress)
    else:
        raise ConfigError(f"unknown algorithm '{algorithm}'; choose 'gd' or 'ga'")
    seconds = time.perf_counter() - start

    with processor.noise_off():
        out, losses, acc = evaluate_nodes(layer, x, targets.repeat(attempts, 1), loss)
    # node index = attempt * n_problems + problem; pick per problem: max accuracy, then the widest
    # class separation (nA): what has to survive the device's noise and the surrogate's error
    margin = separation_na(out, targets.repeat(attempts, 1)).reshape(attempts, n_problems)
    acc = acc.reshape(attempts, n_problems)
    losses = losses.reshape(attempts, n_problems)
    most_accurate = acc == acc.max(dim=0, keepdim=True).values
    best = torch.where(most_accurate, margin.nan_to_num(nan=-torch.inf), -torch.inf).argmax(dim=0)
    pick = best * n_problems + torch.arange(n_problems)
    best_layer = DNPU(processor, n_problems, input_electrodes, data_range)
    with torch.no_grad():
        best_layer.controls.copy_(layer.controls[pick])
    return NodeFits(
        controls=layer.controls.detach()[pick].clone(),
        loss=losses[best, torch.arange(n_problems)],
        accuracy=acc[best, torch.arange(n_problems)],
        separation_na=margin[best, torch.arange(n_problems)],
        output_na=out[pick],
        history=history,
        seconds=seconds,
        layer=best_layer,
    )


def _fit_gd(processor, x, targets, input_electrodes, data_range, loss_fn, config, attempts, seed, progress):
    n_nodes = targets.shape[0] * attempts
    layer = DNPU(processor, n_nodes, input_electrodes, data_range, seed=seed)
    y = targets.repeat(attempts, 1).T  # (batch, nodes): the trainer splits data along dim 0

    # Model selection per node: the trainer keeps the epoch of the lowest *mean* loss, which
    # would make one node's result depend on the other problems. Every epoch, after the
    # trainer's evaluation, each node's controls are kept if its own loss improved.
    best_loss = torch.full((n_nodes,), float("inf"))
    best_controls = layer.controls.detach().clone()

    def track(out: torch.Tensor, yb: torch.Tensor) -> float:
        with torch.no_grad():
            per_node = loss_fn(out.T, yb.T).detach().to(best_loss.dtype)
            better = per_node < best_loss  # NaN never improves
            best_loss[better] = per_node[better]
            best_controls[better] = layer.controls.detach()[better]
        return float(per_node.mean())

    result = train_gd(
        layer, lambda out, yb: loss_fn(out.T, yb.T), x, y, config.model_copy(update={"seed": seed}),
        progress=progress, metrics={"node_loss": track},
    )  # fmt: skip
    with torch.no_grad():
        layer.controls.copy_(best_controls)
    history = [{"step": h["epoch"], "loss": h["train_loss"]} for h in result.history]
    return layer, history


def _fit_ga(processor, x, targets, input_electrodes, data_range, loss_fn, config, attempts, seed, progress):
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
            result = ga.evolve(fitness, progress=progress)
            with torch.no_grad():
                layer.controls[a * n_problems + p] = result.best_genome.to(layer.controls.dtype)
            curves.append([-h["best_fitness"] for h in result.history])
    steps = max(len(c) for c in curves)
    history = [
        {"step": g + 1, "loss": sum(c[min(g, len(c) - 1)] for c in curves) / len(curves)} for g in range(steps)
    ]
    return layer, history
