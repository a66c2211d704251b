"""MNIST with deep resistive networks (ideal diodes) trained by EP and by exact gradients, as one typed study.

The network is :class:`~inmaterio.circuits.drn.DeepResistiveNetwork`: each pixel ``p / 255`` in ``[0, 1]`` drives
two sources ``+-input_gain * p`` (``784 x 2`` inputs), hidden layers of ideal-diode nodes (half bounded below at
0 V, half above), 10 linear outputs, non-negative conductances (``uniform(+-1/sqrt(fan_in))`` clipped at 0) and
learned bias currents; squared error to one-hot targets; steady states by the layered block-coordinate-descent
solver (:mod:`inmaterio.circuits.solve.layered`). Every entry of ``algorithms`` is trained with every seed by
:func:`~inmaterio.circuits.drn_training.fit_drn` (``training``: SGD, batch 4, a learning rate per layer decayed
per epoch; ``ep``: centred EP by default; ``implicit``: the exact gradient of the same circuit), each in its own
nested run folder ``<algorithm>/seed_<s>/`` that resumes after its last epoch; the study's checkpoint keeps the
finished ones.

Split: :func:`inmaterio.data.mnist.mnist_splits` with ``data.n_validation`` images held out (0: train on all
60,000, as the published recipe does); the test error is measured after every epoch (reported: after the last
one, no model selection).

Published test errors for the same sizes (Scellier, "A fast algorithm to simulate nonlinear resistive
networks", ICML 2024): 784x2-100-10 EP 3.46 %, BP 3.30 % (10 epochs); 784x2-1024-10 EP 1.57 %, BP 1.54 %
(50 epochs). The report prints them beside ours.

``inmaterio run examples/drn_mnist.yaml`` (784x2-100-10, EP and exact, 3 seeds, 10 epochs: about 2 h on one thread).
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from inmaterio.circuits.drn_training import DRNTrainConfig
from inmaterio.config import StrictModel
from inmaterio.runs import RunFolder
from inmaterio.tasks.outcome import TaskOutcome
from inmaterio.tasks.registry import FinishedRun, RunnableConfig

__all__ = [
    "PUBLISHED_TEST_ERROR_PERCENT",
    "DRNMnistConfig",
    "DRNMnistTask",
    "prepare_drn_mnist",
    "run_drn_mnist",
    "report_drn_mnist",
]

#: Published test error (%) by hidden layer sizes and algorithm (Scellier, ICML 2024; "implicit" stands for BP there).
PUBLISHED_TEST_ERROR_PERCENT = {(100,): {"ep": 3.46, "implicit": 3.30}, (1024,): {"ep": 1.57, "implicit": 1.54}}


class DRNMnistTask(StrictModel):
    """The network and its training.

    hidden : hidden layer sizes (each split half excitatory, half inhibitory).
    input_gain : volts per unit pixel of the input sources (> 0).
    init_gain : scale of the initial conductances (> 0).
    dtype : float32 (fast) or float64.
    algorithms : trained one after the other for every seed: ep, implicit (exact gradients).
    seeds : seeds 0 .. seeds-1 (initial conductances, shuffling).
    train_size : the first images of the training set (null: all).
    training : :class:`~inmaterio.circuits.drn_training.DRNTrainConfig` without ``algorithm`` and ``seed``.
    """

    type: Literal["drn_mnist"]
    hidden: list[int] = Field(default_factory=lambda: [100])
    input_gain: float = Field(100.0, gt=0, le=1e9)
    init_gain: float = Field(1.0, gt=0, le=1e6)
    dtype: Literal["float32", "float64"] = "float32"
    algorithms: list[Literal["ep", "implicit"]] = Field(default_factory=lambda: ["ep", "implicit"])
    seeds: int = Field(3, ge=1, le=1000)
    train_size: int | None = Field(None, ge=1)
    training: DRNTrainConfig = DRNTrainConfig()

    @field_validator("hidden")
    @classmethod
    def _sizes(cls, hidden: list[int]) -> list[int]:
        if not hidden or any(h < 1 or h > 1_000_000 for h in hidden):
            raise ValueError(f"hidden must list one or more layer sizes in [1, 1000000], got {hidden}")
        return hidden

    @field_validator("algorithms")
    @classmethod
    def _distinct(cls, algorithms: list[str]) -> list[str]:
        if not algorithms or len(set(algorithms)) != len(algorithms):
            raise ValueError(f"algorithms must list ep and/or implicit once each, got {algorithms}")
        return algorithms

    @field_validator("training")
    @classmethod
    def _no_algorithm_or_seed(cls, training: DRNTrainConfig) -> DRNTrainConfig:
        given = training.model_fields_set & {"algorithm", "seed"}
        if given:
            raise ValueError(f"training.{sorted(given)[0]} is set per run by the study (task.algorithms, task.seeds); remove it")
        return training

    @model_validator(mode="after")
    def _rates_per_layer(self) -> DRNMnistTask:
        self.training.rates(len(self.hidden) + 1)  # a per-layer list of the wrong length names itself
        return self

    def architecture(self) -> str:
        return "784x2-" + "-".join(str(h) for h in self.hidden) + "-10"


class DRNMnistData(StrictModel):
    """dir : the four MNIST IDX files (null: ``$INMATERIO_MNIST_DIR``); not part of the identity (the data's SHA-256 is).
    n_validation, split_seed : images held out of the training set (0: none) and the draw."""

    dir: Path | None = None
    n_validation: int = Field(0, ge=0)
    split_seed: int = 0


class DRNMnistConfig(RunnableConfig):
    """The study: task, data, torch threads (speed only)."""

    SPEED_ONLY = {"threads": True, "data": {"dir"}}

    task: DRNMnistTask
    data: DRNMnistData = DRNMnistData()
    threads: int = Field(1, ge=1, le=256)


class _Prepared:
    def __init__(self, splits, identity: dict[str, Any]) -> None:
        self.splits, self.identity = splits, identity


def prepare_drn_mnist(config: DRNMnistConfig) -> _Prepared:
    """Load and split MNIST before the folder is touched (a missing or corrupt file is named)."""
    from inmaterio.data.mnist import load_mnist, mnist_splits
    from inmaterio.errors import ConfigError
    from inmaterio.runs import fingerprint_tensors

    raw = load_mnist(config.data.dir)
    splits = mnist_splits(raw, n_validation=config.data.n_validation, seed=config.data.split_seed)
    if config.task.train_size is not None and config.task.train_size > len(splits.x_train):
        raise ConfigError(f"task.train_size {config.task.train_size} exceeds the {len(splits.x_train)} training images")
    identity = {"mnist_sha256": fingerprint_tensors(raw.train_images, raw.train_labels, raw.test_images, raw.test_labels)}
    return _Prepared(splits, identity)


def _train_one(config: DRNMnistConfig, prepared: _Prepared, algorithm: str, seed: int, run: RunFolder, progress: bool):
    from inmaterio.circuits.drn import DeepResistiveNetwork
    from inmaterio.circuits.drn_training import fit_drn

    task, data = config.task, prepared.splits
    n = task.train_size or len(data.x_train)
    pixels = lambda t: t + 0.5  # noqa: E731  (mnist_splits scales to [-0.5, 0.5])
    x, y = pixels(data.x_train[:n]), data.y_train[:n]
    evaluation = {"test": (pixels(data.x_test), data.y_test)}
    if len(data.x_val):
        evaluation["val"] = (pixels(data.x_val), data.y_val)
    dtype = torch.float32 if task.dtype == "float32" else torch.float64
    model = DeepResistiveNetwork((784, *task.hidden, 10), task.input_gain, seed=seed, init_gain=task.init_gain, dtype=dtype)
    training = DRNTrainConfig.model_validate({**task.training.model_dump(), "algorithm": algorithm, "seed": seed})
    history = fit_drn(model, x, y, training, evaluation=evaluation, directory=run.subfolder(f"{algorithm}/seed_{seed}"),
                      identity={**prepared.identity, "init_seed": seed, "init_gain": task.init_gain}, progress=progress)  # fmt: skip
    return {
        "algorithm": algorithm,
        "seed": seed,
        "test_error": history[-1]["test_error"],
        "train_error_running": history[-1]["train_error"],
        "val_error": history[-1].get("val_error"),
        "seconds_per_epoch": statistics.median(r["seconds"] for r in history),
        "n_train": n,
        "history": history,
    }


def run_drn_mnist(config: DRNMnistConfig, run: RunFolder, *, progress: bool, prepared: _Prepared) -> TaskOutcome:
    """Train every (algorithm, seed); finished ones are kept in the checkpoint and not trained again."""
    task = config.task
    done: dict[str, Any] = dict((run.load_checkpoint() or {}).get("results", {}))
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        for seed in range(task.seeds):
            for algorithm in task.algorithms:
                key = f"{algorithm}/seed_{seed}"
                if key not in done:
                    done[key] = _train_one(config, prepared, algorithm, seed, run, progress)
                    run.save_checkpoint({"results": done})
    finally:
        torch.set_num_threads(saved_threads)
    results = [done[f"{a}/seed_{s}"] for a in task.algorithms for s in range(task.seeds)]
    published = PUBLISHED_TEST_ERROR_PERCENT.get(tuple(task.hidden), {})
    summary = []
    for algorithm in task.algorithms:
        errors = 100 * np.array([r["test_error"] for r in results if r["algorithm"] == algorithm])
        summary.append({
            "algorithm": algorithm,
            "seeds": len(errors),
            "test_error_percent_mean": float(errors.mean()),
            "test_error_percent_std": float(errors.std()),
            "test_error_percent_min": float(errors.min()),
            "test_error_percent_max": float(errors.max()),
            "train_error_percent_mean": float(100 * np.mean([r["train_error_running"] for r in results if r["algorithm"] == algorithm])),
            "seconds_per_epoch": statistics.median(r["seconds_per_epoch"] for r in results if r["algorithm"] == algorithm),
            "published_percent": published.get(algorithm),
        })  # fmt: skip
    _figure(run, task, results, published)
    metrics = {
        "study": "drn_mnist",
        "network": task.architecture(),
        "task": task.model_dump(mode="json"),
        "threads": config.threads,
        "images": {"train": results[0]["n_train"], "validation": len(prepared.splits.x_val), "test": len(prepared.splits.x_test)},
        "summary": summary,
        "runs": results,
    }
    columns = ["algorithm", "seeds", "test error mean", "std", "min", "max", "train error (running)", "published", "s/epoch"]
    label = {"ep": f"EP ({task.training.variant}, beta {task.training.beta:g})", "implicit": "exact gradients (implicit)"}
    rows = [[label[s["algorithm"]], str(s["seeds"]), f"{s['test_error_percent_mean']:.2f}%", f"{s['test_error_percent_std']:.2f}",
             f"{s['test_error_percent_min']:.2f}%", f"{s['test_error_percent_max']:.2f}%", f"{s['train_error_percent_mean']:.2f}%",
             "-" if s["published_percent"] is None else f"{s['published_percent']}%", f"{s['seconds_per_epoch']:.1f}"]
            for s in summary]  # fmt: skip
    curves = {f"{r['algorithm']} seed {r['seed']}": [{"step": h["epoch"], **{k: v for k, v in h.items() if k != "epoch"}}
                                                      for h in r["history"]] for r in results}  # fmt: skip
    title = f"MNIST, deep resistive network {task.architecture()}, {task.training.epochs} epochs"
    return TaskOutcome(metrics, {}, title, columns, rows, curves)


def _figure(run: RunFolder, task: DRNMnistTask, results: list[dict[str, Any]], published: dict[str, float]) -> None:
    """``test_error.png``: test error per epoch (log y), one line per run, the published numbers dashed."""
    from matplotlib.figure import Figure

    from inmaterio.plots import save_figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    colors = {"ep": "C0", "implicit": "C1"}
    for r in results:
        epochs = [h["epoch"] for h in r["history"]]
        ax.plot(epochs, [100 * h["test_error"] for h in r["history"]], "o-", ms=3, color=colors[r["algorithm"]], alpha=0.8,
                label=f"{r['algorithm']}" if r["seed"] == 0 else None)  # fmt: skip
    for algorithm, value in published.items():
        if algorithm in task.algorithms:
            ax.axhline(value, color=colors[algorithm], ls="--", lw=1, label=f"published {algorithm} {value}%")
    ax.set(
        xlabel="epoch",
        ylabel="test error (%)",
        yscale="log",
        title=f"{task.architecture()}, {task.seeds} seed{'' if task.seeds == 1 else 's'}",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, run.file("test_error.png"))


def report_drn_mnist(runs: list[FinishedRun]) -> str:
    """Markdown: each run's table, the published numbers beside ours, and the figure."""
    from inmaterio.tasks.report import markdown_table

    sections = []
    for run in runs:
        m, table = run.metrics, run.metrics["table"]
        t = m["task"]["training"]
        sections.append(
            f"### {table['title']} (`{run.path}`)\n\n"
            f"Input gain {m['task']['input_gain']:g}, {m['task']['dtype']}; SGD batch {t['batch_size']}, lr {t['lr_weights']} "
            f"(weights) / {t['lr_biases']} (biases), decay {t['lr_decay']} per epoch; {t['sweeps']} sweeps per steady state "
            f"in training, {t['inference_sweeps']} in inference; {m['images']['train']} training images. Test error after "
            f"the last epoch, mean and std over seeds; s/epoch is training only, {m['threads']} thread(s). "
            f"{run.record.get('wall_s', 0.0) / 60:.0f} min wall.\n\n"
            + markdown_table(table["columns"], table["rows"])
            + f"\n\n![test error]({run.path / 'test_error.png'})"
        )
    return "\n\n".join(sections)
