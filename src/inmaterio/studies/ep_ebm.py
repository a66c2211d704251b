r"""EP beyond circuits: discrete-time energy-based networks on MNIST, EP estimators against BPTT.

Laborieux et al., *Scaling Equilibrium Propagation to Deep ConvNets by Drastically Reducing its Gradient
Estimator Bias*, Front. Neurosci. 15, 633674 (2021). The networks, dynamics and estimators are those of
:mod:`inmaterio.ebm`: a layered MLP (``network.kind: mlp``, 784-512-10 by default) or the small ConvNet with
max-pooling (``convnet``, 1-32-64-10, 5 x 5 kernels, 2 x 2 pooling), a softmax readout outside the dynamics
(``loss: cross_entropy``) or output units inside them (``squared_error``), trained with every entry of
``estimators``:

- ``bptt``: the free phase of ``T`` steps unrolled with autograd (the reference);
- ``one_sided``: free phase, one nudged phase of ``K`` steps at +``beta``;
- ``random_sign``: the same with the sign of beta drawn per batch;
- ``symmetric``: nudged phases at +``beta`` and -``beta``;
- ``symmetric_kpvf``: ``symmetric`` with separate feedback weights aligned by Kolen-Pollack (leak ``kp_decay``
  on forward and feedback weights); the angle between them is reported per epoch.

Every estimator fills ``.grad`` with an estimate of the gradient of the batch-mean cost;
:class:`torch.optim.SGD` (momentum ``momentum``, one learning rate per weight layer: ``learning_rates``, first
layer first, readout last) takes the step. The recipe of each ``network.kind`` fills the keys not given. MLP:
the output units in the dynamics (squared error) with the smooth sigmoid, T = 30, K = 10, beta = 0.1, batch 50
and plain SGD with rates 0.08 / 0.04 (the fully connected MNIST setting and command of the article's authors,
Ernoult et al. 2019 and ``Laborieux-Axel/Equilibrium-Propagation``); with momentum 0.9 at rates 0.1 / 0.05, BPTT
diverges within a few epochs on the full training set while EP does not (RESULTS.md). With the hard sigmoid and the squared
error, an output unit clipped at 0 (or 1) on the wrong side has a zero derivative, so BPTT cannot move it, while
EP's finite nudge can bring it back into range; BPTT then often learns markedly slower than EP (1 epoch on
10,000 images: 19-27 % vs 8-11 % validation error in three of four settings tried), which is why the MLP recipe
uses the smooth sigmoid. ConvNet: softmax
readout, hard sigmoid, T = 200, K = 10, beta = 0.4, batch 100 (the authors' MNIST ConvNet command), SGD with
momentum 0.9 as in the article's CIFAR-10 runs, rates 0.1 / 0.05 / 0.02 ours (2,000 images, T = 60: 22 %
validation error after one pass). Check all of them against the article's Table 3 before a reproduction is quoted.

Data: :func:`inmaterio.data.mnist.mnist_splits` (55,000 training, 5,000 validation, 10,000 test images; pixels
in [0, 1]); ``train_size`` keeps the first training images. Every (estimator, seed) trains from the same
initial weights and sees the same batches (streams keyed by seed and epoch), is checkpointed after every
epoch (weights, optimiser state, history) and resumes there: an interrupted study gives the numbers of an
uninterrupted one. The test error is that of the weights after the last epoch. Every evaluation also counts the
images whose free phase has not settled after ``T`` steps (a unit that one more step would move by more than
1e-3, e.g. a cycle of the synchronous dynamics): EP's estimate assumes a fixed point, BPTT's gradient does not.
Before training, the per-step EP estimates after ``k = 1 .. K`` nudged steps are compared with the BPTT gradient
truncated to the last ``k`` steps (:mod:`inmaterio.ebm.gdu`) on ``gdu.images`` training images with the untrained
network of seed 0.

Run folder: ``metrics.json`` (test error per estimator, mean and std over seeds; the per-step comparison),
``history.json`` (per epoch, ``val_unsettled`` among them), ``learning_curves.png``, ``ep_vs_bptt_per_step.png``,
and the weights after the last epoch of every (estimator, seed), ``weights_<estimator>_seed_<seed>.pt``
(:func:`load_trained_network` rebuilds the network from one).
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator

from inmaterio.config import StrictModel
from inmaterio.ebm.activations import Activation
from inmaterio.ebm.estimators import Estimator
from inmaterio.ebm.network import Loss
from inmaterio.runs import RunFolder
from inmaterio.studies.common import StudyBackends
from inmaterio.studies.mnist import MnistData
from inmaterio.tasks.outcome import TaskOutcome
from inmaterio.tasks.registry import FinishedRun, RunnableConfig

__all__ = [
    "RECIPES",
    "MLPNetwork",
    "ConvNetwork",
    "GDUSettings",
    "EPEBMTask",
    "EPEBMConfig",
    "build_network",
    "weights_file_name",
    "load_trained_network",
    "prepare_ep_ebm",
    "run_ep_ebm",
    "report_ep_ebm",
]

#: Keys a task does not give, by ``network.kind`` (see the module docstring for where they come from).
RECIPES: dict[str, dict[str, Any]] = {
    "mlp": {
        "network": {"hidden": [512], "activation": "sigmoid", "loss": "squared_error"},
        "T": 30, "K": 10, "beta": 0.1, "batch_size": 50, "learning_rates": [0.08, 0.04], "momentum": 0.0,
    },
    "convnet": {
        "network": {"channels": [32, 64], "kernel_size": 5, "pool": 2, "activation": "hard_sigmoid", "loss": "cross_entropy"},
        "T": 200, "K": 10, "beta": 0.4, "batch_size": 100, "learning_rates": [0.1, 0.05, 0.02], "momentum": 0.9,
    },
}  # fmt: skip

_LABELS = {
    "bptt": "BPTT",
    "one_sided": "EP one-sided",
    "random_sign": "EP random sign",
    "symmetric": "EP symmetric",
    "symmetric_kpvf": "EP symmetric, KP vector field",
}


class MLPNetwork(StrictModel):
    """A layered fully connected network: 784 inputs, ``hidden`` widths, 10 classes.

    activation : sigma (``hard_sigmoid`` | ``sigmoid`` | ``tanh``).
    loss : ``cross_entropy`` (softmax readout outside the dynamics) or ``squared_error`` (10 output units inside).
    """

    kind: Literal["mlp"]
    hidden: tuple[int, ...] = Field(min_length=1)
    activation: Activation
    loss: Loss

    @field_validator("hidden")
    @classmethod
    def _positive(cls, hidden: tuple[int, ...]) -> tuple[int, ...]:
        if min(hidden) < 1 or max(hidden) > 100_000:
            raise ValueError(f"hidden widths must be in [1, 100000], got {list(hidden)}")
        return hidden

    def weight_layers(self) -> int:
        return len(self.hidden) + 1

    def describe(self) -> str:
        return "-".join(str(n) for n in (784, *self.hidden, 10))


class ConvNetwork(StrictModel):
    """A ConvNet on 1 x 28 x 28 images: ``channels`` convolutional layers (``kernel_size`` x ``kernel_size``, no
    padding, then ``pool`` x ``pool`` max-pooling), then 10 classes (readout or output units, as ``loss``)."""

    kind: Literal["convnet"]
    channels: tuple[int, ...] = Field(min_length=1)
    kernel_size: int = Field(ge=1, le=27)
    pool: int = Field(ge=1, le=14)
    activation: Activation
    loss: Loss

    @field_validator("channels")
    @classmethod
    def _positive(cls, channels: tuple[int, ...]) -> tuple[int, ...]:
        if min(channels) < 1 or max(channels) > 4096:
            raise ValueError(f"channels must be in [1, 4096], got {list(channels)}")
        return channels

    @model_validator(mode="after")
    def _fits_the_image(self) -> ConvNetwork:
        from inmaterio.ebm.convnet import conv_state_shapes
        from inmaterio.errors import ConfigError

        try:
            conv_state_shapes((1, 28, 28), self.channels, self.kernel_size, self.pool)
        except ConfigError as err:
            raise ValueError(str(err)) from None
        return self

    def weight_layers(self) -> int:
        return len(self.channels) + 1

    def describe(self) -> str:
        return "-".join(str(n) for n in (1, *self.channels, 10)) + f" conv{self.kernel_size}, pool{self.pool}"


class GDUSettings(StrictModel):
    """The per-step EP-vs-BPTT comparison before training.

    images : training images it uses (0: skip it).
    beta : the nudging strength (null: the task's beta).
    traces : parameters drawn per weight layer in the figure (those with the largest BPTT gradient).
    """

    images: int = Field(20, ge=0, le=10_000)
    beta: float | None = Field(None, gt=0, le=100)
    traces: int = Field(4, ge=1, le=20)


#: ``network:`` of a task or a weights file: an MLP or a ConvNet, told apart by ``kind``.
NetworkSpec = Annotated[MLPNetwork | ConvNetwork, Field(discriminator="kind")]


class EPEBMTask(StrictModel):
    """The ``task:`` of the study (module docstring; keys not given come from ``RECIPES[network.kind]``).

    network : ``{kind: mlp, ...}`` or ``{kind: convnet, ...}``.
    estimators : trainings per seed (no repeats): bptt, one_sided, random_sign, symmetric, symmetric_kpvf.
    T : free-phase steps (>= 1); K : nudged-phase steps (>= 1).
    beta : nudging strength (> 0; the sign is the estimator's).
    epochs, batch_size : of every training.
    learning_rates : one per weight layer (> 0), first layer first, readout last.
    momentum : SGD momentum in [0, 1); weight_decay : on every parameter (>= 0).
    kp_decay : the Kolen-Pollack leak on forward and feedback weights of ``symmetric_kpvf`` (>= 0).
    seeds : seeds 0 .. seeds-1 (initial weights, batches, random signs).
    train_size : the first training images only (>= 1); null: all 55,000.
    gdu : the per-step comparison.
    """

    type: Literal["ep_ebm"]
    network: NetworkSpec
    estimators: tuple[Estimator, ...] = Field(("symmetric", "bptt"), min_length=1)
    T: int = Field(ge=1, le=100_000)
    K: int = Field(ge=1, le=100_000)
    beta: float = Field(gt=0, le=100)
    epochs: int = Field(10, ge=1, le=10_000)
    batch_size: int = Field(ge=1, le=100_000)
    learning_rates: tuple[float, ...] = Field(min_length=1)
    momentum: float = Field(ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0, le=10)
    kp_decay: float = Field(1e-2, ge=0, le=10)
    seeds: int = Field(1, ge=1, le=100)
    train_size: int | None = Field(None, ge=1)
    gdu: GDUSettings = GDUSettings()

    @model_validator(mode="before")
    @classmethod
    def _recipe(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        network = data.get("network", {"kind": "mlp"})
        if not isinstance(network, dict):
            return data
        network = {"kind": "mlp", **network}
        recipe = RECIPES.get(network["kind"])
        if recipe is None:
            return {**data, "network": network}
        return {**{k: v for k, v in recipe.items() if k != "network"}, **data, "network": {**recipe["network"], **network}}

    @field_validator("estimators")
    @classmethod
    def _distinct(cls, estimators: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(estimators)) != len(estimators):
            raise ValueError(f"estimators must not repeat, got {list(estimators)}")
        return estimators

    @field_validator("learning_rates")
    @classmethod
    def _positive_rates(cls, rates: tuple[float, ...]) -> tuple[float, ...]:
        if min(rates) <= 0 or max(rates) > 1e3 or not all(math.isfinite(r) for r in rates):
            raise ValueError(f"learning rates must be in (0, 1000], got {list(rates)}")
        return rates

    @model_validator(mode="after")
    def _one_rate_per_layer(self) -> EPEBMTask:
        if len(self.learning_rates) != self.network.weight_layers():
            raise ValueError(
                f"learning_rates has {len(self.learning_rates)} entries {list(self.learning_rates)}; the network "
                f"{self.network.describe()} has {self.network.weight_layers()} weight layers (readout included): give one each"
            )
        return self


class EPEBMConfig(RunnableConfig):
    """The study: task, MNIST data, torch threads (speed only; ``data.dir`` may change between sessions)."""

    SPEED_ONLY = {"threads": True, "data": {"dir"}}

    task: EPEBMTask
    data: MnistData = MnistData()
    threads: int = Field(1, ge=1, le=256)


def build_network(network: MLPNetwork | ConvNetwork, *, vector_field: bool, seed: int):
    """The :mod:`inmaterio.ebm` network of ``network`` (float32), weights from ``seed``."""
    from inmaterio.ebm import EnergyConvNet, EnergyMLP

    if network.kind == "mlp":
        return EnergyMLP((784, *network.hidden, 10), activation=network.activation, loss=network.loss,
                         vector_field=vector_field, seed=seed)  # fmt: skip
    return EnergyConvNet(network.channels, kernel_size=network.kernel_size, pool=network.pool, image=(1, 28, 28),
                         n_classes=10, activation=network.activation, loss=network.loss, vector_field=vector_field,
                         seed=seed)  # fmt: skip


WEIGHTS_FORMAT = "inmaterio.ep_ebm.weights"


def weights_file_name(estimator: str, seed: int) -> str:
    """The run folder's file of one training's final weights."""
    return f"weights_{estimator}_seed_{seed}.pt"


def _weights_payload(task: EPEBMTask, estimator: str, seed: int, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {"format": WEIGHTS_FORMAT, "network": task.network.model_dump(mode="json"), "estimator": estimator,
            "seed": seed, "state_dict": state}  # fmt: skip


def load_trained_network(path: str | Path):
    """The trained network (float32) of a ``weights_<estimator>_seed_<seed>.pt`` file of an ``ep_ebm`` run folder.

    Raises
    ------
    ModelFileError
        A missing, corrupt or foreign file, or weights that do not fit the network the file describes.
    """
    from pydantic import TypeAdapter, ValidationError

    from inmaterio.errors import ModelFileError

    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: no such file") from None
    except Exception as err:  # torch raises several types for truncated or foreign files
        first_line = (str(err).splitlines() or [""])[0]
        raise ModelFileError(f"{path} is not a readable torch file ({type(err).__name__}: {first_line})") from None
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ModelFileError(f"{path} is not an ep_ebm weights file (format {found!r}, expected {WEIGHTS_FORMAT!r})")
    try:
        network = TypeAdapter(NetworkSpec).validate_python(payload["network"])
        model = build_network(network, vector_field=payload["estimator"] == "symmetric_kpvf", seed=0)
        model.load_state_dict(payload["state_dict"])
    except (KeyError, ValidationError, RuntimeError, TypeError) as err:
        one_line = " ".join(str(err).split())
        raise ModelFileError(f"{path}: its network and weights do not fit ({type(err).__name__}: {one_line})") from None
    return model


def prepare_ep_ebm(config: EPEBMConfig) -> StudyBackends:
    """Load and split MNIST (pixels in [0, 1]; images ``(n, 1, 28, 28)`` for the ConvNet) before any folder is made.

    Raises
    ------
    ConfigError, ModelFileError
        No data folder, a missing or corrupt IDX file, images that are not 28 x 28, a ``train_size`` beyond the
        training images.
    """
    from inmaterio.data.mnist import load_mnist, mnist_splits
    from inmaterio.errors import ConfigError
    from inmaterio.runs import fingerprint_tensors

    task = config.task
    raw = load_mnist(config.data.dir)
    splits = mnist_splits(raw, n_validation=config.data.n_validation, seed=config.data.split_seed)
    if splits.x_train.shape[1] != 784:
        raise ConfigError(f"ep_ebm needs 28 x 28 images, got {splits.x_train.shape[1]} pixels")
    if task.train_size is not None and task.train_size > len(splits.x_train):
        raise ConfigError(f"task.train_size {task.train_size} exceeds the {len(splits.x_train)} training images")
    shape = (-1, 1, 28, 28) if task.network.kind == "convnet" else (-1, 784)
    splits = dataclasses.replace(
        splits, **{f"x_{k}": (getattr(splits, f"x_{k}") + 0.5).reshape(shape).contiguous() for k in ("train", "val", "test")}
    )
    identity = {"mnist_sha256": fingerprint_tensors(raw.train_images, raw.train_labels, raw.test_images, raw.test_labels)}
    return StudyBackends(None, None, identity, {"splits": splits})


def _key(estimator: str, seed: int) -> str:
    return f"{estimator}/seed_{seed}"


def _weights_seed(seed: int) -> int:
    from inmaterio.random_streams import stream_seed

    return stream_seed(seed, "ep_ebm", "weights")


def _gdu(task: EPEBMTask, splits) -> dict[str, Any]:
    """The per-step comparison (module docstring): relative errors per step and a few traced parameters."""
    from inmaterio.ebm import gdu_curves

    model = build_network(task.network, vector_field=False, seed=_weights_seed(0)).double()
    x, y = splits.x_train[: task.gdu.images].double(), splits.y_train[: task.gdu.images]
    beta = task.gdu.beta if task.gdu.beta is not None else task.beta
    sym = gdu_curves(model, x, y, T=task.T, K=task.K, beta=beta, symmetric=True)
    one = gdu_curves(model, x, y, T=task.T, K=task.K, beta=beta, symmetric=False)
    layers = []
    for i in range(model.n_connections):
        name = f"weights.{i}"
        bptt = sym.bptt[name].reshape(task.K, -1)
        picked = torch.argsort(bptt[-1].abs(), descending=True)[: task.gdu.traces]
        layers.append({
            "name": name,
            "shape": list(model.weights[i].shape),
            "indices": [int(j) for j in picked],
            "bptt": bptt[:, picked].T.tolist(),
            "symmetric": sym.ep[name].reshape(task.K, -1)[:, picked].T.tolist(),
            "one_sided": one.ep[name].reshape(task.K, -1)[:, picked].T.tolist(),
            "relative_error_symmetric": sym.relative_error()[name],
            "relative_error_one_sided": one.relative_error()[name],
        })  # fmt: skip
    return {"images": len(x), "beta": beta, "T": task.T, "K": task.K, "layers": layers}


def _epoch_description(estimator: str, seed: int, epochs: int, last: dict[str, Any]) -> str:
    """The progress bar's label after an epoch: which training, and that epoch's errors in percent."""
    return (
        f"{estimator} seed {seed} (epoch {last['epoch']}/{epochs}: validation error {100 * last['val_error']:.2f} %, "
        f"running training error {100 * last['train_error']:.2f} %)"
    )


def _train(task: EPEBMTask, estimator: str, seed: int, splits, resume: dict[str, Any] | None, save, progress: bool):
    """Train one (estimator, seed) from ``resume`` (or from scratch), saving after every epoch; its results."""
    from inmaterio.ebm import evaluate, layerwise_sgd, train_epoch, weight_angles_deg
    from inmaterio.errors import TrainingDivergedError
    from inmaterio.progress import progress_bar
    from inmaterio.random_streams import torch_generator

    kpvf = estimator == "symmetric_kpvf"
    model = build_network(task.network, vector_field=kpvf, seed=_weights_seed(seed))
    optimizer = layerwise_sgd(model, task.learning_rates, momentum=task.momentum, weight_decay=task.weight_decay,
                              kp_decay=task.kp_decay if kpvf else 0.0)  # fmt: skip
    initial_angles = weight_angles_deg(model)
    history: list[dict[str, Any]] = []
    start = 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        history, start = list(resume["history"]), int(resume["epoch"])
    x, y = splits.x_train[: task.train_size], splits.y_train[: task.train_size]
    with progress_bar(total=task.epochs * len(x), completed=start * len(x), description=f"{estimator} seed {seed}",
                      unit="images", enabled=progress) as bar:  # fmt: skip
        if history:
            bar.set_description(_epoch_description(estimator, seed, task.epochs, history[-1]))
        for epoch in range(start, task.epochs):
            began = time.perf_counter()
            result = train_epoch(
                model, optimizer, x, y, estimator, T=task.T, K=task.K, beta=task.beta, batch_size=task.batch_size,
                shuffle=torch_generator(seed, "ep_ebm", "shuffle", epoch), signs=torch_generator(seed, "ep_ebm", "sign", epoch),
                on_batch=bar.advance,
            )  # fmt: skip
            seconds = time.perf_counter() - began
            if not math.isfinite(result.loss):
                raise TrainingDivergedError(
                    f"{estimator} seed {seed}: the training cost became {result.loss} in epoch {epoch + 1}; "
                    f"lower task.learning_rates {list(task.learning_rates)} or task.beta {task.beta}"
                )
            val = evaluate(model, splits.x_val, splits.y_val, T=task.T)
            history.append({
                "epoch": epoch + 1, "train_loss": result.loss, "train_error": result.error, "val_error": val["error"],
                "val_loss": val["loss"], "val_unsettled": val["unsettled"],
                "positive_beta_fraction": result.positive_beta_fraction, "seconds": seconds,
                "angles_deg": weight_angles_deg(model),
            })  # fmt: skip
            save({"key": _key(estimator, seed), "epoch": epoch + 1, "model": model.state_dict(),
                  "optimizer": optimizer.state_dict(), "history": history})  # fmt: skip
            bar.set_description(_epoch_description(estimator, seed, task.epochs, history[-1]))
    test = evaluate(model, splits.x_test, splits.y_test, T=task.T)
    return {
        "estimator": estimator,
        "seed": seed,
        "test_error": test["error"],
        "test_loss": test["loss"],
        "test_unsettled": test["unsettled"],
        "weights": {name: t.detach().clone() for name, t in model.state_dict().items()},
        "initial_angles_deg": initial_angles,
        "history": history,
        "seconds_per_epoch": float(np.median([h["seconds"] for h in history])),
    }


def run_ep_ebm(config: EPEBMConfig, run: RunFolder, *, progress: bool, prepared: StudyBackends) -> TaskOutcome:
    """The per-step comparison, then every (estimator, seed); finished pieces and the epoch in progress are
    kept in the checkpoint."""
    task, splits = config.task, prepared.extra["splits"]
    state = run.load_checkpoint() or {}
    finished: dict[str, Any] = dict(state.get("finished", {}))
    current: dict[str, Any] | None = state.get("current")

    def save_current(progress_state: dict[str, Any] | None) -> None:
        run.save_checkpoint({"finished": finished, "current": progress_state})

    saved_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        if task.gdu.images > 0 and "gdu" not in finished:
            finished["gdu"] = _gdu(task, splits)
            save_current(current)
        for estimator in task.estimators:
            for seed in range(task.seeds):
                key = _key(estimator, seed)
                if key in finished:
                    continue
                resume = current if current is not None and current.get("key") == key else None
                finished[key] = _train(task, estimator, seed, splits, resume, save_current, progress)
                current = None
                save_current(None)
    finally:
        torch.set_num_threads(saved_threads)
    results = [finished[_key(e, s)] for e in task.estimators for s in range(task.seeds)]
    for r in results:
        if "weights" in r:  # trainings finished before the package kept their weights have none
            payload = _weights_payload(task, r["estimator"], r["seed"], r["weights"])
            run.write_file(weights_file_name(r["estimator"], r["seed"]), lambda p, payload=payload: torch.save(payload, p),
                           what=f"trained weights of {r['estimator']} seed {r['seed']}")  # fmt: skip
    summary = _summary(task, results)
    _learning_figure(run, task, results)
    if "gdu" in finished:
        _gdu_figure(run, finished["gdu"])
    n_train = len(splits.x_train[: task.train_size])
    metrics = {
        "study": "ep_ebm",
        "network": task.network.describe(),
        "task": task.model_dump(mode="json"),
        "images": {"train": n_train, "validation": len(splits.x_val), "test": len(splits.x_test)},
        "summary": summary,
        "seeds": [{k: v for k, v in r.items() if k not in ("history", "weights")} for r in results],
        "gdu": _gdu_summary(finished.get("gdu")),
        "threads": config.threads,
    }
    columns = ["estimator", "test error % (mean ± std)", "val. error % (last epoch)", "train error % (running)",
               "unsettled at T, test %", "s/epoch", "feedback angle (deg)"]  # fmt: skip
    rows = [
        [_LABELS[s["estimator"]], f"{s['test_error_mean']:.2f} ± {s['test_error_std']:.2f}", f"{s['val_error_mean']:.2f}",
         f"{s['train_error_mean']:.2f}", "" if s["test_unsettled_mean"] is None else f"{s['test_unsettled_mean']:.2f}",
         f"{s['seconds_per_epoch']:.1f}",
         ", ".join(f"{a:.1f}" for a in s["angles_deg"]) if s["angles_deg"] else ""]
        for s in summary
    ]  # fmt: skip
    curves = {
        f"{r['estimator']} seed {r['seed']}": [
            {"step": h["epoch"], "loss": h["train_loss"], **{k: v for k, v in h.items() if k not in ("epoch", "angles_deg")}}
            for h in r["history"]
        ]
        for r in results
    }
    title = f"MNIST, energy-based {task.network.kind} {task.network.describe()} ({task.network.loss}), {n_train} training images"
    return TaskOutcome(metrics, {}, title, columns, rows, curves)


def _summary(task: EPEBMTask, results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per estimator: test error % mean and std (ddof 1; 0 for one seed), last-epoch validation and running
    training error % (means), % of test images whose free phase had not settled at T (mean), median s/epoch,
    feedback angles after the last epoch (mean over seeds)."""
    rows = []
    for estimator in task.estimators:
        mine = [r for r in results if r["estimator"] == estimator]
        test = 100 * np.array([r["test_error"] for r in mine])
        angles = [r["history"][-1]["angles_deg"] for r in mine]
        rows.append({
            "estimator": estimator,
            "seeds": len(mine),
            "test_error_mean": float(test.mean()),
            "test_error_std": float(test.std(ddof=1)) if len(test) > 1 else 0.0,
            "val_error_mean": float(np.mean([100 * r["history"][-1]["val_error"] for r in mine])),
            "train_error_mean": float(np.mean([100 * r["history"][-1]["train_error"] for r in mine])),
            "test_unsettled_mean": _mean_percent([r.get("test_unsettled") for r in mine]),
            "seconds_per_epoch": float(np.median([r["seconds_per_epoch"] for r in mine])),
            "angles_deg": [float(a) for a in np.mean(angles, axis=0)] if angles and angles[0] else [],
        })  # fmt: skip
    return rows


def _mean_percent(fractions: list[float | None]) -> float | None:
    """100 x the mean, or None where a seed lacks the value (trained before the package counted it)."""
    return None if any(f is None for f in fractions) else float(100 * np.mean(fractions))


def _gdu_summary(gdu: dict[str, Any] | None) -> dict[str, Any] | None:
    """The comparison without its traces: per layer, relative error per step for both EP variants."""
    if gdu is None:
        return None
    keep = ("name", "shape", "relative_error_symmetric", "relative_error_one_sided")
    return {
        **{k: gdu[k] for k in ("images", "beta", "T", "K")},
        "layers": [{k: layer[k] for k in keep} for layer in gdu["layers"]],
    }


def _learning_figure(run: RunFolder, task: EPEBMTask, results: list[dict[str, Any]]) -> None:
    """``learning_curves.png``: validation error % per epoch (mean over seeds, band = min..max) per estimator,
    running training error dashed; a second panel with the feedback angles of ``symmetric_kpvf``."""
    from matplotlib.figure import Figure

    from inmaterio.plots import save_figure

    kpvf = [r for r in results if r["estimator"] == "symmetric_kpvf"]
    fig = Figure(figsize=(10.0 if kpvf else 6.0, 4.0), layout="constrained")
    axes = fig.subplots(1, 2 if kpvf else 1, squeeze=False)[0]
    ax = axes[0]
    for n, estimator in enumerate(task.estimators):
        mine = [r for r in results if r["estimator"] == estimator]
        val = 100 * np.array([[h["val_error"] for h in r["history"]] for r in mine])
        train = 100 * np.array([[h["train_error"] for h in r["history"]] for r in mine])
        epochs = np.arange(1, val.shape[1] + 1)
        color = f"C{n}"
        ax.plot(epochs, val.mean(0), "o-", color=color, ms=3, label=f"{_LABELS[estimator]} (validation)")
        if len(mine) > 1:
            ax.fill_between(epochs, val.min(0), val.max(0), color=color, alpha=0.15)
        ax.plot(epochs, train.mean(0), "--", color=color, lw=1)
    ax.set(xlabel="epoch", ylabel="error / % (dashed: training, running)", yscale="log",
           title=f"{task.network.kind} {task.network.describe()}, T = {task.T}, K = {task.K}, beta = {task.beta:g}")  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    if kpvf:
        ax = axes[1]
        angles = np.array([[r["initial_angles_deg"]] + [h["angles_deg"] for h in r["history"]] for r in kpvf])
        epochs = np.arange(angles.shape[1])  # (seeds, epochs + 1, layers), from the initial weights
        for i in range(angles.shape[2]):
            ax.plot(epochs, angles[:, :, i].mean(0), "o-", ms=3, label=f"weights.{i + 1} vs feedback")
        ax.set(xlabel="epoch", ylabel="angle forward / feedback weights (deg)", ylim=(0, None),
               title=f"Kolen-Pollack, leak {task.kp_decay:g}")  # fmt: skip
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    save_figure(fig, run.file("learning_curves.png"))


def _gdu_figure(run: RunFolder, gdu: dict[str, Any]) -> None:
    """``ep_vs_bptt_per_step.png``: per weight layer, a few parameters' EP estimates after k nudged steps (solid:
    symmetric, dotted: one-sided) and truncated BPTT gradients (markers); last panel: relative error per step."""
    from matplotlib.figure import Figure

    from inmaterio.plots import save_figure

    layers = gdu["layers"]
    fig = Figure(figsize=(3.4 * (len(layers) + 1), 3.4), layout="constrained")
    axes = fig.subplots(1, len(layers) + 1, squeeze=False)[0]
    steps = np.arange(1, gdu["K"] + 1)
    for ax, layer in zip(axes, layers):
        for j in range(len(layer["indices"])):
            color = f"C{j}"
            ax.plot(steps, layer["bptt"][j], "o", color=color, ms=4, mfc="none")
            ax.plot(steps, layer["symmetric"][j], "-", color=color)
            ax.plot(steps, layer["one_sided"][j], ":", color=color)
        ax.set(xlabel="nudged steps k", title=f"{layer['name']} {tuple(layer['shape'])}")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("gradient estimate")
    axes[0].plot([], [], "ko", mfc="none", label="BPTT, last k steps")
    axes[0].plot([], [], "k-", label="EP symmetric")
    axes[0].plot([], [], "k:", label="EP one-sided")
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    for n, layer in enumerate(layers):
        ax.plot(
            steps, np.maximum(layer["relative_error_symmetric"], 1e-16), "-", color=f"C{n}", label=f"{layer['name']} symmetric"
        )
        ax.plot(
            steps, np.maximum(layer["relative_error_one_sided"], 1e-16), ":", color=f"C{n}", label=f"{layer['name']} one-sided"
        )
    ax.set(xlabel="nudged steps k", ylabel="|EP(k) - BPTT(k)| / |BPTT(K)| (floor 1e-16)", yscale="log",
           title=f"beta = {gdu['beta']:g}, T = {gdu['T']}, {gdu['images']} images")  # fmt: skip
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6)
    save_figure(fig, run.file("ep_vs_bptt_per_step.png"))


def report_ep_ebm(runs: list[FinishedRun]) -> str:
    """Markdown: each run's table, its settings and figures."""
    from inmaterio.tasks.report import markdown_table

    sections = []
    for run in runs:
        m, table, t = run.metrics, run.metrics["table"], run.metrics["task"]
        lrs = ", ".join(f"{r:g}" for r in t["learning_rates"])
        gdu = m.get("gdu")
        gdu_line = ""
        if gdu:
            worst = lambda key, gdu=gdu: max(max(layer[key]) for layer in gdu["layers"])  # noqa: E731
            gdu_line = (f" Per-step EP vs truncated BPTT (beta {gdu['beta']:g}, {gdu['images']} images): largest relative "
                        f"error {worst('relative_error_symmetric'):.2g} symmetric, {worst('relative_error_one_sided'):.2g} one-sided.")  # fmt: skip
        sections.append(
            f"### {table['title']} (`{run.path}`)\n\n"
            f"{t['network']['activation']} units, T = {t['T']}, K = {t['K']}, beta = {t['beta']:g}, batch {t['batch_size']}, "
            f"{t['epochs']} epoch{'s' if t['epochs'] != 1 else ''}, SGD lr {lrs}, momentum {t['momentum']:g}, weight decay {t['weight_decay']:g}"
            f"{', KP leak ' + format(t['kp_decay'], 'g') if 'symmetric_kpvf' in t['estimators'] else ''}; "
            f"test error (%) on {m['images']['test']} images after the last epoch, mean ± std over {t['seeds']} seed(s)."
            f"{gdu_line} {run.record.get('wall_s', 0.0) / 3600:.2f} h wall.\n\n"
            + markdown_table(table["columns"], table["rows"])
            + f"\n\n![learning curves]({run.path / 'learning_curves.png'})"
            + (f"\n\n![EP vs BPTT per step]({run.path / 'ep_vs_bptt_per_step.png'})" if gdu else "")
        )  # fmt: skip
    return "\n\n".join(sections)
