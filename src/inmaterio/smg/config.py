"""Configuration of the surrogate-model generator (SMG): sampling, acquisition,
post-processing, training and the whole pipeline.

Every model is a :class:`~inmaterio.config.StrictModel` (unknown keys are
errors, instances are frozen). Units are in the field names or descriptions:
volts, nanoamperes, seconds, hertz. A complete pipeline config in YAML::

    device: {type: analytic, n_activation: 7}
    sampling: {kind: sine, n_samples: 20000, seed: 0}
    test_sampling: {kind: uniform, n_samples: 2000, seed: 1}
    training: {max_epochs: 50}
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from inmaterio.config import StrictModel
from inmaterio.devices.registry import DeviceSpec
from inmaterio.surrogate.model import ACTIVATIONS, parameter_count

__all__ = [
    "MAX_PLAN_POINTS",
    "MAX_PARAMETERS",
    "SamplingConfig",
    "AcquisitionConfig",
    "PostprocessConfig",
    "TrainConfig",
    "AdaptiveConfig",
    "SMGConfig",
]


#: Most points of one sampling plan (10^8 points of 7 electrodes are 5.6 GB of float64 voltages).
MAX_PLAN_POINTS = 10**8
#: Most parameters of a surrogate's network: weights, Adam's two moments and the best copy are
#: 1.6 GB of float32 at this size, far beyond what a few million measured points can train.
MAX_PARAMETERS = 10**8


class SamplingConfig(StrictModel):
    """How the input space (the activation voltages) is sampled.

    ``sine`` / ``triangle``: every electrode ``k`` follows a wave of frequency
    ``base_frequency_hz * sqrt(p_k)`` (``p_k`` the k-th prime, so that no two
    frequencies are commensurate and the trajectory fills the box), sampled at
    ``sample_rate_hz``, with amplitude half its range around the range centre
    and a random phase drawn from ``seed``. ``uniform``: independent uniform
    draws. ``lhs``: a Latin hypercube (one sample per stratum per electrode).
    """

    kind: Literal["sine", "triangle", "uniform", "lhs"] = Field(
        "sine", description="sampling scheme: sine, triangle (waves), uniform or lhs (Latin hypercube)"
    )
    n_samples: int = Field(..., gt=0, le=MAX_PLAN_POINTS, description="number of voltage points to measure")
    seed: int = Field(0, description="seed of the random phases / random draws")
    base_frequency_hz: float = Field(
        0.5, gt=0, description="waves only: frequency of electrode 0 is base * sqrt(2), electrode k base * sqrt(p_k), Hz"
    )
    sample_rate_hz: float = Field(
        50.0,
        gt=0,
        description="waves only: samples per second of the wave; must exceed twice the highest electrode frequency (Nyquist)",
    )


class AcquisitionConfig(StrictModel):
    """How points are sent to the device."""

    batch_size: int = Field(
        1000,
        gt=0,
        description="points per device call; a checkpoint is written after every batch. Part of the result: "
        "a noisy device draws each batch's noise from the stream of the batch's first point",
    )
    progress: bool = Field(True, description="show a progress bar (only on a terminal)")


class PostprocessConfig(StrictModel):
    """Cleaning and splitting of a measured dataset (see :func:`inmaterio.smg.dataset.postprocess`)."""

    clip_na: tuple[float, float] | None = Field(
        None,
        description="instrument output limits [low, high] nA; samples at or beyond them are treated as clipped and dropped",
    )
    outlier_sigma: float | None = Field(
        None,
        gt=0,
        description="drop samples with |I - median| > outlier_sigma * 1.4826 * MAD (robust standard deviation); None keeps all",
    )
    split: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1), description="train / validation / test fractions, each >= 0, summing to 1"
    )
    seed: int = Field(0, description="seed of the random split")

    @field_validator("clip_na")
    @classmethod
    def _clip_is_interval(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError(f"clip_na must be [low, high] nA with low < high, got {list(value)}")
        return value

    @field_validator("split")
    @classmethod
    def _split_sums_to_one(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f < 0 for f in value) or abs(sum(value) - 1.0) > 1e-9:
            raise ValueError(f"split fractions must be >= 0 and sum to 1, got {list(value)} (sum {sum(value):.6g})")
        if value[0] <= 0 or value[1] <= 0:
            raise ValueError(f"split needs a non-empty train and validation fraction, got {list(value)}")
        return value


class TrainConfig(StrictModel):
    """Training of the surrogate MLP (see :func:`inmaterio.smg.train.train_surrogate`)."""

    hidden_sizes: tuple[int, ...] = Field((90,) * 5, description="widths of the hidden layers")
    activation: str = Field("relu", description="activation of the hidden layers: relu, tanh, elu or leaky_relu")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate (the peak, with a schedule)")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "constant",
        description="constant, or cosine: learning_rate * (1 + cos(pi * (epoch - 1) / max_epochs)) / 2 per epoch",
    )
    batch_size: int = Field(512, gt=0, description="samples per gradient step")
    max_epochs: int = Field(200, gt=0, description="upper limit of epochs")
    patience: int = Field(20, gt=0, description="stop after this many epochs without a better validation RMSE")
    weight_decay: float = Field(0.0, ge=0, description="Adam L2 weight decay")
    seed: int = Field(0, description="seed of the weight initialisation and of the shuffling")
    num_threads: int | None = Field(None, gt=0, description="torch CPU threads during training; None uses all cores")

    @field_validator("hidden_sizes")
    @classmethod
    def _positive_widths(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if len(value) == 0 or any(h <= 0 for h in value):
            raise ValueError(f"hidden_sizes must be a non-empty list of positive widths, got {list(value)}")
        count = parameter_count(1, value)
        if count > MAX_PARAMETERS:
            raise ValueError(
                f"hidden_sizes {list(value)} make a network of at least {count:.3g} parameters; at most "
                f"{MAX_PARAMETERS:.0e} are allowed (memory for weights and optimiser state)"
            )
        return value

    @field_validator("activation")
    @classmethod
    def _known_activation(cls, value: str) -> str:
        if value not in ACTIVATIONS:
            raise ValueError(f"unknown activation {value!r}; allowed: {sorted(ACTIVATIONS)}")
        return value


class AdaptiveConfig(StrictModel):
    """Adaptive sampling after the initial plan (see :mod:`inmaterio.smg.adaptive`).

    Each round trains an ensemble on the points measured so far, draws a pool of
    candidates (uniform points and low-dimensional slices through the range ends
    and 0 V), measures the ``points_per_round`` candidates where the members
    disagree most (no two closer than ``exclusion_radius``), and adds them to the
    data. The run measures ``sampling.n_samples + rounds * points_per_round`` points in all, fewer when
    ``stop_ratio`` ends the rounds early.
    """

    rounds: int = Field(..., ge=1, le=100, description="rounds of selection after the initial plan")
    points_per_round: int = Field(..., gt=0, le=MAX_PLAN_POINTS, description="points measured per round")
    pool_factor: int = Field(20, ge=2, le=1000, description="candidates drawn per round, as a multiple of points_per_round")
    slice_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        description="fraction of the pool on slices: 1 or 2 electrodes free, the others at their range's low end, "
        "0 V (clipped into the range) or high end",
    )
    exclusion_radius: float = Field(
        0.02,
        ge=0,
        lt=1,
        description="no two selected points closer than this, in units of the voltage box (each range scaled to 1)",
    )
    members: int = Field(3, ge=2, le=20, description="surrogates per round's ensemble (seeds training.seed + k)")
    max_epochs: int | None = Field(
        None, gt=0, description="epochs of each round's members (their ensemble only picks points); None: training.max_epochs"
    )
    seed: int = Field(0, description="seed of the candidate pools (round r draws from seed and r)")
    stop_ratio: float | None = Field(
        None,
        gt=1,
        le=100,
        description="stop before the next round once a round's picks were predicted within this factor of the "
        "validation RMSE (the picks found nothing the model did not know); None: every round",
    )


class SMGConfig(StrictModel):
    """The whole surrogate-model generator run (see :func:`inmaterio.smg.pipeline.run_smg`)."""

    device: DeviceSpec = Field(..., description="the device to model, e.g. {type: analytic}")
    sampling: SamplingConfig = Field(..., description="plan of the training data (split into train/validation/test)")
    test_sampling: SamplingConfig = Field(
        SamplingConfig(kind="uniform", n_samples=2000, seed=1),
        description="plan of an independently sampled test set measured after training",
    )
    acquisition: AcquisitionConfig = AcquisitionConfig()
    postprocess: PostprocessConfig = PostprocessConfig()
    training: TrainConfig = TrainConfig()
    consistency_repeats: int = Field(
        3, ge=0, description="how many times the reference signal (first points of the training data) is re-measured"
    )
    consistency_points: int = Field(500, gt=0, description="length of the reference signal, points")
    iv_points: int = Field(101, ge=2, le=100_000, description="points per I-V sweep")
    ensemble_members: int = Field(
        1,
        ge=1,
        le=100,
        description="surrogates trained, with seeds training.seed + k; 2 or more add the ensemble's spread and its "
        "calibration on the test set and the I-V sweeps (members 1.. in ensemble/member_<k>)",
    )
    adaptive: AdaptiveConfig | None = Field(
        None, description="rounds of adaptive sampling after the initial plan; None measures the plan only"
    )

    @model_validator(mode="after")
    def _test_set_is_independent(self) -> SMGConfig:
        if self.test_sampling == self.sampling or (
            self.test_sampling.kind == self.sampling.kind and self.test_sampling.seed == self.sampling.seed
        ):
            raise ValueError(
                f"test_sampling (kind {self.test_sampling.kind!r}, seed {self.test_sampling.seed}) must differ from "
                "sampling in kind or seed, else the test set repeats the training data"
            )
        return self
