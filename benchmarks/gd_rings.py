"""Gradient-descent speed on the ring task: the real trainer (with and without a run folder) vs a bare Adam loop.

Command (from the repository root; prints a markdown table)::

    python benchmarks/gd_rings.py --epochs 200 --repeats 3

Setting: ``make_rings(n_per_class=500)`` (1000 points, gap 0.1), full batch,
``fisher`` loss, Adam with learning rate 0.0065, on the bundled surrogate
(5x90 ReLU MLP, no output noise), data range [-1, 1] on electrodes e3 and e4
(the defaults of the rings task), for two architectures:

* ``single``: one DNPU node (:func:`~inmaterio.nn.layers.single_dnpu`), 1000 surrogate rows per forward pass;
* ``2-2-1``: :func:`~inmaterio.nn.layers.two_two_one` (5 nodes, batch norm between layers), 5000 rows per pass.

Each is trained three ways, from the same initial controls:

(a) ``train_gd`` (the trainer the tasks use; ``progress=False``, no run
    directory, so no checkpoints): per epoch one step (forward, backward,
    Adam, the regularizer and ``constrain()`` hooks) plus an evaluation pass
    over the training set without gradients (the loss recorded in the
    history and used for model selection), and a copy of the weights when
    the loss improved;
(b) the same with a run folder (``directory`` in a temporary folder): a
    checkpoint, ``run.json`` and the history (JSON and CSV) written after
    every epoch; the difference to (a) is the cost of being resumable;
(c) a bare loop: ``loss = fisher(model(x), y); zero_grad; backward; step``
    and the clamp of the controls into their ranges (``DNPU.constrain()``;
    without it Adam walks controls out of range and the processor refuses
    the voltages), nothing else.

Every variant gets one untimed warm-up of 5 epochs; then ``--repeats`` timed
runs of ``--epochs`` epochs, interleaved, and the table shows the fastest.
The trainer's epochs/s is epochs over the wall time of the whole
``train_gd`` call (its setup, e.g. the data fingerprint of a run folder, included).
"Surrogate evaluations/s" counts rows through the MLP in forward passes
(the trainer's evaluation pass included; backward passes not counted).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable

import torch
from torch import nn

from inmaterio.data.rings import make_rings
from inmaterio.nn.dnpu import DNPU
from inmaterio.nn.layers import single_dnpu, two_two_one
from inmaterio.processors import SurrogateProcessor
from inmaterio.surrogate import load_default_surrogate
from inmaterio.training.gd import GDConfig, train_gd
from inmaterio.training.losses import fisher

LEARNING_RATE = 0.0065
INPUT_ELECTRODES = ("e3", "e4")
ARCHITECTURES: dict[str, tuple[Callable[..., nn.Module], int]] = {
    "single": (single_dnpu, 1),  # builder, DNPU nodes
    "2-2-1": (two_two_one, 5),
}


def build(architecture: str, processor: SurrogateProcessor) -> nn.Module:
    builder, _ = ARCHITECTURES[architecture]
    return builder(processor, input_electrodes=INPUT_ELECTRODES, data_range=(-1.0, 1.0), seed=0)


def time_trainer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, folder: bool = False) -> float:
    config = GDConfig(learning_rate=LEARNING_RATE, epochs=epochs, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        directory = os.path.join(tmp, "run") if folder else None
        start = time.perf_counter()
        result = train_gd(model, fisher, x, y, config, progress=False, directory=directory)
        elapsed = time.perf_counter() - start
    assert len(result.history) == epochs, "the trainer stopped early"
    return elapsed


def time_trainer_with_folder(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> float:
    return time_trainer(model, x, y, epochs, folder=True)


def time_bare(model: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    layers = [m for m in model.modules() if isinstance(m, DNPU)]
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        loss = fisher(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        for layer in layers:
            layer.constrain()
    loss.item()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200, help="epochs per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant (the fastest is shown)")
    parser.add_argument("--n-per-class", type=int, default=500, help="ring points per class (full batch)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch CPU threads (default: all cores)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    processor = SurrogateProcessor(load_default_surrogate())  # loading is not timed
    x, y = make_rings(args.n_per_class)
    variants = {"trainer": time_trainer, "folder": time_trainer_with_folder, "bare": time_bare}
    best: dict[tuple[str, str], float] = {}
    for architecture in ARCHITECTURES:
        for run in variants.values():
            run(build(architecture, processor), x, y, 5)  # warm-up, not timed
    for _ in range(args.repeats):
        for architecture in ARCHITECTURES:
            for name, run in variants.items():
                seconds = run(build(architecture, processor), x, y, args.epochs)
                key = (architecture, name)
                best[key] = min(best.get(key, float("inf")), seconds)

    n = len(x)
    print(
        f"GD on the ring task: {n} points, full batch, fisher, Adam lr {LEARNING_RATE}, bundled 5x90 surrogate, "
        f"{args.epochs} epochs, best of {args.repeats}, {torch.get_num_threads()} threads, torch {torch.__version__}\n"
    )
    print(
        "| architecture | epochs/s trainer | epochs/s bare loop | ms/epoch trainer / with run folder / bare "
        "| trainer overhead | run folder, ms/epoch | surrogate evaluations/s trainer / bare |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for architecture, (_, nodes) in ARCHITECTURES.items():
        trainer, folder, bare = (best[(architecture, v)] for v in ("trainer", "folder", "bare"))
        e = args.epochs
        rows_trainer = 2 * n * nodes * e / trainer  # training forward + evaluation pass
        rows_bare = n * nodes * e / bare
        print(
            f"| {architecture} ({nodes} node{'s' if nodes > 1 else ''}) | {e / trainer:,.1f} | {e / bare:,.1f} "
            f"| {1e3 * trainer / e:.2f} / {1e3 * folder / e:.2f} / {1e3 * bare / e:.2f} | {trainer / bare - 1:+.0%} "
            f"| {1e3 * (folder - trainer) / e:+.2f} | {rows_trainer:.3g} / {rows_bare:.3g} |"
        )


if __name__ == "__main__":
    main()
