"""MNIST MLPs trained on pulsed devices, one row per update rule: ``inmaterio run examples/pulsed_mnist.yaml``.

The network ``Flatten -> AnalogLinear(side^2, h_1) -> act -> ... -> AnalogLinear(h_k, 10)`` (logits,
cross-entropy) has every weight on a sampled pulsed device (:mod:`inmaterio.crossbars.pulsed`, one
config for all tiles: ``task.device``, a preset name or a device mapping) and is read through ideal
tiles, so what differs between rows is the update alone. Each entry of ``task.runs`` is one training:

- ``rule: digital``: floating-point SGD on the same network (the software baseline);
- ``rule: mbgd``: :class:`~inmaterio.crossbars.analog_sgd.AnalogSGD` with pulse-count quantisation of the
  batch-mean gradient, rounding ``nearest`` (RN) or ``stochastic`` (SR); ``batch_size: 1`` is plain SGD;
- ``rule: pulse_train``: stochastic pulse-train updates of bit length ``bl``, one per image;
- ``rule: low_rank``: the batch gradient's rank-k approximation (``low_rank``: streaming batch PCA or NMF)
  transferred as one pulse-count matrix (rank-sum) or one per component (rank-seq);
- ``rule: tiki_taka``: :class:`~inmaterio.crossbars.tiki_taka.TikiTaka` (``tiki_taka``: version 1 or 2 and
  its transfer settings); the fast array ``A`` uses the run's device zero-shifted, ``C`` the device itself.

A run may use its own device (``device``) and set its number of states (``states``: ``dw_min`` becomes
``(w_max - w_min) / states``), e.g. for a sweep over the number of states.

Images are cropped to their central ``task.crop`` x ``task.crop`` pixels (20: the 400-input network of
Zhao et al. 2021) with pixels in [0, 1]. Every (run, seed) trains with
:func:`~inmaterio.training.gd.train_gd` in its own folder ``<run>/<name>/seed_<s>``, keeping the weights
of the epoch with the best validation accuracy; a finished one is read back, so an interrupted study
resumes where it stopped. Run folder: ``metrics.json`` (test accuracy mean ± std over seeds per run),
``history.json`` (validation accuracy per epoch), ``accuracy_vs_epoch.png``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from inmaterio.config import StrictModel, validate_config
from inmaterio.crossbars.low_rank import LowRankConfig
from inmaterio.crossbars.pulsed import PRESETS, PulsedDevice, preset, validate_device
from inmaterio.crossbars.tiki_taka import TikiTakaConfig
from inmaterio.runs import RunFolder
from inmaterio.studies.common import StudyBackends
from inmaterio.studies.mnist import MnistData
from inmaterio.tasks.outcome import TaskOutcome
from inmaterio.tasks.registry import FinishedRun, RunnableConfig

__all__ = ["PulsedRun", "PulsedMnistTask", "PulsedMnistConfig", "prepare_pulsed_mnist", "run_pulsed_mnist", "report_pulsed_mnist"]

_ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh}


def _check_device(device: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(device, str) and device not in PRESETS:
        raise ValueError(f"device must be a preset ({', '.join(PRESETS)}) or a device mapping, got {device!r}")
    if isinstance(device, dict):
        validate_device(device, source="device")
    return device


def _as_device(device: str | dict[str, Any]) -> PulsedDevice:
    return preset(device) if isinstance(device, str) else validate_device(device, source="device")


class PulsedRun(StrictModel):
    """One training of the study.

    name : a label (letters, digits, ``_ - .``), unique in the study; the subfolder of its runs.
    rule : ``digital`` | ``mbgd`` | ``pulse_train`` | ``low_rank`` (module docstring).
    batch_size : images per update (>= 1).
    learning_rate : > 0.
    rounding : pulse-count rounding of ``mbgd``: ``nearest`` or ``stochastic``.
    max_pulses : the most pulses per device and update (``mbgd``; null: no limit).
    bl : bit length of ``pulse_train`` (1 .. 1000).
    epochs : this run's epochs (>= 1); null: the task's.
    low_rank : the decomposition of ``rule: low_rank`` (method, rank, transfer, ...).
    tiki_taka : the settings of ``rule: tiki_taka`` (those of :class:`~inmaterio.crossbars.tiki_taka.TikiTakaConfig`
        but its two devices; ``bl`` is the gradient's bit length).
    device : this run's pulsed device (a preset name or a mapping); null: the task's.
    states : this run's number of states (> 1): ``dw_min = (w_max - w_min) / states``; null: the device's own.
    """

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", min_length=1, max_length=64)
    rule: Literal["digital", "mbgd", "pulse_train", "low_rank", "tiki_taka"]
    batch_size: int = Field(1, ge=1)
    learning_rate: float = Field(gt=0, le=1e3)
    rounding: Literal["nearest", "stochastic"] = "stochastic"
    max_pulses: int | None = Field(None, ge=1)
    bl: int = Field(10, ge=1, le=1000)
    epochs: int | None = Field(None, ge=1, le=10_000)
    low_rank: LowRankConfig = LowRankConfig()
    tiki_taka: dict[str, Any] = Field(default_factory=dict)
    device: str | dict[str, Any] | None = None
    states: float | None = Field(None, gt=1, le=1e7)

    @field_validator("device")
    @classmethod
    def _known_run_device(cls, device: str | dict[str, Any] | None) -> str | dict[str, Any] | None:
        return device if device is None else _check_device(device)

    @model_validator(mode="after")
    def _tiki_taka_settings(self) -> PulsedRun:
        if self.tiki_taka and self.rule != "tiki_taka":
            raise ValueError(f"tiki_taka settings are given but rule is {self.rule!r}")
        if self.rule == "tiki_taka":
            self.tiki_taka_config(preset("idealized"))  # the settings validate (names the field)
        return self

    def pulsed_device(self, task_device: str | dict[str, Any]) -> PulsedDevice:
        """The device of this run: its own or the task's, with ``states`` applied."""
        device = _as_device(self.device if self.device is not None else task_device)
        if self.states is not None:
            device = validate_device({**device.model_dump(), "dw_min": (device.w_max - device.w_min) / self.states})
        return device

    def tiki_taka_config(self, device: PulsedDevice) -> TikiTakaConfig:
        """The Tiki-Taka config of this run on ``device`` (A zero-shifted)."""
        settings = {"pulse_train": {"bl": self.bl}, **self.tiki_taka}
        for name in ("device_a", "device_c"):
            if name in settings:
                raise ValueError(f"tiki_taka.{name} is set by the run's device; remove it")
        shifted = validate_device({**device.model_dump(), "reference": "zero_shift"})
        return validate_config(TikiTakaConfig, {**settings, "device_a": shifted.model_dump(), "device_c": device.model_dump()},
                               source="tiki_taka")  # fmt: skip

    def describe(self) -> str:
        if self.rule == "digital":
            return f"digital SGD, B = {self.batch_size}"
        if self.rule == "pulse_train":
            return f"pulse trains, BL = {self.bl}, B = {self.batch_size}"
        if self.rule == "tiki_taka":
            version = self.tiki_taka.get("version", 2)
            hyst = " hysteretic" if self.tiki_taka.get("hysteresis", 0) else ""
            states = "" if self.states is None else f", {self.states:g} states"
            return f"TTv{version}{hyst}, BL = {self.bl}{states}"
        if self.rule == "low_rank":
            method = "SBPCA" if self.low_rank.method == "sbpca" else "NMF"
            return f"{method} rank-{self.low_rank.transfer} k = {self.low_rank.rank}, B = {self.batch_size}, {'SR' if self.rounding == 'stochastic' else 'RN'}"
        kind = "SGD" if self.batch_size == 1 else f"MBGD B = {self.batch_size}"
        states = "" if self.states is None else f", {self.states:g} states"
        return f"{kind}, {'SR' if self.rounding == 'stochastic' else 'RN'}{states}"


class PulsedMnistTask(StrictModel):
    """The ``task:`` of the study (module docstring).

    crop : side of the central crop, pixels (4 .. 28; 28 = whole images).
    hidden : hidden layer widths (each >= 1; empty: a single layer).
    activation : ``sigmoid`` | ``relu`` | ``tanh``.
    device : a pulsed-device preset name or a device mapping (``kind`` and its fields).
    epochs : epochs per training (>= 1; a run may set its own).
    seeds : trainings per run, seeds 0 .. seeds-1 (initial weights, devices, shuffling, pulses).
    train_size : the first training images only (>= 1); null: all.
    runs : the trainings (names unique).
    """

    type: Literal["pulsed_mnist"]
    crop: int = Field(20, ge=4, le=28)
    hidden: tuple[int, ...] = (100,)
    activation: Literal["sigmoid", "relu", "tanh"] = "sigmoid"
    device: str | dict[str, Any] = "zhao_neurosim"
    epochs: int = Field(10, ge=1, le=10_000)
    seeds: int = Field(1, ge=1, le=100)
    train_size: int | None = Field(None, ge=1)
    runs: tuple[PulsedRun, ...] = Field(min_length=1)

    @field_validator("hidden")
    @classmethod
    def _positive_widths(cls, hidden: tuple[int, ...]) -> tuple[int, ...]:
        if any(h < 1 for h in hidden):
            raise ValueError(f"hidden widths must be >= 1, got {list(hidden)}")
        return hidden

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str | dict[str, Any]) -> str | dict[str, Any]:
        return _check_device(device)

    @field_validator("runs")
    @classmethod
    def _unique_names(cls, runs: tuple[PulsedRun, ...]) -> tuple[PulsedRun, ...]:
        names = [r.name for r in runs]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"runs must have unique names; repeated: {', '.join(repeated)}")
        return runs

    def pulsed_device(self) -> PulsedDevice:
        return _as_device(self.device)


class PulsedMnistConfig(RunnableConfig):
    """The study: task, MNIST data, torch threads (speed only; ``data.dir`` may change between sessions)."""

    SPEED_ONLY = {"threads": True, "data": {"dir"}}

    task: PulsedMnistTask
    data: MnistData = MnistData()
    threads: int = Field(1, ge=1, le=256)


def crop_images(x: torch.Tensor, side: int) -> torch.Tensor:
    """``x (n, 784)`` flattened 28 x 28 images -> ``(n, side^2)``, their central ``side`` x ``side`` pixels."""
    start = (28 - side) // 2
    return x.reshape(-1, 28, 28)[:, start : start + side, start : start + side].reshape(len(x), side * side)


def build_network(task: PulsedMnistTask, seed: int) -> nn.Sequential:
    """The analog MLP of ``task`` on ideal tiles, weights drawn from ``seed`` (the caller's RNG untouched)."""
    from inmaterio.crossbars.layers import AnalogLinear

    sizes = (task.crop * task.crop, *task.hidden, 10)
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(AnalogLinear(a, b, seed=seed * 1000 + i))
        if i < len(sizes) - 2:
            layers.append(_ACTIVATIONS[task.activation]())
    return nn.Sequential(*layers)


def prepare_pulsed_mnist(config: PulsedMnistConfig) -> StudyBackends:
    """Load, split and crop MNIST (pixels in [0, 1]) before any folder is made.

    Raises
    ------
    ConfigError, ModelFileError
        No data folder, a missing or corrupt IDX file, a ``train_size`` beyond the training images.
    """
    from inmaterio.data.mnist import load_mnist, mnist_splits
    from inmaterio.errors import ConfigError
    from inmaterio.runs import fingerprint_tensors

    task = config.task
    raw = load_mnist(config.data.dir)
    splits = mnist_splits(raw, n_validation=config.data.n_validation, seed=config.data.split_seed)
    if splits.x_train.shape[1] != 784:
        raise ConfigError(f"pulsed_mnist needs 28 x 28 images, got {splits.x_train.shape[1]} pixels")
    splits = dataclasses.replace(
        splits, **{f"x_{k}": crop_images(getattr(splits, f"x_{k}") + 0.5, task.crop) for k in ("train", "val", "test")}
    )
    if task.train_size is not None and task.train_size > len(splits.x_train):
        raise ConfigError(f"task.train_size {task.train_size} exceeds the {len(splits.x_train)} training images")
    identity = {"mnist_sha256": fingerprint_tensors(raw.train_images, raw.train_labels, raw.test_images, raw.test_labels)}
    return StudyBackends(None, None, identity, {"splits": splits})


def _train_one(config: PulsedMnistConfig, spec: PulsedRun, seed: int, run: RunFolder, splits, progress: bool) -> dict[str, Any]:
    """Train ``spec`` from ``seed`` (or read a finished training back); its test accuracy and history."""
    from inmaterio.crossbars.analog_sgd import AnalogSGD
    from inmaterio.crossbars.tiki_taka import TikiTaka
    from inmaterio.random_streams import stream_seed
    from inmaterio.training.gd import GDConfig, read_checkpoint, train_gd
    from inmaterio.training.losses import cross_entropy
    from inmaterio.training.metrics import accuracy

    task = config.task
    model = build_network(task, seed)
    x_train, y_train = splits.x_train[: task.train_size], splits.y_train[: task.train_size]
    device = spec.pulsed_device(task.device)
    pulse_seed = stream_seed(seed, "pulses", spec.name)
    if spec.rule == "digital":
        optimizer = None
    elif spec.rule == "tiki_taka":
        tiki_taka = spec.tiki_taka_config(device)
        optimizer = lambda params: TikiTaka(model, tiki_taka, spec.learning_rate, seed=pulse_seed)  # noqa: E731
    else:
        settings = {
            "device": device.model_dump(),
            "rule": spec.rule,
            "rounding": spec.rounding,
            "max_pulses": spec.max_pulses,
            "pulse_train": {"bl": spec.bl},
            "low_rank": spec.low_rank.model_dump(),
        }
        optimizer = lambda params: AnalogSGD(model, settings, spec.learning_rate, seed=pulse_seed)  # noqa: E731
    gd = GDConfig(
        optimizer="sgd", learning_rate=spec.learning_rate, epochs=spec.epochs or task.epochs, batch_size=spec.batch_size,
        regularization_weight=0.0, select_by="val_accuracy", select_mode="max", evaluate_train=False, seed=seed,
    )  # fmt: skip
    directory = run.subfolder(f"{spec.name}/seed_{seed}")
    train_gd(
        model, cross_entropy, x_train, y_train, gd, optimizer=optimizer, validation=(splits.x_val, splits.y_val),
        metrics={"val_accuracy": lambda out, y: float(accuracy(out, y))}, directory=directory,
        identity={"run": spec.model_dump(mode="json"), "device": device.model_dump(mode="json")},
        progress=progress,
    )  # fmt: skip
    saved = read_checkpoint(directory)
    model.eval()
    with torch.no_grad():
        correct = int((model(splits.x_test).argmax(-1) == splits.y_test).sum())
    return {
        "test_accuracy": correct / len(splits.x_test),
        "best_epoch": int(saved["best_epoch"]),
        "history": [{"epoch": int(h["epoch"]), "val_accuracy": float(h["val_accuracy"])} for h in saved["history"]],
    }


def run_pulsed_mnist(config: PulsedMnistConfig, run: RunFolder, *, progress: bool, prepared: StudyBackends) -> TaskOutcome:
    """Every (run, seed) in order; finished trainings are kept and read back."""
    from inmaterio.studies.common import Finished

    task, splits = config.task, prepared.extra["splits"]
    done = Finished(run)
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        for spec in task.runs:
            for seed in range(task.seeds):
                key = f"{spec.name}/seed_{seed}"
                if key not in done:
                    done.save(key, _train_one(config, spec, seed, run, splits, progress))
    finally:
        torch.set_num_threads(saved_threads)
    results = []
    for spec in task.runs:
        per_seed = [done[f"{spec.name}/seed_{s}"] for s in range(task.seeds)]
        test = np.array([p["test_accuracy"] for p in per_seed])
        last_val = np.array([p["history"][-1]["val_accuracy"] for p in per_seed])
        results.append({
            "name": spec.name, "run": spec.model_dump(mode="json"), "describe": spec.describe(),
            "test_accuracy": {"mean": float(test.mean()), "std": float(test.std(ddof=1)) if len(test) > 1 else 0.0},
            "last_epoch_val_accuracy": float(last_val.mean()), "per_seed": per_seed,
        })  # fmt: skip
    _figure(run, task, results)
    if any(spec.states is not None for spec in task.runs):
        _states_figure(run, task, results)
    device = task.pulsed_device()
    metrics = {
        "study": "pulsed_mnist",
        "network": "-".join(str(n) for n in (task.crop * task.crop, *task.hidden, 10)),
        "activation": task.activation,
        "device": device.model_dump(mode="json"),
        "device_name": task.device if isinstance(task.device, str) else device.kind,
        "epochs": task.epochs,
        "seeds": task.seeds,
        "images": {"train": len(splits.x_train[: task.train_size]), "validation": len(splits.x_val), "test": len(splits.x_test)},
        "results": [{k: v for k, v in r.items() if k != "per_seed"} | {"per_seed_test": [p["test_accuracy"] for p in r["per_seed"]]}
                    for r in results],
        "threads": config.threads,
    }  # fmt: skip
    columns = ["run", "update", "learning rate", "epochs", "test accuracy %", "val. accuracy % (last epoch)"]
    rows = [
        [r["name"], r["describe"], f"{r['run']['learning_rate']:g}", str(r["run"]["epochs"] or task.epochs),
         f"{100 * r['test_accuracy']['mean']:.2f} ± {100 * r['test_accuracy']['std']:.2f}",
         f"{100 * r['last_epoch_val_accuracy']:.2f}"]
        for r in results
    ]  # fmt: skip
    curves = {
        f"{r['name']} seed {s}": [{"step": h["epoch"], "val_accuracy": h["val_accuracy"]} for h in p["history"]]
        for r in results
        for s, p in enumerate(r["per_seed"])
    }
    title = f"MNIST {metrics['network']} on pulsed devices ({metrics['device_name']})"
    return TaskOutcome(metrics, {}, title, columns, rows, curves)


def _figure(run: RunFolder, task: PulsedMnistTask, results: list[dict[str, Any]]) -> None:
    """``accuracy_vs_epoch.png``: validation accuracy per epoch (mean over seeds) of every run."""
    from matplotlib.figure import Figure

    from inmaterio.plots import save_figure

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.subplots()
    for r in results:
        curves = np.array([[h["val_accuracy"] for h in p["history"]] for p in r["per_seed"]])
        epochs = np.arange(1, curves.shape[1] + 1)
        ax.plot(epochs, 100 * curves.mean(0), marker="o", ms=3, label=f"{r['name']}: {r['describe']}")
    ax.set(
        xlabel="epoch",
        ylabel="validation accuracy / %",
        title=f"MNIST on pulsed devices ({task.device if isinstance(task.device, str) else 'custom'})",
    )
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    save_figure(fig, run.file("accuracy_vs_epoch.png"))


def _states_figure(run: RunFolder, task: PulsedMnistTask, results: list[dict[str, Any]]) -> None:
    """``error_vs_states.png``: test error (mean ± std over seeds) against the number of states, one line per update."""
    from matplotlib.figure import Figure

    from inmaterio.plots import save_figure

    families: dict[str, list[tuple[float, float, float]]] = {}
    for spec, r in zip(task.runs, results):
        if spec.states is not None:
            label = spec.model_copy(update={"states": None}).describe()
            error = 100 * (1 - r["test_accuracy"]["mean"])
            families.setdefault(label, []).append((spec.states, error, 100 * r["test_accuracy"]["std"]))
    fig = Figure(figsize=(6.0, 4.2), layout="constrained")
    ax = fig.subplots()
    for label, points in families.items():
        states, error, std = (np.array(v) for v in zip(*sorted(points)))
        ax.errorbar(states, error, yerr=std, marker="o", ms=4, capsize=2, label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set(xlabel="device states (w_max - w_min) / dw_min", ylabel="test error / %", title="test error vs number of states")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, run.file("error_vs_states.png"))


def report_pulsed_mnist(runs: list[FinishedRun]) -> str:
    """Markdown: each run's table with its settings and figure."""
    from inmaterio.tasks.report import markdown_table

    sections = []
    for run in runs:
        m, table = run.metrics, run.metrics["table"]
        sections.append(
            f"### {table['title']} (`{run.path}`)\n\n"
            f"Test accuracy (%) on {m['images']['test']} images of the weights with the best validation accuracy, mean ± std "
            f"over {m['seeds']} seed(s); {m['images']['train']} training images, {m['activation']} hidden units, ideal "
            f"periphery. {run.record.get('wall_s', 0.0) / 60:.1f} min wall; `inmaterio run {run.path / 'config.yaml'} --out {run.path}`.\n\n"
            + markdown_table(table["columns"], table["rows"])
            + f"\n\n![validation accuracy per epoch]({run.path / 'accuracy_vs_epoch.png'})"
            + (f"\n\n![test error vs states]({run.path / 'error_vs_states.png'})" if (run.path / "error_vs_states.png").exists() else "")
        )  # fmt: skip
    return "\n\n".join(sections)
