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

With ``validation: {enabled: true}`` the trained network is then measured on a
device (null spec: the virtual DNPU the surrogate was made from) on the first
``validation.test_images`` test images: the nodes' operating points (10 per
image) are measured once (``device/trained.npz``, read back on resume) and
their currents go through the network's read-out; ``metrics.json`` gains
``device`` (surrogate and device accuracy on those images, their paired
difference, the RMS node-current difference). With ``task.refine`` the
surrogate is then refined where the nodes operate on the training images, the
network re-trained on the refined copy and measured again (``refinement``,
``refined_test_accuracy``, ``device_refined``, ``device_refined_minus_trained``;
files in ``refinement/`` and ``device/refined.npz``).

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
from pydantic import Field, model_serializer, model_validator
from torch import nn

from inmaterio.config import StrictModel
from inmaterio.runs import RunFolder
from inmaterio.studies.common import DeviceChoice, StudyBackends, SurrogateChoice
from inmaterio.tasks.config import RefinementConfig
from inmaterio.tasks.outcome import TaskOutcome
from inmaterio.tasks.registry import FinishedRun, RunnableConfig

__all__ = [
    "INPUTS", "N_NODES", "PAPER", "RECIPES", "Logits", "MnistData", "MnistRecipe", "MnistTask", "MnistConfig", "MnistValidation",
    "build_model",
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
    refine : task-aware refinement of the surrogate where the nodes operate, after training
        (:class:`~inmaterio.tasks.config.RefinementConfig`; ``candidates`` is not used): each round
        measures the validation device at ``max_operating_points`` node operating points of the
        training images (and neighbours), fine-tunes a copy of the surrogate on every point measured
        so far and re-trains the network on it for ``retrain_epochs`` epochs (the recipe's optimiser
        and schedule over those epochs), its controls kept within ``radius_v`` of the trained ones.
        Needs ``validation.enabled``. Null (the default): no refinement; left out of the dumped config.
    """

    type: Literal["mnist_10dnpu"]
    model: Literal["dnpu", "relu"] = "dnpu"
    inputs_per_node: Literal[3, 7] = 3
    recipe: Literal["paper", "ours"] = "ours"
    epochs: int = Field(30, ge=1)
    settings: MnistRecipe
    refine: RefinementConfig | None = None

    @model_serializer(mode="wrap")
    def _dump_without_unused_refinement(self, handler) -> dict[str, Any]:
        data = handler(self)
        if self.refine is None:
            data.pop("refine", None)
        return data

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


class MnistValidation(StrictModel):
    """The trained DNPU network measured on a device, on the first ``test_images`` test images.

    enabled : measure (``model: dnpu`` only). A virtual DNPU takes tens of ms per node and image
        (10 nodes per image), so the default 1,000 images are minutes of device time.
    device : the device (:class:`~inmaterio.studies.common.DeviceChoice`; ``spec: null`` = the
        virtual DNPU of the surrogate's provenance).
    test_images : how many test images, from the first (>= 1, at most the test set).

    Left out of the dumped config while every field has its default.
    """

    enabled: bool = False
    device: DeviceChoice = DeviceChoice()
    test_images: int = Field(1000, ge=1)


class MnistConfig(RunnableConfig):
    """One MNIST run: task, data, surrogate, validation on a device, torch threads (speed only), seed.

    ``threads``, ``data.dir`` and ``validation.device.threads`` may change between sessions of a
    run (a resumed run on other threads may round differently in the last bits).
    """

    SPEED_ONLY = {"threads": True, "data": {"dir"}, "validation": {"device": {"threads"}}}

    task: MnistTask
    data: MnistData = MnistData()
    surrogate: SurrogateChoice = SurrogateChoice()
    validation: MnistValidation = MnistValidation()
    threads: int = Field(1, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _device_where_measured(self) -> MnistConfig:
        if self.validation.enabled and self.task.model != "dnpu":
            raise ValueError(
                f"validation.enabled: true measures DNPUs on a device; task.model '{self.task.model}' has none "
                "(set task.model: dnpu or validation.enabled: false)"
            )
        if self.task.refine is not None and not self.validation.enabled:
            raise ValueError("task.refine measures the device where the nodes operate: set validation.enabled: true")
        return self

    @model_serializer(mode="wrap")
    def _dump_without_unused_validation(self, handler) -> dict[str, Any]:
        data = handler(self)
        if self.validation == MnistValidation():
            data.pop("validation", None)
        return data


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
    from inmaterio.errors import ConfigError
    from inmaterio.runs import fingerprint_tensors
    from inmaterio.studies.common import backends_identity, device_processor, surrogate_processor

    raw = load_mnist(config.data.dir)
    splits = mnist_splits(raw, n_validation=config.data.n_validation, seed=config.data.split_seed)
    identity = {"mnist_sha256": fingerprint_tensors(raw.train_images, raw.train_labels, raw.test_images, raw.test_labels)}
    surrogate = device = None
    if config.task.model == "dnpu":
        surrogate = surrogate_processor(config.surrogate)
        build_model(
            config.task, surrogate, splits.x_train.shape[1], config.seed
        )  # the electrodes exist (ConfigError naming them)
        if config.validation.enabled:
            if config.validation.test_images > len(splits.x_test):
                raise ConfigError(
                    f"validation.test_images = {config.validation.test_images} is more than the "
                    f"{len(splits.x_test)} test images; give at most {len(splits.x_test)}"
                )
            device = device_processor(config.validation.device, surrogate)
        identity |= backends_identity(surrogate, device)
    return StudyBackends(surrogate, device, identity, {"splits": splits})


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
    on_device: dict[str, Any] = {}
    if prepared.device is not None:
        saved_threads = torch.get_num_threads()
        torch.set_num_threads(config.threads)
        try:
            on_device = _on_device(config, model, processor, prepared.device, data, run, train_gd, progress)
        finally:
            torch.set_num_threads(saved_threads)
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
        **on_device,
    }
    curves = {"training": [{"step": h["epoch"], **{k: v for k, v in h.items() if k != "epoch"}} for h in result.history]}
    row = [_network(task), str(task.inputs_per_node), task.recipe, f"{metrics['epochs']} ({result.best_epoch})",
           f"{100 * metrics['val_accuracy']:.2f}%", f"{100 * test_accuracy:.2f}%", f"{PAPER[(task.model, task.inputs_per_node)]}%"]  # fmt: skip
    columns = COLUMNS[:7]
    if "device" in on_device:  # the first test images on the device; the rest of the numbers are in metrics.json
        columns = [*columns, "device acc"]
        row.append(f"{100 * on_device['device']['device_accuracy']:.1f}%")
    if "device_refined" in on_device:
        columns.append("refined device acc")
        row.append(f"{100 * on_device['device_refined']['device_accuracy']:.1f}%")
    return TaskOutcome(metrics, {}, "MNIST with 10 DNPUs", columns, [row], curves)


def _device_sentence(metrics: dict[str, Any]) -> str:
    """One Markdown sentence of a run's device results (``device`` and, if refined, ``device_refined``)."""

    def interval(d: dict[str, float]) -> str:
        return f"{100 * d['difference']:+.1f} points ({100 * d['low']:+.1f} to {100 * d['high']:+.1f})"

    check = metrics["device"]
    text = (
        f"{check['images']} images: surrogate {100 * check['surrogate_accuracy']:.1f}%, device "
        f"**{100 * check['device_accuracy']:.1f}%** ({interval(check['device_minus_surrogate'])}), RMS node current "
        f"difference {check['rms_node_difference_na']:.1f} nA"
    )
    if "device_refined" in metrics:
        after = metrics["device_refined"]
        points = sum(r["device_points"] for r in metrics["refinement"])
        text += (
            f"; after refinement ({len(metrics['refinement'])} round(s), {points} device points): surrogate "
            f"{100 * after['surrogate_accuracy']:.1f}%, device **{100 * after['device_accuracy']:.1f}%** "
            f"({interval(metrics['device_refined_minus_trained'])} on the device), RMS node current difference "
            f"{after['rms_node_difference_na']:.1f} nA; whole test set on the refined surrogate "
            f"{100 * metrics['refined_test_accuracy']:.2f}%"
        )
    return text


def _on_device(config: MnistConfig, model, surrogate, device, data, run: RunFolder, train_gd, progress: bool) -> dict[str, Any]:
    """The trained network measured on ``device`` (``validation``), then refined (``task.refine``) and measured again.

    Returns the metrics ``device`` (:func:`_device_check` of the trained network), and with
    ``task.refine`` also ``refinement`` (one record per round), ``refined_test_accuracy`` (the whole
    test set on the last refined surrogate), ``device_refined`` and ``device_refined_minus_trained``
    (the paired difference of the device accuracies on the same images, with its 95% interval).
    """
    from inmaterio.training.metrics import accuracy, paired_accuracy_difference

    x, y = data.x_test[: config.validation.test_images], data.y_test[: config.validation.test_images]
    before, correct_before = _device_check(model, surrogate, device, x, y, run.path / "device" / "trained.npz", progress)
    results: dict[str, Any] = {"device": before}
    if config.task.refine is None:
        return results
    refined, rounds = _refine(config, model, surrogate, device, data, run, train_gd, progress)
    after, correct_after = _device_check(model, refined, device, x, y, run.path / "device" / "refined.npz", progress)
    difference = paired_accuracy_difference(correct_after, correct_before)
    quiet = refined.noise_off
    return results | {
        "refinement": rounds,
        "refined_test_accuracy": float(accuracy(_evaluate(model, quiet, data.x_test), data.y_test)),
        "device_refined": after,
        "device_refined_minus_trained": {"difference": difference.difference, "low": difference.low, "high": difference.high},
    }


def _device_check(model, surrogate, device, x: torch.Tensor, y: torch.Tensor, path: Path, progress: bool):
    """The network on ``surrogate`` (without output noise) and on ``device`` for the images ``x``.

    The nodes' operating points ``(images * 10, electrodes)`` are measured once and kept in ``path``
    (read back on resume, :func:`~inmaterio.tasks.refinement.measure_plan`); the device's node
    currents go through the network's read-out (the :class:`Logits` layer). Returns the JSON-ready
    results and the per-image correctness on the device ``(images,)``.
    """
    from inmaterio.tasks.refinement import measure_plan
    from inmaterio.tasks.rings import operating_points
    from inmaterio.training.metrics import paired_accuracy_difference

    model.eval()
    with surrogate.noise_off():
        volts = operating_points(model, x)  # row i * 10 + k: node k on image i
        with torch.no_grad():
            surrogate_na = surrogate(volts).reshape(len(x), N_NODES)
    measured = measure_plan(device, volts.double().numpy(), path, ("mnist",), progress, stream="validation")
    device_na = torch.as_tensor(measured, dtype=surrogate_na.dtype).reshape(len(x), N_NODES)
    readout = model[-1]
    with torch.no_grad():
        correct_device = readout(device_na).argmax(-1) == y
        correct_surrogate = readout(surrogate_na).argmax(-1) == y
    difference = paired_accuracy_difference(correct_device, correct_surrogate)
    return {
        "images": len(x),
        "surrogate_accuracy": float(correct_surrogate.double().mean()),
        "device_accuracy": float(correct_device.double().mean()),
        "device_minus_surrogate": {"difference": difference.difference, "low": difference.low, "high": difference.high},
        "rms_node_difference_na": float((device_na - surrogate_na).pow(2).mean().sqrt()),
    }, correct_device


def _refine(config: MnistConfig, model, surrogate, device, data, run: RunFolder, train_gd, progress: bool):
    """Rounds of ``task.refine`` (see :class:`MnistTask`); returns the last refined surrogate's processor and the rounds.

    The model is left on the refined surrogate with the re-trained weights of the best validation
    epoch; the measurements are kept in ``<run>/refinement/round_<k>.npz``, each re-training is the
    resumable run folder ``<run>/refinement/retrain_<k>``, the last refined surrogate is saved to
    ``<run>/refinement/surrogate``.
    """
    from inmaterio.nn import dnpu_layers, set_processor
    from inmaterio.surrogate import save_surrogate
    from inmaterio.tasks.refinement import refined_processor, refinement_round, round_centres
    from inmaterio.training.gd import GDConfig
    from inmaterio.training.losses import cross_entropy
    from inmaterio.training.metrics import accuracy

    s, refine = config.task.settings, config.task.refine
    for layer in dnpu_layers(model):  # the trust region: the controls stay in the box the refined surrogate is fitted in
        layer.keep_controls_within(refine.radius_v)
    measured, rounds, processor = [], [], surrogate
    for r in range(refine.rounds):
        centres = round_centres(model, processor, data.x_train, refine.max_operating_points, config.seed, r)
        refined, n_points = refinement_round(refine, surrogate, device, centres, measured, r, config.seed, run.path, progress)
        processor = refined_processor(refined, surrogate)  # the training noise carried over
        set_processor(model, processor)
        steps = math.ceil(len(data.x_train) / s.batch_size) * refine.retrain_epochs
        gd = GDConfig(
            optimizer=s.optimizer, learning_rate=s.learning_rate, epochs=refine.retrain_epochs, batch_size=s.batch_size,
            regularization_weight=0.0, select_by="val_accuracy", select_mode="max", evaluate_train=False,
            seed=config.seed + 1000 + r,
        )  # fmt: skip
        retrained = train_gd(
            model, cross_entropy, data.x_train, data.y_train, gd, optimizer=partial(_optimizer, model, s),
            scheduler=None if s.schedule == "constant" else partial(_scheduler, s.schedule, steps),
            scheduler_interval="step", validation=(data.x_val, data.y_val),
            metrics={"val_accuracy": lambda out, y: float(accuracy(out, y))}, eval_context=processor.noise_off,
            directory=run.path / "refinement" / f"retrain_{r + 1}", progress=progress,
        )  # fmt: skip
        rounds.append({
            "round": r + 1, "device_points": n_points, **refined.summary(), "retrain_best_epoch": retrained.best_epoch,
            "retrain_val_accuracy": (
                float(retrained.history[retrained.best_epoch - 1]["val_accuracy"]) if retrained.best_epoch >= 1 else None
            ),
        })  # fmt: skip
    save_surrogate(
        refined.model, run.path / "refinement" / "surrogate", overwrite=True,
        metadata={"refined_from": surrogate.model.metadata, "refinement": rounds},
    )  # fmt: skip
    return processor, rounds


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
    measured = [run for run in runs if "device" in run.metrics]
    if measured:
        lines += ["", "Measured on a device (the first test images; paired differences with 95% bootstrap intervals):", ""]
    for run in measured:
        lines.append(f"- `{run.path}`: {_device_sentence(run.metrics)}")
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
