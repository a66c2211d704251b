"""PCM crossbar inference over time (Spoon et al. 2021 protocol) as one typed study: ``inmaterio run examples/crossbar_inference.yaml``.

Networks (``task.model.kind``), each trained on MNIST with its linear (and convolution) layers on
analog tiles (:mod:`inmaterio.crossbars`)::

    dnpu_mnist  the 10-DNPU network of :mod:`inmaterio.studies.mnist` (its builder and recipes): Flatten ->
                AnalogLinear(784, 10 m) -> [BatchNorm] -> 10 DNPUs on the surrogate -> logits; m = 7 by default
    mlp         Flatten -> AnalogLinear(784, 256) -> ReLU -> AnalogLinear(256, 128) -> ReLU -> AnalogLinear(128, 10)
    cnn         AnalogConv2d(1, 8, 5) -> ReLU -> MaxPool 2 -> AnalogConv2d(8, 16, 5) -> ReLU -> MaxPool 2 -> AnalogLinear(256, 10)

Trainings (``task.trainings``), each with :func:`~inmaterio.training.gd.train_gd` (cross-entropy,
model selection by validation accuracy) in its own nested run folder ``<run>/<training>/seed_<s>``:

- ``plain``: ideal tiles (exact ``x @ W.T`` forward and backward), i.e. digital training;
- ``hwa`` (hardware-aware): the forward read through the inference periphery (``task.periphery``,
  by default the realistic 7-bit DAC / 9-bit ADC with output noise) plus forward-only Gaussian weight
  noise of relative std :func:`~inmaterio.crossbars.inference.hwa_weight_noise` of ``task.hwa_noise``
  (or ``task.hwa_weight_noise``) in training mode; full-precision backward and update. It starts from
  the same initial weights as ``plain`` (trained from scratch, not fine-tuned from the plain network).

Inference: every trained network is read through ``task.periphery`` (no weight noise) and, for
each PCM noise preset of ``task.inference.noises`` (e.g. γ = 1 and γ = 0.5), programmed and
evaluated on the test set at every ``times_s`` after programming, with and without global drift
compensation, ``repeats`` times (new programming per repeat):
:func:`~inmaterio.crossbars.inference.accuracy_over_time`. Baselines: the *digital* accuracy of
the same trained weights (``nn.Linear`` / ``nn.Conv2d``) and the *periphery* accuracy (the tiles
read through the periphery, no PCM noise).

Pixels are encoded in [0, 1] by default (``task.pixels: positive``; a black pixel drives no row). With
the MNIST study's [-0.5, 0.5] (``centered``) the background drives most of the 784 rows at full
scale, and the realistic ADC (bound 12 full-scale conductances x DAC units) saturates on 30-55 % of
the first layer's outputs: a network trained digitally for one epoch on 20,000 images falls from
89.6 % to 32 % (10 DNPUs) through the periphery alone, where with [0, 1] pixels fewer than 1 % of
the outputs saturate and the periphery costs nothing (92.2 % both). The tile has no bound
management (aihwkit's re-reads with scaled-down inputs), so the encoding is what keeps the ADC in
range. The BatchNorm of the DNPU network absorbs the shift.

Random streams are keyed by what they serve (:mod:`inmaterio.random_streams`): the network's
initial weights by the seed, the tiles' noise by (seed, training), each inference by (seed,
training, noise preset). A finished training, and the inference rows of each (seed, training,
noise), are kept (train_gd's folder; the study's checkpoint), so an interrupted run resumes where
it stopped and ends with the same numbers.

Run folder: ``metrics.json`` (the table: mean ± std over seeds x repeats of the test accuracy at
each time, per training x noise x compensation, with the digital baseline), ``history.json`` (the
training curves and every inference row), ``accuracy_vs_time.png``, and ``<training>/seed_<s>/``.
``inmaterio report FOLDER`` prints the table beside the published context.
"""

from __future__ import annotations

import dataclasses
import math
from functools import partial
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from inmaterio.config import StrictModel
from inmaterio.crossbars.tile import REALISTIC_IO, IOConfig, TileConfig
from inmaterio.runs import RunFolder
from inmaterio.studies.common import StudyBackends, SurrogateChoice
from inmaterio.studies.mnist import MnistData, MnistRecipe, with_recipe_settings
from inmaterio.tasks.outcome import TaskOutcome
from inmaterio.tasks.registry import FinishedRun, RunnableConfig

__all__ = [
    "DIGITAL_BASELINE_PERCENT",
    "SPOON_2021",
    "AnalogRecipe",
    "DnpuMnistModel",
    "MlpModel",
    "CnnModel",
    "InferenceSettings",
    "CrossbarInferenceTask",
    "CrossbarInferenceConfig",
    "build_digital",
    "tile_config",
    "prepare_crossbar_inference",
    "run_crossbar_inference",
    "report_crossbar_inference",
]

#: The study's all-digital test accuracy of the 10-DNPU network with 7 inputs per node (recipe ours, 30 epochs;
#: ``benchmarks/dnpu_networks/results/mnist``), the baseline of reproduction 1; the paper reports 96.1%.
DIGITAL_BASELINE_PERCENT = 97.06
#: Spoon et al. (Front. Comput. Neurosci. 2021), BERT-base on GLUE, hardware-aware training with global drift
#: compensation: mean accuracy drop at one month, percentage points, by noise scale γ.
SPOON_2021 = {"gamma_1_drop_at_1_month": 1.29, "gamma_half_drop_at_1_month": 0.6}


class AnalogRecipe(StrictModel):
    """Training settings of the ``mlp`` and ``cnn`` networks.

    optimizer : ``adam`` or ``adamw``.
    learning_rate : peak learning rate (> 0).
    batch_size : images per step (>= 1).
    schedule : ``constant``, ``cosine`` or ``onecycle`` (:func:`inmaterio.studies.mnist.lr_factor`).
    weight_decay : on every parameter (>= 0; Adam's L2 form or AdamW's decoupled one).
    """

    optimizer: Literal["adam", "adamw"] = "adamw"
    learning_rate: float = Field(2e-3, gt=0, le=10)
    batch_size: int = Field(128, ge=1)
    schedule: Literal["constant", "cosine", "onecycle"] = "onecycle"
    weight_decay: float = Field(1e-4, ge=0, le=10)


class DnpuMnistModel(StrictModel):
    """The 10-DNPU MNIST network of :mod:`inmaterio.studies.mnist` with its linear layer on tiles.

    inputs_per_node : m = 3 or 7.
    recipe : the MNIST study's recipe, ``ours`` or ``paper``; ``settings`` given here override it.
    """

    kind: Literal["dnpu_mnist"]
    inputs_per_node: Literal[3, 7] = 7
    recipe: Literal["paper", "ours"] = "ours"
    settings: MnistRecipe

    @model_validator(mode="before")
    @classmethod
    def _fill_in_the_recipe(cls, data: Any) -> Any:
        return with_recipe_settings(data)

    def describe(self) -> str:
        return f"10 DNPUs ({self.inputs_per_node} inputs/node, recipe {self.recipe}), linear 784x{10 * self.inputs_per_node} on tiles"


class MlpModel(StrictModel):
    """An all-analog MLP: 784 -> hidden... -> 10 with ReLU between.

    hidden : the hidden layer sizes (1 to 8 layers, each 1 .. 100000).
    """

    kind: Literal["mlp"]
    hidden: tuple[int, ...] = (256, 128)
    settings: AnalogRecipe = AnalogRecipe()

    @field_validator("hidden")
    @classmethod
    def _sizes(cls, hidden: tuple[int, ...]) -> tuple[int, ...]:
        if not 1 <= len(hidden) <= 8 or any(not 1 <= h <= 100_000 for h in hidden):
            raise ValueError(f"hidden must list 1 to 8 layer sizes, each in [1, 100000], got {list(hidden)}")
        return hidden

    def describe(self) -> str:
        return "MLP " + "-".join(map(str, (784, *self.hidden, 10))) + ", all analog"


class CnnModel(StrictModel):
    """A small all-analog CNN: two convolutions (ReLU, 2x2 max pooling each) and a linear read-out.

    channels : output channels of the two convolutions (each 1 .. 1024).
    kernel_size : of both convolutions, odd, 1 .. 9 (no padding).
    """

    kind: Literal["cnn"]
    channels: tuple[int, int] = (8, 16)
    kernel_size: int = Field(5, ge=1, le=9)
    settings: AnalogRecipe = AnalogRecipe()

    @field_validator("channels")
    @classmethod
    def _channels(cls, channels: tuple[int, int]) -> tuple[int, int]:
        if any(not 1 <= c <= 1024 for c in channels):
            raise ValueError(f"channels must be two counts in [1, 1024], got {list(channels)}")
        return channels

    @field_validator("kernel_size")
    @classmethod
    def _odd(cls, k: int) -> int:
        if k % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {k}")
        return k

    def describe(self) -> str:
        c1, c2 = self.channels
        return f"CNN conv {c1}-{c2} ({self.kernel_size}x{self.kernel_size}) + linear, all analog"


ModelChoice = Annotated[DnpuMnistModel | MlpModel | CnnModel, Field(discriminator="kind")]


class InferenceSettings(StrictModel):
    """PCM inference over time.

    noises : PCM noise presets (:data:`inmaterio.crossbars.PCM_PRESETS`, e.g. ``spoon2021`` (γ = 1),
        ``spoon2021_gamma_half``, ``noiseless``), each its own programming of every trained network; no repeats.
    times_s : inference times after programming, s (> 0, increasing; one month = 2592000 s).
    repeats : programmings (and reads) per time point (>= 1).
    """

    noises: tuple[str, ...] = ("spoon2021", "spoon2021_gamma_half")
    times_s: tuple[float, ...] = (1.0, 3600.0, 86400.0, 604800.0, 2592000.0)
    repeats: int = Field(25, ge=1, le=10_000)

    @field_validator("noises")
    @classmethod
    def _known_presets(cls, noises: tuple[str, ...]) -> tuple[str, ...]:
        from inmaterio.crossbars.pcm import PCM_PRESETS

        unknown = [n for n in noises if n not in PCM_PRESETS]
        if not noises or unknown or len(set(noises)) != len(noises):
            raise ValueError(
                f"noises must list PCM presets ({', '.join(sorted(PCM_PRESETS))}) at most once each, got {list(noises)}"
            )
        return noises

    @field_validator("times_s")
    @classmethod
    def _increasing_times(cls, times: tuple[float, ...]) -> tuple[float, ...]:
        if not times or any(t <= 0 for t in times) or any(b <= a for a, b in zip(times, times[1:])):
            raise ValueError(f"times_s must be times > 0 s in increasing order (a log time axis), got {list(times)}")
        return times


class CrossbarInferenceTask(StrictModel):
    """The ``task:`` of the study (see the module docstring).

    model : the network, ``{kind: dnpu_mnist | mlp | cnn, ...}``.
    epochs : training epochs (>= 1).
    seeds : networks per training, seeds 0 .. seeds-1 (initial weights, shuffling, noise).
    trainings : ``plain`` and / or ``hwa``, each at most once.
    hwa_noise : the PCM preset whose programming noise sets the HWA forward weight noise.
    hwa_weight_noise : that relative weight noise explicitly (>= 0); null: derived from ``hwa_noise``.
    periphery : the forward periphery of the inference reads and of HWA training: ``realistic``
        (:data:`~inmaterio.crossbars.tile.REALISTIC_IO`), ``ideal``, or an ``IOConfig`` mapping (its
        ``forward_weight_noise`` must be 0).
    pixels : ``positive``: pixel / 255 in [0, 1], a black pixel drives no row (the default; see the module
        docstring); ``centered``: pixel / 255 - 0.5, the MNIST study's encoding.
    train_size : the first images of the training set only (>= 1); null: all of them.
    inference : noise presets, times, repeats.
    """

    type: Literal["crossbar_inference"]
    model: ModelChoice = {"kind": "dnpu_mnist"}  # type: ignore[assignment]  # validated (validate_default)
    epochs: int = Field(30, ge=1, le=100_000)
    seeds: int = Field(5, ge=1, le=1000)
    trainings: tuple[Literal["plain", "hwa"], ...] = ("plain", "hwa")
    hwa_noise: str = "spoon2021"
    hwa_weight_noise: float | None = Field(None, ge=0, le=10)
    periphery: Literal["realistic", "ideal"] | IOConfig = "realistic"
    pixels: Literal["positive", "centered"] = "positive"
    train_size: int | None = Field(None, ge=1)
    inference: InferenceSettings = InferenceSettings()

    @field_validator("trainings")
    @classmethod
    def _unique_trainings(cls, trainings: tuple[str, ...]) -> tuple[str, ...]:
        if not trainings or len(set(trainings)) != len(trainings):
            raise ValueError(f"trainings must list plain and / or hwa, each at most once, got {list(trainings)}")
        return trainings

    @field_validator("hwa_noise")
    @classmethod
    def _known_hwa_noise(cls, name: str) -> str:
        from inmaterio.crossbars.pcm import PCM_PRESETS

        if name not in PCM_PRESETS:
            raise ValueError(f"hwa_noise must be a PCM preset ({', '.join(sorted(PCM_PRESETS))}), got {name!r}")
        return name

    @field_validator("periphery")
    @classmethod
    def _no_training_noise_at_inference(cls, periphery: Any) -> Any:
        if isinstance(periphery, IOConfig) and periphery.forward_weight_noise != 0:
            raise ValueError(
                f"periphery.forward_weight_noise = {periphery.forward_weight_noise} must be 0 (the HWA noise is set by "
                "hwa_noise or hwa_weight_noise)"
            )
        return periphery

    def io(self) -> IOConfig:
        """The forward periphery of inference (and of HWA training, without its weight noise)."""
        if isinstance(self.periphery, IOConfig):
            return self.periphery
        return REALISTIC_IO if self.periphery == "realistic" else IOConfig()

    def weight_noise(self) -> float:
        """The relative forward weight noise of HWA training."""
        if self.hwa_weight_noise is not None:
            return self.hwa_weight_noise
        from inmaterio.crossbars.inference import hwa_weight_noise
        from inmaterio.crossbars.pcm import pcm_preset

        return float(hwa_weight_noise(pcm_preset(self.hwa_noise)))

    def recipe(self) -> MnistRecipe | AnalogRecipe:
        return self.model.settings


class CrossbarInferenceConfig(RunnableConfig):
    """The study: task, MNIST data, surrogate (dnpu_mnist only), torch threads (speed only).

    ``threads`` and ``data.dir`` may change between sessions of a run.
    """

    SPEED_ONLY = {"threads": True, "data": {"dir"}}

    task: CrossbarInferenceTask
    data: MnistData = MnistData()
    surrogate: SurrogateChoice = SurrogateChoice()
    threads: int = Field(1, ge=1, le=256)


# --------------------------------------------------------------------------------------------- networks


def build_digital(model: DnpuMnistModel | MlpModel | CnnModel, processor, n_pixels: int, seed: int) -> nn.Sequential:
    """The digital network (``nn.Linear`` / ``nn.Conv2d``) of ``model``, weights drawn from ``seed``.

    ``processor`` : the surrogate of the DNPU nodes (``dnpu_mnist``; None otherwise). The caller's torch
    random state is left as it was. ``cnn`` needs square images (``n_pixels`` a square number).
    """
    if isinstance(model, DnpuMnistModel):
        from inmaterio.studies.mnist import MnistTask, build_model

        task = MnistTask(type="mnist_10dnpu", model="dnpu", inputs_per_node=model.inputs_per_node, recipe=model.recipe,
                         settings=model.settings.model_dump())  # fmt: skip
        return build_model(task, processor, n_pixels, seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if isinstance(model, MlpModel):
            sizes = (n_pixels, *model.hidden, 10)
            layers: list[nn.Module] = [nn.Flatten()]
            for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
                layers += [nn.Linear(a, b)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
            return nn.Sequential(*layers)
        side = math.isqrt(n_pixels)
        (c1, c2), k = model.channels, model.kernel_size
        features = ((side - k + 1) // 2 - k + 1) // 2
        if side * side != n_pixels or features < 1:
            from inmaterio.errors import ConfigError

            raise ConfigError(f"the cnn needs square images of at least {3 * k + 1} pixels a side, got {n_pixels} pixels")
        return nn.Sequential(
            nn.Unflatten(1, (1, side, side)), nn.Conv2d(1, c1, k), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(c1, c2, k), nn.ReLU(),
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(c2 * features * features, 10),
        )  # fmt: skip


def tile_config(task: CrossbarInferenceTask, use: Literal["plain", "hwa", "inference"]) -> TileConfig:
    """The tiles of a ``plain`` or ``hwa`` training, or of inference (512 x 512 arrays, ideal backward)."""
    if use == "plain":
        return TileConfig()
    io = task.io()
    if use == "hwa":
        io = io.model_copy(update={"forward_weight_noise": task.weight_noise()})
    return TileConfig(io=io, backward="ideal")


class _TileStreams:
    """train_gd callback: the tiles' noise generators join the training's checkpoint, so a resumed
    training draws the same HWA and periphery noise as an uninterrupted one."""

    def __init__(self, model: nn.Module) -> None:
        from inmaterio.crossbars.layers import analog_tiles

        self.tiles = list(analog_tiles(model))

    def state_dict(self) -> dict[str, Any]:
        return {"generators": [t.generator.get_state() for t in self.tiles]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for tile, generator in zip(self.tiles, state["generators"], strict=True):
            tile.generator.set_state(generator)


def _seed_tiles(model: nn.Module, *keys: int | str) -> None:
    """Reseed every tile's noise generator from ``keys`` and its index (streams keyed by what they serve)."""
    from inmaterio.crossbars.layers import analog_tiles
    from inmaterio.random_streams import stream_seed

    for i, tile in enumerate(analog_tiles(model)):
        tile.generator.manual_seed(stream_seed(*keys, "tile", i))


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, quiet, chunk: int = 1000) -> float:
    """Test accuracy (correct / n) in eval mode, without gradients and without the surrogate's output noise."""
    import contextlib

    model.eval()
    correct = 0
    with torch.no_grad(), quiet() if quiet is not None else contextlib.nullcontext():
        for i in range(0, len(x), chunk):
            correct += int((model(x[i : i + chunk]).argmax(-1) == y[i : i + chunk]).sum())
    return correct / len(x)


def _optimizer_factory(task: CrossbarInferenceTask, model: nn.Module):
    settings = task.recipe()
    if isinstance(settings, MnistRecipe):
        from inmaterio.studies.mnist import _optimizer

        return partial(_optimizer, model, settings)
    kind = torch.optim.AdamW if settings.optimizer == "adamw" else torch.optim.Adam
    return lambda params: kind(params, lr=settings.learning_rate, weight_decay=settings.weight_decay)


def _scheduler(schedule: str, total: int, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    from inmaterio.studies.mnist import lr_factor

    return torch.optim.lr_scheduler.LambdaLR(optimizer, partial(lr_factor, schedule, total=total))


def _train(
    config: CrossbarInferenceConfig, training: str, seed: int, run: RunFolder, prepared: StudyBackends, progress: bool
) -> nn.Module:
    """Train (or read back) the network of ``seed`` with ``training`` in ``<run>/<training>/seed_<seed>``."""
    from inmaterio.crossbars.layers import convert_to_analog
    from inmaterio.random_streams import stream_seed
    from inmaterio.training.gd import GDConfig, train_gd
    from inmaterio.training.losses import cross_entropy
    from inmaterio.training.metrics import accuracy

    task, data, processor = config.task, prepared.extra["splits"], prepared.surrogate
    x_train, y_train = data.x_train[: task.train_size], data.y_train[: task.train_size]
    tiles = tile_config(task, training)
    digital = build_digital(task.model, processor, x_train.shape[1], seed)
    model = convert_to_analog(digital, tiles, seed=stream_seed(seed, "tiles", training))
    s = task.recipe()
    steps = math.ceil(len(x_train) / s.batch_size) * task.epochs
    gd = GDConfig(
        optimizer=s.optimizer, learning_rate=s.learning_rate, epochs=task.epochs, batch_size=s.batch_size,
        regularization_weight=0.0, select_by="val_accuracy", select_mode="max", evaluate_train=False, seed=seed,
    )  # fmt: skip
    quiet = processor.noise_off if processor is not None else None
    train_gd(
        model, cross_entropy, x_train, y_train, gd, optimizer=_optimizer_factory(task, model),
        scheduler=None if s.schedule == "constant" else partial(_scheduler, s.schedule, steps), scheduler_interval="step",
        callbacks=[_TileStreams(model)], validation=(data.x_val, data.y_val),
        metrics={"val_accuracy": lambda out, y: float(accuracy(out, y))}, eval_context=quiet,
        directory=run.subfolder(f"{training}/seed_{seed}"), identity={"tiles": tiles.model_dump(mode="json")},
        progress=progress,
    )  # fmt: skip
    return model


def _inference_model(config: CrossbarInferenceConfig, trained: nn.Module, seed: int, prepared: StudyBackends) -> nn.Module:
    """The trained weights on tiles with the inference periphery."""
    from inmaterio.crossbars.layers import convert_to_analog

    processor = prepared.surrogate
    digital = build_digital(config.task.model, processor, prepared.extra["splits"].x_train.shape[1], seed)
    model = convert_to_analog(digital, tile_config(config.task, "inference"), seed=0)
    model.load_state_dict(trained.state_dict())
    return model


def _one_network(
    config: CrossbarInferenceConfig, training: str, seed: int, run: RunFolder, prepared: StudyBackends, done, progress: bool
) -> None:
    """Train one network (unless its inference is all done), then its baselines and its inference per noise preset."""
    from inmaterio.crossbars.inference import InferenceConfig, accuracy_over_time
    from inmaterio.crossbars.layers import convert_to_digital
    from inmaterio.random_streams import torch_generator
    from inmaterio.training.gd import read_checkpoint

    task, data = config.task, prepared.extra["splits"]
    key = f"{training}/seed_{seed}"
    noises = [n for n in task.inference.noises if f"{key}/{n}" not in done]
    if f"{key}/baselines" in done and not noises:
        return
    quiet = prepared.surrogate.noise_off if prepared.surrogate is not None else None
    trained = _train(config, training, seed, run, prepared, progress)
    model = _inference_model(config, trained, seed, prepared)
    if f"{key}/baselines" not in done:
        saved = read_checkpoint(run.subfolder(key))
        _seed_tiles(model, seed, "periphery", training)
        done.save(f"{key}/baselines", {
            "digital": _accuracy(convert_to_digital(trained), data.x_test, data.y_test, quiet),
            "periphery": _accuracy(model, data.x_test, data.y_test, quiet),
            "best_epoch": int(saved["best_epoch"]),
            "history": [{k: v for k, v in row.items()} for row in saved["history"]],
        })  # fmt: skip

    def evaluate(network: nn.Module) -> float:
        return _accuracy(network, data.x_test, data.y_test, quiet)

    for noise in noises:
        inference = InferenceConfig(noise=noise, times_s=task.inference.times_s, repeats=task.inference.repeats,
                                    drift_compensation=True)  # fmt: skip
        got = accuracy_over_time(
            model, evaluate, inference, torch_generator(seed, "inference", training, noise), progress=progress
        )
        rows = [{"t_s": float(r["t_s"]), "repeat": int(r["repeat"]), "compensated": bool(r["compensated"]),
                 "accuracy": float(r["accuracy"])} for r in got if r["t_s"] is not None]  # fmt: skip
        done.save(f"{key}/{noise}", rows)


def prepare_crossbar_inference(config: CrossbarInferenceConfig) -> StudyBackends:
    """Load and split MNIST, load the surrogate (dnpu_mnist), build a network: before any folder is made.

    Raises
    ------
    ConfigError, ModelFileError
        No data folder, a missing or corrupt IDX file, a ``train_size`` beyond the training images, a
        surrogate that cannot be loaded or lacks the input electrodes, images the cnn cannot take.
    """
    from inmaterio.data.mnist import load_mnist, mnist_splits
    from inmaterio.errors import ConfigError
    from inmaterio.runs import fingerprint_tensors
    from inmaterio.studies.common import backends_identity, surrogate_processor

    task = config.task
    raw = load_mnist(config.data.dir)
    splits = mnist_splits(raw, n_validation=config.data.n_validation, seed=config.data.split_seed)
    if task.pixels == "positive":
        shift = {f"x_{k}": getattr(splits, f"x_{k}") + 0.5 for k in ("train", "val", "test")}
        splits = dataclasses.replace(splits, **shift)
    if task.train_size is not None and task.train_size > len(splits.x_train):
        raise ConfigError(f"task.train_size {task.train_size} exceeds the {len(splits.x_train)} training images")
    identity: dict[str, Any] = {
        "mnist_sha256": fingerprint_tensors(raw.train_images, raw.train_labels, raw.test_images, raw.test_labels)
    }
    surrogate = None
    if isinstance(task.model, DnpuMnistModel):
        surrogate = surrogate_processor(config.surrogate)
        identity |= backends_identity(surrogate, None)
    build_digital(task.model, surrogate, splits.x_train.shape[1], 0)  # electrodes, image size (errors naming them)
    if "hwa" in task.trainings:
        task.weight_noise()  # the inference module is there
    return StudyBackends(surrogate, None, identity, {"splits": splits})


def run_crossbar_inference(
    config: CrossbarInferenceConfig, run: RunFolder, *, progress: bool, prepared: StudyBackends
) -> TaskOutcome:
    """Train every (seed, training), evaluate each over time per noise preset; finished pieces are kept."""
    from inmaterio.studies.common import Finished

    task = config.task
    done = Finished(run)
    processor = prepared.surrogate
    if processor is not None and isinstance(task.model, DnpuMnistModel) and task.model.settings.noise:
        processor.set_noise()
    saved_threads = torch.get_num_threads()
    torch.set_num_threads(config.threads)
    try:
        for seed in range(task.seeds):
            for training in task.trainings:
                _one_network(config, training, seed, run, prepared, done, progress)
    finally:
        torch.set_num_threads(saved_threads)
    summary = _summarise(task, done)
    _figure(run, task, summary)
    data = prepared.extra["splits"]
    metrics: dict[str, Any] = {
        "study": "crossbar_inference",
        "network": task.model.describe(),
        "model": task.model.model_dump(mode="json"),
        "trainings": list(task.trainings),
        "noises": list(task.inference.noises),
        "times_s": list(task.inference.times_s),
        "repeats": task.inference.repeats,
        "seeds": task.seeds,
        "epochs": task.epochs,
        "hwa_weight_noise": task.weight_noise() if "hwa" in task.trainings else None,
        "periphery": task.io().model_dump(mode="json"),
        "images": {"train": len(data.x_train[: task.train_size]), "validation": len(data.x_val), "test": len(data.x_test)},
        **summary,
        "digital_baseline_percent": DIGITAL_BASELINE_PERCENT if _is_reproduction_1(task) else None,
        "spoon_2021": SPOON_2021,
        "threads": config.threads,
    }
    curves: dict[str, list[dict[str, Any]]] = {}
    for seed in range(task.seeds):
        for training in task.trainings:
            key = f"{training}/seed_{seed}"
            curves[f"training {key}"] = [{"step": h["epoch"], **{k: v for k, v in h.items() if k != "epoch"}}
                                         for h in done[f"{key}/baselines"]["history"]]  # fmt: skip
            for noise in task.inference.noises:
                curves[f"inference {key} {noise}"] = [{"step": i, **r} for i, r in enumerate(done[f"{key}/{noise}"])]
    columns, rows = _table(task, summary)
    title = f"PCM inference over time: {task.model.describe()} ({_count(task.seeds, 'seed')} x {_count(task.inference.repeats, 'repeat')})"
    return TaskOutcome(metrics, {}, title, columns, rows, curves)


def _is_reproduction_1(task: CrossbarInferenceTask) -> bool:
    return isinstance(task.model, DnpuMnistModel) and task.model.inputs_per_node == 7 and task.model.recipe == "ours"


def _mean_std(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": len(a)}


def _summarise(task: CrossbarInferenceTask, done) -> dict[str, Any]:
    """Per training: baselines over seeds; per (training, noise, compensation): accuracy at each time over seeds x repeats."""
    seeds, times = range(task.seeds), task.inference.times_s
    baselines = {
        training: {
            "digital": _mean_std([done[f"{training}/seed_{s}/baselines"]["digital"] for s in seeds]),
            "periphery": _mean_std([done[f"{training}/seed_{s}/baselines"]["periphery"] for s in seeds]),
            "per_seed": [{k: v for k, v in done[f"{training}/seed_{s}/baselines"].items() if k != "history"} for s in seeds],
        }
        for training in task.trainings
    }
    results = []
    for training in task.trainings:
        for noise in task.inference.noises:
            rows = [r for s in seeds for r in done[f"{training}/seed_{s}/{noise}"]]
            for compensated in (False, True):
                at = [
                    _mean_std([r["accuracy"] for r in rows if r["compensated"] == compensated and r["t_s"] == t]) for t in times
                ]
                digital = baselines[training]["digital"]["mean"]
                results.append({
                    "training": training, "noise": noise, "compensated": compensated,
                    "accuracy": [{"t_s": t, **m} for t, m in zip(times, at)],
                    "drop_at_last_time": digital - at[-1]["mean"],
                })  # fmt: skip
    return {"baselines": baselines, "results": results}


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _time_label(t_s: float) -> str:
    for unit, size in (("mo", 2592000.0), ("wk", 604800.0), ("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if t_s >= size:
            return f"{t_s / size:.3g} {unit}"
    return f"{t_s:.3g} s"


def _pct(m: dict[str, float]) -> str:
    return f"{100 * m['mean']:.2f} ± {100 * m['std']:.2f}"


def _table(task: CrossbarInferenceTask, summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    times = task.inference.times_s
    columns = ["training", "noise", "drift comp.", "digital %", "periphery %", *(f"{_time_label(t)} %" for t in times),
               f"drop at {_time_label(times[-1])}"]  # fmt: skip
    rows = []
    for r in summary["results"]:
        b = summary["baselines"][r["training"]]
        rows.append([r["training"], r["noise"], "yes" if r["compensated"] else "no", _pct(b["digital"]), _pct(b["periphery"]),
                     *(_pct(a) for a in r["accuracy"]), f"{100 * r['drop_at_last_time']:+.2f}"])  # fmt: skip
    return columns, rows


def _figure(run: RunFolder, task: CrossbarInferenceTask, summary: dict[str, Any]) -> None:
    """``accuracy_vs_time.png``: one panel per noise preset; mean ± std bands per training x compensation; digital dotted."""
    from matplotlib.figure import Figure

    from inmaterio.plots import save_figure

    noises = task.inference.noises
    fig = Figure(figsize=(5.2 * len(noises), 4.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(noises), squeeze=False).ravel())
    colors = {"plain": "tab:blue", "hwa": "tab:red"}
    for ax, noise in zip(axes, noises):
        for r in (r for r in summary["results"] if r["noise"] == noise):
            t = np.array([a["t_s"] for a in r["accuracy"]])
            mean = 100 * np.array([a["mean"] for a in r["accuracy"]])
            std = 100 * np.array([a["std"] for a in r["accuracy"]])
            style = "-" if r["compensated"] else "--"
            label = f"{r['training']}, {'with' if r['compensated'] else 'no'} drift compensation"
            ax.plot(t, mean, style, marker="o", ms=3, color=colors[r["training"]], label=label)
            ax.fill_between(t, mean - std, mean + std, color=colors[r["training"]], alpha=0.12)
        for training in task.trainings:
            digital = 100 * summary["baselines"][training]["digital"]["mean"]
            ax.axhline(digital, color=colors[training], linestyle=":", lw=1, label=f"{training}, digital")
        ax.set_xscale("log")
        ax.set(xlabel="time after programming / s", ylabel="test accuracy / %", title=f"PCM noise: {noise}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(
        f"{task.model.describe()}: {_count(task.seeds, 'seed')} x {_count(task.inference.repeats, 'repeat')} (mean ± std)",
        fontsize=9,
    )
    save_figure(fig, run.file("accuracy_vs_time.png"))


def report_crossbar_inference(runs: list[FinishedRun]) -> str:
    """Markdown: each run's table beside the published context, its settings, its figure."""
    from inmaterio.tasks.report import markdown_table

    sections = []
    for run in runs:
        m, table = run.metrics, run.metrics["table"]
        context = [
            f"Spoon et al. (2021), BERT-base on GLUE with hardware-aware training and global drift compensation: mean drop "
            f"{SPOON_2021['gamma_1_drop_at_1_month']}% at one month with γ = 1, {SPOON_2021['gamma_half_drop_at_1_month']}% "
            "with γ = 0.5: the qualitative target is HWA + compensation within ~1-2 points at one month."
        ]
        if m.get("digital_baseline_percent") is not None:
            context.insert(0, f"All-digital baseline of the study: {m['digital_baseline_percent']}% test accuracy (10 DNPUs, "
                              "7 inputs per node, recipe ours, 30 epochs; the paper: 96.1%).")  # fmt: skip
        hwa = "" if m.get("hwa_weight_noise") is None else f" HWA forward weight noise {m['hwa_weight_noise']:.4g} (relative)."
        images = m["images"]
        sections.append(
            f"### {table['title']} (`{run.path}`)\n\n"
            f"Test accuracy (%) on {images['test']} images, mean ± std over {_count(m['seeds'], 'seed')} x {_count(m['repeats'], 'repeat')} "
            f"(each repeat a new programming); `digital`: the same trained weights on nn.Linear / nn.Conv2d; `periphery`: "
            f"read through the tiles' periphery without PCM noise; drop: digital minus the last time's mean, points. "
            f"{m['epochs']} epochs on {images['train']} images.{hwa} {run.record.get('wall_s', 0.0) / 60:.1f} min wall; "
            f"`inmaterio run {run.path / 'config.yaml'} --out {run.path}`.\n\n"
            + markdown_table(table["columns"], table["rows"])
            + "\n\n" + "\n".join(f"- {c}" for c in context)
            + f"\n\n![accuracy vs time]({run.path / 'accuracy_vs_time.png'})"
        )  # fmt: skip
    return "\n\n".join(sections)
