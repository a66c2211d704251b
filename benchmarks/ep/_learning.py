"""Shared pieces of the EP learning benchmarks: train over seeds, summarise, write the table and a learning curve.

Not a benchmark itself; ``gates.py``, ``iris.py``, ``wine.py`` and ``digits.py`` use it.
Timing: ``s/epoch`` is the wall time of one epoch of :func:`~inmaterio.circuits.fit`
(free + two nudged phases for symmetric EP, the optimiser step, no evaluation),
taken from the history's ``seconds`` (median over epochs); ``samples/s`` is
training samples over that time.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from inmaterio.circuits import EPTrainConfig, Model, evaluate, fit
from inmaterio.fileio import atomic_write_text
from inmaterio.plots import save_figure

RESULTS = Path(__file__).parent / "results"


@dataclass
class SeedRun:
    seed: int
    train_accuracy: float
    test_accuracy: float
    seconds_per_epoch: float
    samples_per_second: float
    history: list[dict[str, float]]
    wall_s: float


def train_seed(model: Model, data, config: EPTrainConfig) -> SeedRun:
    """Fit on ``data.x_train`` with the test set as validation (evaluated per epoch, not timed), then evaluate."""
    t0 = time.perf_counter()
    hist = fit(model, data.x_train, data.y_train, config, validation=(data.x_test, data.y_test), progress=False)
    wall = time.perf_counter() - t0
    tr = evaluate(model, data.x_train, data.y_train, config)["accuracy"]
    te = evaluate(model, data.x_test, data.y_test, config)["accuracy"]
    spe = statistics.median(r["seconds"] for r in hist)
    return SeedRun(config.seed, tr, te, spe, len(data.x_train) / spe, hist, wall)


def seed_table(runs: list[SeedRun], n_train: int, n_test: int) -> list[str]:
    lines = [
        "| seed | train accuracy | test accuracy | best test acc. during training (epoch) | s/epoch | samples/s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        best = max(range(len(r.history)), key=lambda i: r.history[i]["val_accuracy"])
        lines.append(
            f"| {r.seed} | {r.train_accuracy:.2%} | {r.test_accuracy:.2%} | "
            f"{r.history[best]['val_accuracy']:.2%} ({best + 1}) | {r.seconds_per_epoch:.3f} | {r.samples_per_second:.0f} |"
        )
    te = [r.test_accuracy for r in runs]
    tr = [r.train_accuracy for r in runs]
    spe = statistics.median(r.seconds_per_epoch for r in runs)
    lines += [
        "",
        f"Over {len(runs)} seeds ({n_train} train / {n_test} test samples): final test accuracy mean **{np.mean(te):.2%}**, "
        f"min {min(te):.2%}, max **{max(te):.2%}**; {sum(t == 1.0 for t in te)} of {len(runs)} seeds at 100% test; "
        f"final train accuracy mean {np.mean(tr):.2%} (min {min(tr):.2%}, max {max(tr):.2%}). "
        f"Median {spe:.3f} s/epoch = {n_train / spe:.0f} training samples/s (1 torch thread).",
    ]
    return lines


def learning_curve(runs: list[SeedRun], title: str, path: Path) -> None:
    """Train and test accuracy per epoch: mean over seeds with the min-max band."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    epochs = np.arange(1, len(runs[0].history) + 1)
    for key, label in (("accuracy", "train (during the epoch)"), ("val_accuracy", "test (after the epoch)")):
        a = np.array([[h[key] for h in r.history] for r in runs])
        ax.plot(epochs, a.mean(0), label=f"{label}, mean of {len(runs)} seeds")
        ax.fill_between(epochs, a.min(0), a.max(0), alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    save_figure(fig, path)


def write_report(name: str, lines: list[str], out: Path = RESULTS) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{name}.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


def run_seeds(
    build: Callable[[int], Model], load: Callable[[int], object], config: EPTrainConfig, seeds, *, log=print
) -> list[SeedRun]:
    """For each seed: the split ``load(seed)``, the model ``build(seed)``, and training with ``config.seed = seed``."""
    torch.set_num_threads(1)
    runs = []
    for seed in seeds:
        data = load(seed)
        run = train_seed(build(seed), data, config.model_copy(update={"seed": seed}))
        log(
            f"seed {seed}: train {run.train_accuracy:.2%} test {run.test_accuracy:.2%} "
            f"({run.seconds_per_epoch:.3f} s/epoch, wall {run.wall_s:.0f} s)"
        )
        runs.append(run)
    return runs


def tabular_main(
    doc: str, name: str, title: str, load, n_inputs: int, n_classes: int, split: tuple[int, int], defaults: dict
) -> None:
    """The command line of a tabular benchmark (``wine.py``, ``digits.py``): seeds of one recipe, table and curve.

    ``defaults``: ``seeds``, ``epochs``, ``hidden``, ``batch_size``; ``split``: (train, test) sizes for the table.
    """
    import argparse

    from inmaterio.circuits.examples import diode_network

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=defaults["seeds"])
    parser.add_argument("--epochs", type=int, default=defaults["epochs"])
    parser.add_argument("--hidden", type=int, default=defaults["hidden"])
    parser.add_argument("--batch-size", type=int, default=defaults["batch_size"])
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--beta", type=float, default=1e-7)
    parser.add_argument("--diode-bias", type=float, default=-0.3)
    parser.add_argument("--gain", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    cfg = EPTrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        beta=args.beta,
        lr=args.lr,
        readout="differential",
        loss="mse",
        target_v=0.1,
    )
    build = lambda s: diode_network(n_inputs, args.hidden, n_classes, seed=s, diode_bias_v=args.diode_bias, gain=args.gain)  # noqa: E731
    runs = run_seeds(build, load, cfg, range(args.seeds))
    cmd = (
        f"python benchmarks/ep/{name}.py --seeds {args.seeds} --epochs {args.epochs} --hidden {args.hidden} "
        f"--batch-size {args.batch_size} --lr {args.lr} --beta {args.beta} --diode-bias {args.diode_bias} --gain {args.gain}"
    )
    n_train, n_test = split
    lines = [
        f"# {title} with a diode circuit trained by Equilibrium Propagation",
        "",
        f"Command: `{cmd}` (1 torch thread).",
        "",
        f"{n_inputs} inputs + inverses (min-max to [-1, 1] V on the training set), biases +-1 V -> Dense({args.hidden}) -> Shockley "
        f"diodes both ways (series bias {args.diode_bias} V) -> amplifiers (gain {args.gain}) -> Dense({2 * n_classes}) (+ biases), "
        f"differential readout. Symmetric EP, beta {args.beta:g} S, MSE (target +-0.1 V), Adam lr {args.lr}, batch "
        f"{args.batch_size}, {args.epochs} epochs. Each seed: its own stratified {n_train}/{n_test} split and initialisation; "
        "accuracies after the last epoch.",
        "",
        *seed_table(runs, n_train, n_test),
        "",
        f"![learning curve]({name}.png)",
    ]
    write_report(name, lines, args.out)
    learning_curve(runs, f"{title}, symmetric EP", args.out / f"{name}.png")
