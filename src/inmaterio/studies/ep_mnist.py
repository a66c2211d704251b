"""MNIST with an analog 784x2-H-10 resistive network trained by Equilibrium Propagation, as one typed study.

Network: the 784 pixels scaled to ``p/255 - 0.5`` (volts, [-0.5, 0.5]) and
their inverted copies (784 x 2 input sources) plus two bias sources
(+1 V, -1 V); a Dense crossbar to ``hidden`` nodes, each with two diodes to
ground (``diode``: piecewise linear with on-conductance ``on_conductance_s``,
or Shockley; series bias ``diode_bias_v``, one each way) and a bidirectional
amplifier (gain ``gain``, current gain 1/gain); a Dense crossbar (with the
biases) to 10 output nodes. Conductances in [1e-7, 1e-5] S, initialised
uniform in [1e-7, 2e-6] S. EP settings in ``training``
(:class:`~inmaterio.circuits.fit.EPTrainConfig`; cross-entropy of
``scale_per_v`` times the output voltages by default).

Split: :func:`inmaterio.data.mnist.mnist_splits` (55,000 training, 5,000
validation, 10,000 test; ``train_size`` keeps the first images of the
training set). The weights after the last epoch are tested once; the
validation accuracy of every epoch is in the history. The training is the
nested run folder ``<run>/training`` (resumes after its last epoch).

The published number for this size is 3.46% test error (Scellier 2024,
"A fast algorithm to simulate nonlinear resistive networks"); the report
prints it beside ours.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator

from inmaterio.circuits.fit import EPTrainConfig
from inmaterio.config import StrictModel
from inmaterio.runs import RunFolder
from inmaterio.tasks.outcome import TaskOutcome
from inmaterio.tasks.registry import FinishedRun, RunnableConfig

__all__ = ["REFERENCE_TEST_ERROR_PERCENT", "EPMnistConfig", "prepare_ep_mnist", "run_ep_mnist", "report_ep_mnist"]

#: Test error published for the 784x2-100-10 network trained with EP (Scellier, ICML 2024).
REFERENCE_TEST_ERROR_PERCENT = 3.46

_RECIPE = {"epochs": 10, "batch_size": 32, "lr": 0.003, "beta": 1e-7, "loss": "cross_entropy", "scale_per_v": 300.0,
           "target_v": 0.1, "readout": "direct", "variant": "symmetric", "optimizer": "adam"}  # fmt: skip


class EPMnistTask(StrictModel):
    """The network and its training (see the module docstring; keys of ``training`` not given keep the recipe)."""

    type: Literal["ep_mnist"]
    hidden: int = Field(100, ge=1, le=100_000)
    diode: Literal["pwl", "shockley"] = "pwl"
    on_conductance_s: float = Field(1e-3, gt=0, le=1e3)
    diode_bias_v: float = Field(0.005, ge=-10, le=10)
    gain: float = Field(4.0, gt=0, le=1e6)
    train_size: int = Field(55_000, ge=1)
    training: EPTrainConfig

    @model_validator(mode="before")
    @classmethod
    def _recipe(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(training := data.get("training", {}), dict):
            return {**data, "training": {**_RECIPE, **training}}
        return data


class EPMnistData(StrictModel):
    """dir : the four MNIST IDX files (null: ``$INMATERIO_MNIST_DIR``); not part of the identity (the data's SHA-256 is).
    n_validation, split_seed : the validation images drawn from the training images."""

    dir: Path | None = None
    n_validation: int = Field(5000, ge=1)
    split_seed: int = 0


class EPMnistConfig(RunnableConfig):
    """One EP MNIST run: task, data, torch threads (speed only), seed (initial conductances and shuffling)."""

    SPEED_ONLY = {"threads": True, "data": {"dir"}}

    task: EPMnistTask
    data: EPMnistData = EPMnistData()
    threads: int = Field(1, ge=1, le=256)
    seed: int = Field(0, ge=0)


class _Prepared:
    def __init__(self, splits, identity: dict[str, Any]) -> None:
        self.splits, self.identity = splits, identity


def prepare_ep_mnist(config: EPMnistConfig) -> _Prepared:
    """Load and split MNIST before the folder is touched (a missing or corrupt file is named)."""
    from inmaterio.data.mnist import load_mnist, mnist_splits
    from inmaterio.errors import ConfigError
    from inmaterio.runs import fingerprint_tensors

    raw = load_mnist(config.data.dir)
    splits = mnist_splits(raw, n_validation=config.data.n_validation, seed=config.data.split_seed)
    if config.task.train_size > len(splits.x_train):
        raise ConfigError(f"task.train_size {config.task.train_size} exceeds the {len(splits.x_train)} training images")
    identity = {"mnist_sha256": fingerprint_tensors(raw.train_images, raw.train_labels, raw.test_images, raw.test_labels)}
    return _Prepared(splits, identity)


def network(task: EPMnistTask, n_pixels: int, seed: int):
    """The circuit model of the module docstring."""
    from inmaterio.circuits import Amplifier, Bias, Concatenate, Dense, Diodes, Input, Model, PiecewiseLinearDiode, ShockleyDiode

    x = Input(n_pixels, inverted=True, voltage_range_v=(-1.0, 1.0), name="pixels")
    b = Bias([1.0, -1.0], name="bias")
    h = Dense(task.hidden, init_s=(1e-7, 2e-6), name="hidden")(Concatenate()([x, b]))
    element = PiecewiseLinearDiode(on_conductance_s=task.on_conductance_s) if task.diode == "pwl" else ShockleyDiode()
    h = Diodes(element, orientation="both", bias_v=(task.diode_bias_v, task.diode_bias_v), name="diodes")(h)
    h = Amplifier(task.gain, name="amplifiers")(h)
    y = Dense(10, init_s=(1e-7, 2e-6), name="outputs")(Concatenate()([h, b]))
    return Model(x, y, seed=seed)


def run_ep_mnist(config: EPMnistConfig, run: RunFolder, *, progress: bool, prepared: _Prepared) -> TaskOutcome:
    """Train in ``<run>/training``, then test the last epoch's weights once."""
    from inmaterio.circuits import evaluate, fit

    task, data = config.task, prepared.splits
    flat = lambda t: t.reshape(len(t), -1).double()  # noqa: E731
    x_train, y_train = flat(data.x_train)[: task.train_size], data.y_train[: task.train_size]
    x_val, x_test = flat(data.x_val), flat(data.x_test)
    model = network(task, x_train.shape[1], config.seed)
    training = task.training.model_copy(update={"seed": config.seed})
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        history = fit(model, x_train, y_train, training, validation=(x_val, data.y_val), directory=run.subfolder("training"),
                      progress=progress)  # fmt: skip
        test = evaluate(model, x_test, data.y_test, training)
    finally:
        torch.set_num_threads(saved_threads)
    error = 100 * (1 - test["accuracy"])
    _figure(run, history)
    metrics = {
        "study": "ep_mnist",
        "network": f"784x2-{task.hidden}-10",
        "task": task.model_dump(mode="json"),
        "test_accuracy": test["accuracy"],
        "test_error_percent": error,
        "reference_test_error_percent": REFERENCE_TEST_ERROR_PERCENT,
        "images": {"train": len(x_train), "validation": len(x_val), "test": len(x_test)},
        "mean_epoch_s": sum(r["seconds"] for r in history) / len(history),
        "threads": config.threads,
        "history": history,
    }
    columns = ["epoch", "train loss", "train acc. (running)", "val. acc.", "s", "ms per sample"]
    rows = [[str(r["epoch"]), f"{r['loss']:.5f}", f"{100 * r['accuracy']:.2f}%", f"{100 * r['val_accuracy']:.2f}%",
             f"{r['seconds']:.0f}", f"{1e3 * r['seconds'] / len(x_train):.2f}"] for r in history]  # fmt: skip
    rows.append(["test", "", "", f"error {error:.2f}% (published {REFERENCE_TEST_ERROR_PERCENT}%)", "", ""])
    curves = {"training": [{"step": r["epoch"], **{k: v for k, v in r.items() if k != "epoch"}} for r in history]}
    return TaskOutcome(metrics, {}, f"MNIST, analog 784x2-{task.hidden}-10 network trained with EP", columns, rows, curves)


def _figure(run: RunFolder, history: list[dict[str, Any]]) -> None:
    from matplotlib.figure import Figure

    from inmaterio.plots import save_figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    epochs = [r["epoch"] for r in history]
    ax.plot(epochs, [100 * (1 - r["accuracy"]) for r in history], "o-", label="train error (running)")
    ax.plot(epochs, [100 * (1 - r["val_accuracy"]) for r in history], "s-", label="validation error")
    ax.axhline(REFERENCE_TEST_ERROR_PERCENT, color="gray", ls="--", label=f"published {REFERENCE_TEST_ERROR_PERCENT}% (test)")
    ax.set(xlabel="epoch", ylabel="error (%)", yscale="log")
    ax.legend()
    save_figure(fig, run.file("learning_curve.png"))


def report_ep_mnist(runs: list[FinishedRun]) -> str:
    """Markdown: one row per run, the published number beside ours."""
    from inmaterio.tasks.report import markdown_table

    rows = []
    for run in runs:
        m = run.metrics
        t = m["task"]["training"]
        rows.append([m["network"], m["task"]["diode"], f"{t['loss']}, {t['optimizer']} lr {t['lr']}, batch {t['batch_size']}",
                     len(m["history"]), m["images"]["train"], f"**{m['test_error_percent']:.2f}%**",
                     f"{m['reference_test_error_percent']}%", f"{m['mean_epoch_s']:.0f}", m["threads"], f"`{run.path}`"])  # fmt: skip
    return (
        "Test error after the last epoch on the 10,000 test images; the published error is for the same size trained "
        "with EP (Scellier 2024).\n\n"
        + markdown_table(
            [
                "network",
                "diodes",
                "training",
                "epochs",
                "training images",
                "test error",
                "published",
                "s/epoch",
                "threads",
                "run",
            ],
            rows,
        )
    )
