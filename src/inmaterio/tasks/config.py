"""The YAML file of ``inmaterio run CONFIG.yaml``: one task, its back end and its validation.

Example (``examples/gates_gd.yaml``)::

    task:
      type: gates            # gates | rings | capacity
      gates: [AND, OR, NAND, NOR, XOR, XNOR]
      algorithm: gd          # gd | ga
      loss: corrsig
    surrogate:
      model_dir: null        # null: the bundled surrogate
    validation:
      enabled: true          # re-evaluate the solutions on the virtual device
    seed: 0

Every field is documented on its model below; unknown keys are errors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import Field, field_validator, model_serializer, model_validator

from inmaterio.config import StrictModel
from inmaterio.devices.registry import DeviceSpec
from inmaterio.tasks.gates import GATES, GateName
from inmaterio.tasks.registry import RunnableConfig
from inmaterio.training.ga import GAConfig
from inmaterio.training.gd import GDConfig
from inmaterio.training.losses import LossName

__all__ = [
    "CAPACITY_POINTS",
    "CapacityTask",
    "GatesTask",
    "RingsTask",
    "RunConfig",
    "SurrogateBackend",
    "ValidationConfig",
]

#: The capacity task's points, in the order they are used (N points = the first N).
CAPACITY_POINTS: tuple[tuple[float, float], ...] = (
    (-0.7, -0.7), (-0.7, 0.5), (0.5, -0.7), (0.5, 0.5), (-0.35, 0.0),
    (0.25, 0.0), (0.0, -0.35), (0.0, 0.25), (-1.1, 0.35), (0.35, -1.1),
)  # fmt: skip

Electrode = Union[int, str]


class SurrogateBackend(StrictModel):
    """The surrogate the task is trained on.

    model_dir : a saved surrogate folder; null = the bundled default model.
    noise : add Gaussian output noise while training (std ``noise_std_na``,
        default the surrogate's test RMSE).
    noise_std_na : standard deviation of that noise, nA (>= 0).
    ensemble : train on the ensemble in ``model_dir`` (an ``smg export`` of a run with an ensemble, or the
        SMG run folder itself; :func:`~inmaterio.surrogate.load_ensemble`), or on the bundled model's
        ensemble when ``model_dir`` is null: the members' mean.
    predictive_noise : with ``ensemble``: the output noise of each point also carries the ensemble's calibrated
        spread there, in quadrature with ``noise_std_na`` (0 when ``noise`` is off), so training keeps
        its margins where the surrogate is sure (:class:`~inmaterio.processors.SurrogateProcessor`).
    ``ensemble`` and ``predictive_noise`` are left out of the dumped config when false, so earlier runs keep
    their identity.
    """

    model_dir: Path | None = None
    noise: bool = False
    noise_std_na: float | None = Field(default=None, ge=0)
    ensemble: bool = False
    predictive_noise: bool = False

    @model_validator(mode="after")
    def _predictive_noise_needs_an_ensemble(self) -> SurrogateBackend:
        if self.predictive_noise and not self.ensemble:
            raise ValueError("predictive_noise: true takes the spread of an ensemble; set ensemble: true")
        return self

    @model_serializer(mode="wrap")
    def _dump_without_unused_ensemble(self, handler) -> dict[str, Any]:
        data = handler(self)
        for key in ("ensemble", "predictive_noise"):
            if not getattr(self, key):
                data.pop(key, None)
        return data


class ValidationConfig(StrictModel):
    """Re-evaluation of the trained solutions on a device.

    enabled : validate (default true).
    device : the device; null = the virtual DNPU the surrogate was generated
        from (its provenance record).
    plateau_samples : samples per operating point, averaged (>= 1).
    ramp_samples : samples of the ramps from and back to 0 V (>= 0).
    repeats : repeated measurements of the whole test set (>= 1); accuracies
        are reported as mean and minimum over them.
    """

    enabled: bool = True
    device: DeviceSpec | None = None
    plateau_samples: int = Field(default=4, ge=1)
    ramp_samples: int = Field(default=5, ge=0)
    repeats: int = Field(default=1, ge=1)


def _with_task_defaults(default: GDConfig, value: object) -> object:
    """A partial ``gd:`` mapping completed with the task's own defaults (not GDConfig's).

    Without this, ``gd: {epochs: 50}`` would silently reset the task's tuned
    learning rate (and betas) to the generic defaults of :class:`GDConfig`.
    Task betas are dropped when the chosen optimiser does not use betas.
    """
    if not isinstance(value, dict):
        return value
    base = {k: getattr(default, k) for k in default.model_fields_set if k not in value}
    if value.get("optimizer", default.optimizer) not in ("adam", "adamw"):
        base.pop("betas", None)
    return {**base, **value}


class _GDTask(StrictModel):
    @field_validator("gd", mode="before", check_fields=False)
    @classmethod
    def _keep_task_gd_defaults(cls, value: object) -> object:
        return _with_task_defaults(cls.model_fields["gd"].default, value)


class _TrainedTask(_GDTask):
    algorithm: Literal["gd", "ga"] = "gd"
    gd: GDConfig = GDConfig()
    ga: GAConfig = GAConfig()


class RefinementConfig(StrictModel):
    """Task-aware refinement of the surrogate around the trained solutions (:mod:`inmaterio.surrogate.refine`).

    Each round measures the validation device at the solutions' operating points and
    around them, fine-tunes a copy of the surrogate on every point measured so far,
    and re-trains the solutions on the copy from where they are, within the measured box.

    rounds : measure / fine-tune / re-train cycles (>= 1).
    candidates : solutions per gate carried through the refinement (>= 1), each the best of its own
        ``attempts`` restarts; the one with the widest class gap on the last refined surrogate is kept.
    points_per_operating_point : device points drawn in a box around each operating point (>= 0),
        besides the point itself.
    radius_v : half-width of that box (V, > 0); re-training keeps the controls inside it (a trust
        region: the refined surrogate is fitted there and nowhere else).
    fine_tune_epochs : full-batch Adam steps of the fine-tuning (>= 1).
    learning_rate : Adam's learning rate of the fine-tuning (> 0).
    anchor_points : uniform random voltages where the copy is held to the original surrogate (>= 0).
    retrain_epochs : gradient-descent epochs re-training the solutions on the copy (>= 1).
    max_operating_points : at most this many operating points per round, a random subset drawn
        anew each round (>= 1; null: all). A network has one per DNPU node and training sample
        (the rings' 2-2-1: 5 per sample), a gate four. Left out of the dumped config when null.
    """

    rounds: int = Field(default=2, ge=1)
    candidates: int = Field(default=1, ge=1)
    points_per_operating_point: int = Field(default=16, ge=0)
    radius_v: float = Field(default=0.05, gt=0)
    fine_tune_epochs: int = Field(default=300, ge=1)
    learning_rate: float = Field(default=1e-3, gt=0)
    anchor_points: int = Field(default=4096, ge=0)
    retrain_epochs: int = Field(default=200, ge=1)
    max_operating_points: int | None = Field(default=None, ge=1)

    @model_serializer(mode="wrap")
    def _dump_without_unused_limit(self, handler) -> dict[str, Any]:
        data = handler(self)
        if self.max_operating_points is None:
            data.pop("max_operating_points", None)
        return data


class GatesTask(_TrainedTask):
    """All chosen two-input Boolean gates, each on one DNPU.

    gates : names among AND, OR, NAND, NOR, XOR, XNOR (no repeats).
    input_electrodes : the two activation electrodes (names or indices) taking the inputs.
    loss : loss (GD) or negative fitness (GA) from the registry.
    attempts : independent initialisations per gate; the best is kept.
    gd, ga : settings of the chosen algorithm; keys of ``gd`` not given keep
        the task's defaults (learning rate 0.02, 400 epochs).
    train_on : ``surrogate`` (default) or ``device``: evolution in materio,
        the genetic algorithm measuring every generation on the validation
        device (requires ``algorithm: ga``; a device has no gradient).
    noise_na : the device noise, nA (> 0): the standard error of one measurement.
        Class separations are reported in units of it, and loss ``noise_margin``
        asks for ``margin`` of them. null: the noise floor on the surrogate's model
        card (the RMS standard error of the device measurements it was tested on).
    margin : the class gap that loss ``noise_margin`` asks for, in units of ``noise_na`` (> 0).
    refine : task-aware refinement of the surrogate after training (null: none); needs
        ``algorithm: gd``, ``train_on: surrogate`` and a validation device.
    """

    type: Literal["gates"]
    gates: list[GateName] = Field(default_factory=lambda: list(GATES))
    input_electrodes: tuple[Electrode, Electrode] = (3, 4)
    train_on: Literal["surrogate", "device"] = "surrogate"
    loss: LossName = "corrsig"
    attempts: int = Field(default=4, ge=1)
    noise_na: float | None = Field(default=None, gt=0)
    margin: float = Field(default=8.0, gt=0)
    refine: RefinementConfig | None = None
    gd: GDConfig = GDConfig(learning_rate=0.02, epochs=400)

    @model_validator(mode="after")
    def _device_needs_ga(self) -> GatesTask:
        if self.train_on == "device" and self.algorithm != "ga":
            raise ValueError(f"train_on: device needs algorithm: ga (a device has no gradient), got algorithm: {self.algorithm}")
        return self

    @model_validator(mode="after")
    def _refine_needs_gd(self) -> GatesTask:
        if self.refine is not None and (self.algorithm != "gd" or self.train_on != "surrogate"):
            raise ValueError(
                "refine re-trains on the refined surrogate by gradient descent: it needs algorithm: gd and "
                f"train_on: surrogate, got algorithm: {self.algorithm}, train_on: {self.train_on}"
            )
        return self

    @model_validator(mode="after")
    def _unique_gates(self) -> GatesTask:
        if not self.gates:
            raise ValueError("gates is empty; list at least one of AND, OR, NAND, NOR, XOR, XNOR")
        if len(set(self.gates)) != len(self.gates):
            raise ValueError(f"gates repeats a gate: {self.gates}")
        return self


class RingsTask(_GDTask):
    """Two concentric classes (inner disc, outer ring) separated by a gap.

    architecture : ``single`` (one DNPU) or ``2-2-1`` (Ruiz Euler et al. 2021).
    n_train, n_test : points per class.
    gap : gap between the classes, in data units (the disc has radius 1).
    input_electrodes : the two data electrodes of every node.
    loss : stage-one loss (default: negative Fisher criterion); stage two
        fits a logistic neuron on the standardised output.
    attempts : independent trainings; the best (lowest training loss) is kept.
    gd : the optimiser settings of stage one; keys not given keep the task's
        defaults (learning rate 0.0065, 400 epochs).
    refine : task-aware refinement of the surrogate around the trained network (null: none): the
        device is measured where every node operates on the training set, a copy of the surrogate
        is fine-tuned there and the network re-trained on it (``candidates`` must be 1: one network
        is carried); needs a validation device. Left out of the dumped config when null.
    """

    type: Literal["rings"]
    architecture: Literal["single", "2-2-1"] = "single"
    n_train: int = Field(default=500, ge=2)
    n_test: int = Field(default=250, ge=2)
    gap: float = Field(default=0.1, ge=0, lt=1.4)
    input_electrodes: tuple[Electrode, Electrode] = (3, 4)
    loss: LossName = "fisher"
    attempts: int = Field(default=3, ge=1)
    gd: GDConfig = GDConfig(learning_rate=0.0065, epochs=400)
    refine: RefinementConfig | None = None

    @model_validator(mode="after")
    def _one_network_is_refined(self) -> RingsTask:
        if self.refine is not None and self.refine.candidates != 1:
            raise ValueError(
                f"refine.candidates: the ring task refines its one trained network; give 1, got {self.refine.candidates}"
            )
        return self

    @model_serializer(mode="wrap")
    def _dump_without_unused_refine(self, handler) -> dict[str, Any]:
        data = handler(self)
        if self.refine is None:
            data.pop("refine", None)
        return data


class CapacityTask(_TrainedTask):
    """Capacity (VC-dimension) estimate on the first N of :data:`CAPACITY_POINTS`.

    n_points : the N to try (each in 4..10).
    data_range : the data interval mapped onto the input electrodes' voltage
        range; the default equals the bundled device's range, so the points
        are the input voltages themselves (V).
    attempts : independent trainings per labelling; found if any separates it.
    loss : the training loss.
    gd, ga : settings of the chosen algorithm; keys of ``gd`` not given keep
        the task's defaults (learning rate 0.03, betas (0.995, 0.999), 500 epochs).
    """

    type: Literal["capacity"]
    n_points: list[int] = Field(default_factory=lambda: [4, 5, 6])
    data_range: tuple[float, float] = (-1.2, 0.6)
    input_electrodes: tuple[Electrode, Electrode] = (3, 4)
    loss: LossName = "fisher"
    attempts: int = Field(default=3, ge=1)
    gd: GDConfig = GDConfig(learning_rate=0.03, betas=(0.995, 0.999), epochs=500)

    @model_validator(mode="after")
    def _points_in_range(self) -> CapacityTask:
        bad = [n for n in self.n_points if not 4 <= n <= len(CAPACITY_POINTS)]
        if bad or not self.n_points:
            raise ValueError(f"n_points must be a non-empty list of values in 4..{len(CAPACITY_POINTS)}, got {self.n_points}")
        return self


class RunConfig(RunnableConfig):
    """One ``inmaterio run`` job of a DNPU task: task, surrogate, validation, seed."""

    task: Annotated[Union[GatesTask, RingsTask, CapacityTask], Field(discriminator="type")]
    surrogate: SurrogateBackend = SurrogateBackend()
    validation: ValidationConfig = ValidationConfig()
    seed: int = 0
