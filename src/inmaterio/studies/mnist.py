"""MNIST with 10 DNPU nodes (Ruiz Euler et al. 2021, experiment 3) as a task: ``inmaterio run examples/mnist_10dnpu.yaml``.

Network (one run = one network, one recipe)::

    Flatten -> Linear(784, 10 m, bias=False) -> [BatchNorm1d(10 m), if batch_norm]
            -> DNPU layer of 10 nodes on the surrogate, m inputs each (node k takes linear outputs k m .. k m + m - 1)
            -> logits = logit_scale * (10 node currents, nA) [+ a bias per class, if learn_scale]

``m = 3``: inputs on e0, e3, e4; e1, e2, e5, e6 are learnable control
voltages (clamped to their ranges after every step). ``m = 7``: every
activation electrode is an input; the nodes have no controls and only the
linear layer learns. ``data_range: d`` maps the linear outputs in
``(-d, d)`` onto each input electrode's voltage range. The baseline
``model: relu`` replaces the DNPU layer by ReLU -> Linear(10 m, 10) (30 or
70 hidden units).

Recipes (``task.recipe``; any setting can be given to override it)::

    paper   Adam, learning rate 1e-3, batch 64, constant rate, weight decay 0.1 on the linear layer only
            (Adam's L2 form), data range 1, logits = the currents in nA (scale 1), no noise
    ours    AdamW (decoupled weight decay 0.1 on the linear layer), one-cycle schedule (peak 1e-2, warm-up
            over 10% of the steps, cosine down), batch 128, BatchNorm1d before the DNPU, data range 2,
            learnable logit scale (start 0.1 per nA) and class bias, surrogate output noise (its test RMSE)
            while training

Training is :func:`inmaterio.training.gd.train_gd` (cross-entropy, the
schedule as a per-step scheduler, model selection by validation accuracy,
its run folder ``<run>/training`` with a checkpoint after every epoch, so an
interrupted run resumes bit for bit). Data: :func:`inmaterio.data.mnist.mnist_splits`
of ``data.dir`` (null: ``$INMATERIO_MNIST_DIR``): 55,000 training / 5,000
validation images (seeded permutation), 10,000 test images, pixels in
[-0.5, 0.5]. The test set is evaluated once, with the selected weights, on
the surrogate without output noise.

The run folder holds ``metrics.json`` (accuracies, confusion matrix, the
resolved settings), ``history.json`` (one row per epoch), ``training/``
(the trainer's run), ``confusion.png`` and ``learning_curve.png``.
``inmaterio report FOLDER ...`` rebuilds the table of several runs (the
paper's numbers beside ours, :func:`report_mnist`).
"""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

from inmaterio.config import StrictModel
from inmaterio.runs import RunFolder
from inmaterio.studies.common import StudyBackends, SurrogateChoice
from inmaterio.tasks.outcome import TaskOutcome
from inmaterio.tasks.registry import FinishedRun, RunnableConfig

__all__ = [
    "INPUTS", "N_NODES", "PAPER", "RECIPES", "Logits", "MnistData", "MnistRecipe", "MnistTask", "MnistConfig", "build_model",
    "first_linear", "lr_factor", "prepare_mnist", "run_mnist", "report_mnist", "with_recipe_settings",
]  # fmt: skip

N_NODES = 10
#: Input electrodes of a node with m inputs.
INPUTS = {3: ("e0", "e3", "e4"), 7: ("e0", "e1", "e2", "e3", "e4", "e5", "e6")}
#: The paper's test accuracies (%), by (model, inputs per node).
PAPER = {("dnpu", 3): 94.7, ("dnpu", 7): 96.1, ("relu", 3): 94.5, ("relu", 7): 96.0}


class MnistRecipe(StrictModel):
    """The training settings of one run.

    optimizer : ``adam`` (weight decay in Adam's L2 form) or ``adamw`` (decoupled).
    learning_rate : of the linear layer and everything but the controls (> 0).
    control_learning_rate : of the DNPU control voltages, V (> 0).
    batch_size : images per step (>= 1).
    schedule : ``constant``, ``cosine`` (to 0 over the run) or ``onecycle`` (see :func:`lr_factor`).
    weight_decay : on the first linear layer only (>= 0).
    batch_norm : BatchNorm1d (affine) between the linear layer and the DNPU layer.
    data_range : d > 0: linear outputs in (-d, d) fill each input electrode's range.
    logit_scale : logits per nA at the start (> 0).
    learn_scale : learn the logit scale and a bias per class.
    noise : the surrogate's output noise (its test RMSE) while training.
    """

    optimizer: Literal["adam", "adamw"]
    learning_rate: float = Field(gt=0)
    control_learning_rate: float = Field(gt=0)
    batch_size: int = Field(ge=1)
    schedule: Literal["constant", "cosine", "onecycle"]
    weight_decay: float = Field(ge=0)
    batch_norm: bool
    data_range: float = Field(gt=0)
    logit_scale: float = Field(gt=0)
    learn_scale: bool
    noise: bool


RECIPES: dict[str, MnistRecipe] = {
    "paper": MnistRecipe(
        optimizer="adam", learning_rate=1e-3, control_learning_rate=1e-3, batch_size=64, schedule="constant", weight_decay=0.1,
        batch_norm=False, data_range=1.0, logit_scale=1.0, learn_scale=False, noise=False,
    ),
    "ours": MnistRecipe(
        optimizer="adamw", learning_rate=1e-2, control_learning_rate=1e-2, batch_size=128, schedule="onecycle",
        weight_decay=0.1, batch_norm=True, data_range=2.0, logit_scale=0.1, learn_scale=True, noise=True,
    ),
}  # fmt: skip
"""The recipes by name (see the module docstring)."""


def with_recipe_settings(data: Any) -> Any:
    """A raw config mapping with ``settings`` completed from its ``recipe`` (given settings win).

    An unknown recipe is reported by the ``recipe`` field; its settings are then completed from ``ours``.
    """
    if isinstance(data, dict):
        recipe = RECIPES.get(data.get("recipe", "ours"), RECIPES["ours"])
        given = data.get("settings", {})
        if isinstance(given, dict):
            data = {**data, "settings": {**recipe.model_dump(), **given}}
    return data


class MnistTask(StrictModel):
    """The ``task:`` of an MNIST run.

    model : ``dnpu`` (10 DNPU nodes) or ``relu`` (the baseline).
    inputs_per_node : m = 3 or 7.
    recipe : ``paper`` or ``ours``; ``settings`` given here override the recipe's, the rest are filled in
        from it (the run's config.yaml holds every value used).
    epochs : passes over the training set (>= 1).
    """

    type: Literal["mnist_10dnpu"]
    model: Literal["dnpu", "relu"] = "dnpu"
    inputs_per_node: Literal[3, 7] = 3
    recipe: Literal["paper", "ours"] = "ours"
    epochs: int = Field(30, ge=1)
    settings: MnistRecipe

    @model_validator(mode="before")
    @classmethod
    def _fill_in_the_recipe(cls, data: Any) -> Any:
        return with_recipe_settings(data)

    def overrides(self) -> dict[str, Any]:
        """The settings that differ from the recipe's."""
        recipe = RECIPES[self.recipe].model_dump()
        return {k: v for k, v in self.settings.model_dump().items() if recipe[k] != v}


class MnistData(StrictModel):
    """Where the MNIST files are and how they are split.

    dir : the folder with the four IDX files (``.gz`` or not); null: ``$INMATERIO_MNIST_DIR``.
        Not part of the run's identity (the data's SHA-256 is).
    n_validation : validation images drawn from the training images (>= 1).
    split_seed : seed of that draw.
    """

    dir: Path | None = None
    n_validation: int = Field(5000, ge=1)
    split_seed: int = 0


class MnistConfig(RunnableConfig):
    """One MNIST run: task, data, surrogate, torch threads (speed only), seed.

    ``threads`` and ``data.dir`` may change between sessions of a run (a resumed run on other
    threads may round differently in the last bits).
    """

    SPEED_ONLY = {"threads": True, "data": {"dir"}}

    task: MnistTask
    data: MnistData = MnistData()
    surrogate: SurrogateChoice = SurrogateChoice()
    threads: int = Field(1, ge=1)
    seed: int = 0


class Logits(nn.Module):
    """``scale * current_na + bias``: currents (nA) to logits; scale and bias fixed or learnable."""

    def __init__(self, scale: float, learnable: bool, n_classes: int = N_NODES) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(float(scale)), requires_grad=learnable)
        self.bias = nn.Parameter(torch.zeros(n_classes), requires_grad=learnable)

    def forward(self, current_na: torch.Tensor) -> torch.Tensor:
        return self.scale * current_na + self.bias


def build_model(task: MnistTask, processor, n_pixels: int, seed: int) -> nn.Sequential:
    """The network of ``task`` (see the module docstring); ``processor`` is the surrogate (None for relu).

    The weights are drawn from ``seed``; the caller's torch random state is left as it was.
    """
    from inmaterio.nn.dnpu import DNPU

    m, s = task.inputs_per_node, task.settings
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = [nn.Flatten(), nn.Linear(n_pixels, N_NODES * m, bias=False)]
        if task.model == "relu":
            return nn.Sequential(*layers, nn.ReLU(), nn.Linear(N_NODES * m, N_NODES))
        if s.batch_norm:
            layers.append(nn.BatchNorm1d(N_NODES * m))
        layers.append(DNPU(processor, N_NODES, INPUTS[m], (-s.data_range, s.data_range), seed=seed))
        layers.append(Logits(s.logit_scale, s.learn_scale))
        return nn.Sequential(*layers)


def first_linear(model: nn.Module) -> nn.Module:
    """The first linear layer of ``model`` in module order: an ``nn.Linear`` or an analog
    :class:`~inmaterio.crossbars.AnalogLinear` (whose weights are its tiles' parameters).

    Raises
    ------
    ConfigError
        A model without a linear layer.
    """
    from inmaterio.crossbars.layers import AnalogLinear
    from inmaterio.errors import ConfigError

    for module in model.modules():
        if isinstance(module, nn.Linear | AnalogLinear):
            return module
    raise ConfigError(f"{type(model).__name__} has no linear layer (nn.Linear or AnalogLinear)")


def _optimizer(model: nn.Sequential, s: MnistRecipe, _params) -> torch.optim.Optimizer:
    """Weight decay on the first linear layer only (digital or analog); the controls at their own learning rate."""
    linear = [p for p in first_linear(model).parameters() if p.requires_grad]
    groups = [{"params": linear, "weight_decay": s.weight_decay, "lr": s.learning_rate}]
    taken = {id(p) for p in linear}
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in taken]
    controls = [p for n, p in named if n.endswith("controls")]
    others = [p for n, p in named if not n.endswith("controls")]
    if controls:
        groups.append({"params": controls, "weight_decay": 0.0, "lr": s.control_learning_rate})
    if others:
        groups.append({"params": others, "weight_decay": 0.0, "lr": s.learning_rate})
    return (torch.optim.AdamW if s.optimizer == "adamw" else torch.optim.Adam)(groups)


def lr_factor(schedule: str, step: int, total: int) -> float:
    """Multiplier of the base learning rates at optimiser step ``step`` (0-based) of ``total``.

    ``constant``: 1. ``cosine``: ``(1 + cos(pi t)) / 2`` with ``t = step / total``. ``onecycle``:
    linear from 0.04 to 1 over the first 10% of the steps, then cosine from 1 down to 1e-4.
    """
    if schedule == "constant":
        return 1.0
    t = min(step / max(total, 1), 1.0)
    if schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * t))
    warm = 0.1
    if t < warm:
        return 0.04 + 0.96 * t / warm
    return 1e-4 + (1 - 1e-4) * 0.5 * (1 + math.cos(math.pi * (t - warm) / (1 - warm)))


def prepare_mnist(config: MnistConfig) -> StudyBackends:
    """Load and split the data and load the surrogate (DNPU model), before any folder is made.

    Raises
    ------
    ConfigError, ModelFileError
        No data folder (neither ``data.dir`` nor ``$INMATERIO_MNIST_DIR``), a missing folder or
        file, a corrupt IDX file (the message names the file and the problem), a validation set
        as large as the training images, a surrogate that cannot be loaded or lacks the input
        electrodes.
    """
    from inmaterio.data.mnist import load_mnist, mnist_splits
    from inmaterio.runs import fingerprint_tensors
    from inmaterio.studies.common import backends_identity, surrogate_processor

    raw = load_mnist(config.data.dir)
    splits = mnist_splits(raw, n_validation=config.data.n_validation, seed=config.data.split_seed)
    identity = {"mnist_sha256": fingerprint_tensors(raw.train_images, raw.train_labels, raw.test_images, raw.test_labels)}
    surrogate = None
    if config.task.model == "dnpu":
        surrogate = surrogate_processor(config.surrogate)
        build_model(
            config.task, surrogate, splits.x_train.shape[1], config.seed
        )  # the electrodes exist (ConfigError naming them)
        identity |= backends_identity(surrogate, None)
    return StudyBackends(surrogate, None, identity, {"splits": splits})


def run_mnist(config: MnistConfig, run: RunFolder, *, progress: bool, prepared: StudyBackends) -> TaskOutcome:
    """Train with :func:`~inmaterio.training.gd.train_gd` in ``<run>/training``, then test the selected weights."""
    from inmaterio.training.gd import GDConfig, train_gd
    from inmaterio.training.losses import cross_entropy
    from inmaterio.training.metrics import accuracy, confusion_matrix

    task, s = config.task, config.task.settings
    data, processor = prepared.extra["splits"], prepared.surrogate
    model = build_model(task, processor, data.x_train.shape[1], config.seed)
    if processor is not None and s.noise:
        processor.set_noise()
    quiet = processor.noise_off if processor is not None else None
    steps = math.ceil(len(data.x_train) / s.batch_size) * task.epochs
    schedule = None if s.schedule == "constant" else partial(_scheduler, s.schedule, steps)
    gd = GDConfig(
        optimizer=s.optimizer, learning_rate=s.learning_rate, epochs=task.epochs, batch_size=s.batch_size,
        regularization_weight=0.0, select_by="val_accuracy", select_mode="max", evaluate_train=False, seed=config.seed,
    )  # fmt: skip
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        result = train_gd(
            model, cross_entropy, data.x_train, data.y_train, gd, optimizer=partial(_optimizer, model, s),
            scheduler=schedule, scheduler_interval="step", validation=(data.x_val, data.y_val),
            metrics={"val_accuracy": lambda out, y: float(accuracy(out, y))}, eval_context=quiet,
            directory=run.subfolder("training"), progress=progress,
        )  # fmt: skip
        test_logits, val_logits = (_evaluate(model, quiet, x) for x in (data.x_test, data.x_val))
    finally:
        torch.set_num_threads(saved_threads)
    test_accuracy = float(accuracy(test_logits, data.y_test))
    confusion = confusion_matrix(test_logits.argmax(-1), data.y_test, N_NODES).tolist()
    _figures(run, result.history, confusion, task, test_accuracy)
    metrics: dict[str, Any] = {
        "study": "mnist_10dnpu",
        "model": task.model,
        "inputs_per_node": task.inputs_per_node,
        "recipe": task.recipe,
        "overrides": task.overrides(),
        "settings": s.model_dump(),
        "epochs": len(result.history),
        "best_epoch": result.best_epoch,
        "val_accuracy": float(accuracy(val_logits, data.y_val)),
        "test_accuracy": test_accuracy,
        "confusion": confusion,
        "images": {"train": len(data.x_train), "validation": len(data.x_val), "test": len(data.x_test)},
        "median_epoch_s": float(torch.tensor([h["time_s"] for h in result.history]).median()),
        "threads": config.threads,
        "paper_test_accuracy_percent": PAPER[(task.model, task.inputs_per_node)],
    }
    curves = {"training": [{"step": h["epoch"], **{k: v for k, v in h.items() if k != "epoch"}} for h in result.history]}
    row = [_network(task), str(task.inputs_per_node), task.recipe, f"{metrics['epochs']} ({result.best_epoch})",
           f"{100 * metrics['val_accuracy']:.2f}%", f"{100 * test_accuracy:.2f}%", f"{PAPER[(task.model, task.inputs_per_node)]}%"]  # fmt: skip
    return TaskOutcome(metrics, {}, "MNIST with 10 DNPUs", COLUMNS[:7], [row], curves)


def _scheduler(schedule: str, total: int, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, schedule, total=total))


def _evaluate(model: nn.Module, quiet, x: torch.Tensor, chunk: int = 5000) -> torch.Tensor:
    """Logits ``(n, 10)`` in eval mode, without gradients and without output noise."""
    import contextlib

    model.eval()
    with torch.no_grad(), quiet() if quiet is not None else contextlib.nullcontext():
        return torch.cat([model(x[i : i + chunk]) for i in range(0, len(x), chunk)])


def _network(task: MnistTask) -> str:
    return "10 DNPUs" if task.model == "dnpu" else f"ReLU ({N_NODES * task.inputs_per_node} hidden)"


def _figures(run: RunFolder, history: list[dict], confusion: list[list[int]], task: MnistTask, test_accuracy: float) -> None:
    """``confusion.png`` (log counts) and ``learning_curve.png`` (losses and validation accuracy per epoch)."""
    import numpy as np
    from matplotlib.figure import Figure

    from inmaterio.plots import save_figure

    cm = np.array(confusion)
    fig = Figure(figsize=(5, 4.3), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(np.log10(cm + 1), cmap="viridis")
    for i in range(len(cm)):
        for j in range(len(cm)):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=6, color="white" if i != j else "black")
    ax.set_xticks(range(len(cm)))
    ax.set_yticks(range(len(cm)))
    ax.set_xlabel("predicted digit")
    ax.set_ylabel("true digit")
    ax.set_title(
        f"{_network(task)}, {task.inputs_per_node} inputs/node, {task.recipe}: test {100 * test_accuracy:.2f}%", fontsize=9
    )
    fig.colorbar(image, ax=ax, label="log10(count + 1)")
    save_figure(fig, run.file("confusion.png"))

    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    epochs = [h["epoch"] for h in history]
    ax_loss.plot(epochs, [h["train_loss"] for h in history], label="training (mean over the epoch's batches)")
    ax_loss.plot(epochs, [h["val_loss"] for h in history], linestyle=":", label="validation")
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("cross-entropy")
    ax_acc.plot(epochs, [100 * h["val_accuracy"] for h in history])
    ax_acc.set_ylabel("validation accuracy / %")
    for ax in (ax_loss, ax_acc):
        ax.set_xlabel("epoch")
    ax_loss.legend(fontsize=7)
    save_figure(fig, run.file("learning_curve.png"))


COLUMNS = [
    "network",
    "inputs/node",
    "recipe",
    "epochs (best)",
    "val acc",
    "test acc",
    "paper",
    "epoch s (median)",
    "threads",
    "run",
]


def report_mnist(runs: list[FinishedRun]) -> str:
    """Markdown: the table of all runs beside the paper's numbers, their settings, the best DNPU runs' confusion matrices."""
    from inmaterio.tasks.report import markdown_table

    order = {"dnpu": 0, "relu": 1}
    runs = sorted(runs, key=lambda r: (r.metrics["inputs_per_node"], order[r.metrics["model"]], r.metrics["recipe"], str(r.path)))
    rows, commands = [], []
    for run in runs:
        m = run.metrics
        network = "10 DNPUs" if m["model"] == "dnpu" else f"ReLU ({N_NODES * m['inputs_per_node']} hidden)"
        recipe = m["recipe"] + "".join(f", {k} {v}" for k, v in m["overrides"].items())
        rows.append([
            network, m["inputs_per_node"], recipe, f"{m['epochs']} ({m['best_epoch']})", f"{100 * m['val_accuracy']:.2f}%",
            f"**{100 * m['test_accuracy']:.2f}%**", f"{m['paper_test_accuracy_percent']}%", f"{m['median_epoch_s']:.1f}",
            m["threads"], f"`{run.path}`",
        ])  # fmt: skip
        commands.append(f"- `{run.path}` ({run.record.get('wall_s', 0.0) / 60:.1f} min wall, inmaterio "
                        f"{run.record.get('package_version')}): `inmaterio run {run.path / 'config.yaml'} --out {run.path}`; "
                        f"settings: {', '.join(f'{k} {v}' for k, v in m['settings'].items())}")  # fmt: skip
    images = runs[0].metrics["images"] if runs else {}
    lines = [
        "### MNIST with 10 DNPUs",
        "",
        f"Test accuracy on the {images.get('test')} test images with the weights of the best validation epoch "
        f"({images.get('train')} training / {images.get('validation')} validation images); evaluated on the surrogate "
        "without output noise. `epoch s`: median wall time of an epoch (training pass and validation), one process with "
        "`threads` torch threads.",
        "",
        markdown_table(COLUMNS, rows),
        "",
        "Runs:",
        "",
        *commands,
    ]
    best: dict[int, FinishedRun] = {}
    for run in runs:
        m = run.metrics
        if m["model"] == "dnpu" and (
            m["inputs_per_node"] not in best or m["val_accuracy"] > best[m["inputs_per_node"]].metrics["val_accuracy"]
        ):
            best[m["inputs_per_node"]] = run
    for mm, run in sorted(best.items()):
        cm = run.metrics["confusion"]
        lines += ["", f"Confusion matrix, {mm} inputs per node (`{run.path}`, test {100 * run.metrics['test_accuracy']:.2f}%):", "",
                  markdown_table(["true \\ predicted", *map(str, range(len(cm)))],
                                 [[f"**{i}**", *(f"**{v}**" if i == j else str(v) for j, v in enumerate(row))] for i, row in enumerate(cm)]),
                  "", f"![confusion m={mm}]({run.path / 'confusion.png'}) ![learning curve]({run.path / 'learning_curve.png'})"]  # fmt: skip
    return "\n".join(lines)
