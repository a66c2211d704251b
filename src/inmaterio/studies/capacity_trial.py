"""One trial of the capacity study (Ruiz Euler et al. 2021): one feature model at one N, all 2^N labellings.

For N points of :data:`~inmaterio.tasks.config.CAPACITY_POINTS` every one of
the ``2**N`` labellings is a binary classification problem. A classifier is a
*feature* model followed by a *decision node*: batch norm with an affine
transform, then a logistic sigmoid, trained with binary cross-entropy, full
batch, Adam (lr 0.03, betas (0.995, 0.999)), 1500 epochs. The feature models:

* ``dnpu``: one DNPU node of the surrogate, inputs on two electrodes, the
  points mapped onto the electrodes' voltage range (the points are volts);
* ``dnpu_annealed``: the same, trained up to ``attempts`` (15) times with
  Gaussian output noise whose variance, in units of the surrogate's test MSE,
  starts at 1 and is multiplied by ``1 - (n + 1) / attempts`` after attempt
  ``n`` (so it reaches 0 at the last attempt); after every attempt the
  classifier is measured on the device and counts as found there when its
  accuracy exceeds ``1 - 0.5 / N``, i.e. it classifies every point correctly
  (the points are measured in order and a classifier's measurement stops
  at its first error); the next attempt trains only the
  labellings not yet found (with ``device_prefilter`` only the classifiers
  the surrogate separates without error are measured, which makes the count
  a lower bound);
* ``logistic2`` / ``logistic3``: a layer of 2 or 3 logistic units (weights
  and biases) on the two inputs, summed with learned weights;
* ``dnpu_search`` (our recipe, not the paper's): the same DNPU, its controls
  found by a max-margin search instead of cross-entropy from a uniform start
  (:mod:`~inmaterio.studies.capacity_search`: screen random control vectors
  on the surrogate, refine the best one per labelling by gradient ascent on
  a smooth margin, set the decision node to the middle of the gap); found
  when the surrogate separates the labelling (margin > 0); the next-best
  screened vectors are tried for the labellings not separated (``restarts``
  in all), and each labelling's margin is reported, so the fraction found
  with a margin of at least the surrogate's test RMSE can be read too;
* ``dnpu_search_device``: the searched classifiers measured on the device,
  found there as for ``dnpu_annealed`` (accuracy > ``1 - 0.5 / N``); the
  labellings not found get the next-best screened vector, ``attempts``
  times in all.

The plain models retrain the labellings not yet separated with fresh
initialisations, ``restarts`` times in all (default 30: with 5 the paper's
recipe misses labellings the DNPU can separate).

All labellings of one N train at once: the feature model and the decision
node carry a leading "labelling" dimension (one DNPU node / one small
network / one batch-norm channel per labelling), and the BCE losses of the
labellings are summed, so each gets exactly the gradient it would get alone.
The two constant labellings are trained like the others.

A trial is described by a frozen :class:`CapacityTrial` (unknown keys are
errors) and run by :func:`capacity_trial`, a top-level function an executor
ships to a worker; it returns plain numbers. Its randomness comes from the
trial's seed, and its device measurements are keyed by
``("capacity_study", model, N, seed, attempt)``
(:meth:`~inmaterio.devices.base.Device.random_streams`), so a trial measures
the same in any process and whatever ran before it.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal, Union, get_args

import torch
from pydantic import Field, model_validator
from torch import nn

from inmaterio.config import StrictModel
from inmaterio.denormals import flushed_denormals
from inmaterio.errors import ConfigError
from inmaterio.nn import DNPU
from inmaterio.processors import Processor
from inmaterio.studies.common import DeviceChoice, SurrogateChoice, device_processor, surrogate_processor
from inmaterio.tasks.capacity import labellings
from inmaterio.tasks.config import CAPACITY_POINTS

__all__ = [
    "MODELS", "DEVICE_MODELS", "SEARCH_MODELS", "CapacityModel", "CapacitySettings", "CapacityTrial", "DecisionNode",
    "LogisticFeatures", "anneal_schedule", "capacity_trial", "train_classifiers",
]  # fmt: skip

#: Feature models of the study.
CapacityModel = Literal["dnpu", "dnpu_annealed", "dnpu_search", "dnpu_search_device", "logistic2", "logistic3"]
MODELS: tuple[str, ...] = get_args(CapacityModel)
#: The models whose classifiers are measured on the device.
DEVICE_MODELS = ("dnpu_annealed", "dnpu_search_device")
#: The models found by the max-margin search (screened control vectors).
SEARCH_MODELS = ("dnpu_search", "dnpu_search_device")

Electrode = Union[int, str]


class CapacitySettings(StrictModel):
    """How the classifiers of every trial are trained, searched and measured.

    epochs : Adam steps (full batch) of the cross-entropy models (>= 1).
    learning_rate : Adam's learning rate (> 0; betas (0.995, 0.999)).
    restarts : fresh initialisations per labelling of the plain models, screened vectors
        tried per labelling by ``dnpu_search`` (>= 1).
    attempts : device attempts per labelling of ``dnpu_annealed`` and ``dnpu_search_device`` (>= 1).
    screen_samples : control vectors screened by the search models (>= their restarts or attempts).
    refine_steps : gradient-ascent steps on the smooth margin (>= 0).
    refine_lr : their learning rate, V (> 0).
    temperature_na : the smooth margin's temperature, nA (> 0).
    input_electrodes : the two activation electrodes (indices or names) that take the points.
    data_range : the interval of the points mapped onto the input electrodes' voltage range
        (low < high); the default equals the bundled device's range, so the points are volts.
    device_prefilter : ``dnpu_annealed``: measure on the device only the classifiers the surrogate
        separates without error (a lower bound on the count, much less device time).
    """

    epochs: int = Field(1500, ge=1)
    learning_rate: float = Field(0.03, gt=0)
    restarts: int = Field(30, ge=1)
    attempts: int = Field(15, ge=1)
    screen_samples: int = Field(200_000, ge=1)
    refine_steps: int = Field(500, ge=0)
    refine_lr: float = Field(0.01, gt=0)
    temperature_na: float = Field(0.5, gt=0)
    input_electrodes: tuple[Electrode, Electrode] = (3, 4)
    data_range: tuple[float, float] = (-1.2, 0.6)
    device_prefilter: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> CapacitySettings:
        low, high = self.data_range
        if not low < high:
            raise ValueError(f"data_range must be (low, high) with low < high, got {list(self.data_range)}")
        if self.input_electrodes[0] == self.input_electrodes[1]:
            raise ValueError(f"input_electrodes must be two different electrodes, got {list(self.input_electrodes)}")
        return self

    def check_search(self, model: str) -> None:
        """Raise ValueError when ``model`` is a search model that would try more screened vectors than are kept."""
        if model not in SEARCH_MODELS:
            return
        name, tries = ("attempts", self.attempts) if model in DEVICE_MODELS else ("restarts", self.restarts)
        if self.screen_samples < tries:
            raise ValueError(
                f"screen_samples = {self.screen_samples} must be at least {name} = {tries} for {model}: "
                "the search tries that many screened vectors per labelling"
            )


class CapacityTrial(StrictModel):
    """One trial: ``model`` on the first ``n_points`` capacity points (4..10), all labellings.

    seed : seeds every initialisation and the screening of the trial.
    settings : :class:`CapacitySettings`.
    surrogate : the surrogate of the DNPU models.
    device : the device of ``dnpu_annealed`` and ``dnpu_search_device``.
    """

    model: CapacityModel
    n_points: int = Field(ge=4, le=len(CAPACITY_POINTS))
    seed: int = 0
    settings: CapacitySettings = CapacitySettings()
    surrogate: SurrogateChoice = SurrogateChoice()
    device: DeviceChoice = DeviceChoice()

    @model_validator(mode="after")
    def _enough_screened(self) -> CapacityTrial:
        self.settings.check_search(self.model)
        return self

    @property
    def key(self) -> str:
        """``"<model>/N=<n>"``: the trial's name in a study."""
        return f"{self.model}/N={self.n_points}"


def anneal_schedule(attempts: int = 15) -> list[float]:
    """Noise variance factors per attempt: ``f[0] = 1``, ``f[n + 1] = (1 - (n + 1) / attempts) * f[n]``."""
    factors = [1.0]
    for n in range(attempts - 1):
        factors.append((1.0 - (n + 1) / attempts) * factors[-1])
    return factors


class DecisionNode(nn.Module):
    """Batch norm with affine transform, per labelling: ``(batch, L)`` features -> ``(batch, L)`` logits.

    The logistic sigmoid of the logits is the class-1 probability; BCE on the
    logits trains it. In eval mode the running statistics of training are used
    (the decision rule a device validation applies unchanged).
    """

    def __init__(self, n_labellings: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(n_labellings, affine=True)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.norm(features)

    @classmethod
    @torch.no_grad()
    def from_threshold(cls, threshold_na: torch.Tensor, sign: torch.Tensor) -> DecisionNode:
        """A node in eval mode with logit ``sign * (f - threshold_na)``, per labelling (both ``(L,)``).

        Running mean = threshold, running variance = ``1 - eps`` (so the
        normalisation divides by 1), weight = sign, bias = 0.
        """
        node = cls(len(threshold_na))
        node.norm.running_mean.copy_(threshold_na)
        node.norm.running_var.fill_(1.0 - node.norm.eps)
        node.norm.weight.copy_(sign)
        node.norm.bias.zero_()
        node.eval()
        return node


class LogisticFeatures(nn.Module):
    """``L`` independent networks of ``hidden`` logistic units: ``(batch, 2)`` -> ``(batch, L)``.

    ``h = sigmoid(x W[l]^T + b[l])`` (``hidden`` units), ``feature = h . v[l]``;
    weights initialised N(0, 1), biases and output weights as well.
    """

    def __init__(self, n_labellings: int, hidden: int, generator: torch.Generator) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(n_labellings, hidden, 2, generator=generator))
        self.b = nn.Parameter(torch.randn(n_labellings, hidden, generator=generator))
        self.v = nn.Parameter(torch.randn(n_labellings, hidden, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.sigmoid(torch.einsum("bi,lhi->blh", x, self.w) + self.b)
        return torch.einsum("blh,lh->bl", h, self.v)


def train_classifiers(
    features: nn.Module, x: torch.Tensor, labels: torch.Tensor, *, epochs: int = 1500, lr: float = 0.03
) -> tuple[nn.Module, torch.Tensor]:
    """Train ``features`` + a decision node on ``x (N, 2)`` for ``labels (L, N)``; return the decision and accuracy ``(L,)``.

    Full batch, Adam (lr, betas (0.995, 0.999)), summed BCE; the DNPU
    controls are kept in range (``constrain`` after every step); subnormal
    floats are flushed to zero (:func:`~inmaterio.denormals.flushed_denormals`). Accuracy is
    measured in eval mode (running statistics), without output noise.
    """
    decision = DecisionNode(labels.shape[0])
    params = list(features.parameters()) + list(decision.parameters())
    optimiser = torch.optim.Adam(params, lr=lr, betas=(0.995, 0.999))
    targets = labels.T.to(torch.float32)  # (N, L)
    bce = nn.BCEWithLogitsLoss(reduction="none")
    constrain = getattr(features, "constrain", None)
    features.train()
    decision.train()
    with flushed_denormals():  # the BCE of separated labellings saturates: its gradients go subnormal
        for _ in range(epochs):
            optimiser.zero_grad(set_to_none=True)
            loss = bce(decision(features(x)), targets).mean(dim=0).sum()
            if not torch.isfinite(loss):
                raise ConfigError(f"the capacity training diverged (loss {float(loss)}); lower the learning rate")
            loss.backward()
            optimiser.step()
            if constrain is not None:
                with torch.no_grad():
                    constrain()
    features.eval()
    decision.eval()
    with torch.no_grad():
        predicted = decision(_quiet(features, x)) > 0
    return decision, (predicted == targets.bool()).float().mean(dim=0)


def _quiet(features: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Features without the surrogate's output noise (DNPU features) or as they are."""
    processor = getattr(features, "processor", None)
    if processor is None:
        return features(x)
    with processor.noise_off():
        return features(x)


def capacity_trial(trial: CapacityTrial) -> dict[str, Any]:
    """Run one trial (see the module docstring) and return plain numbers.

    Returns found counts and fractions (constant labellings included), the
    per-restart or per-attempt history, the searched models' margins, the
    found masks of the device models, and the wall time (``seconds``). The
    caller's torch random state is left as it was.

    Raises
    ------
    ConfigError
        ``trial`` is not a :class:`CapacityTrial`; the surrogate or the device cannot be built;
        ``dnpu_annealed`` on a surrogate without a test RMSE; a training that diverges.
    """
    if not isinstance(trial, CapacityTrial):
        raise ConfigError(f"capacity_trial takes a CapacityTrial, got {type(trial).__name__}")
    start = time.perf_counter()
    model, n, seed, settings = trial.model, trial.n_points, trial.seed, trial.settings
    x = torch.tensor(CAPACITY_POINTS[:n], dtype=torch.float32)
    labels = labellings(n)
    result: dict[str, Any] = {"model": model, "n_points": n, "labellings": len(labels), "seed": seed}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if model.startswith("logistic"):
            hidden = int(model[-1])
            make = lambda count, r: LogisticFeatures(count, hidden, torch.Generator().manual_seed(seed * 1000 + r))  # noqa: E731
            result.update(_with_restarts(make, x, labels, settings))
        else:
            processor = surrogate_processor(trial.surrogate)
            electrodes, data_range = settings.input_electrodes, settings.data_range
            if model == "dnpu":
                make = lambda count, r: DNPU(processor, count, electrodes, data_range, seed=seed * 1000 + r)  # noqa: E731
                result.update(_with_restarts(make, x, labels, settings))
            else:
                device = device_processor(trial.device, processor) if model in DEVICE_MODELS else None
                try:
                    if model == "dnpu_annealed":
                        result.update(_annealed(trial, processor, device, x, labels))
                    else:
                        result.update(_searched(trial, processor, device, x, labels))
                finally:  # the trial built the device: an instrument's tasks are released, its outputs at 0 V
                    if device is not None:
                        device.close()
    result["seconds"] = time.perf_counter() - start
    return result


def _with_restarts(make, x: torch.Tensor, labels: torch.Tensor, settings: CapacitySettings) -> dict[str, Any]:
    """Train all labellings; retrain those not yet separated with fresh initialisations, ``restarts`` times in all.

    ``make(count, restart)`` builds the feature model of ``count`` labellings.
    """
    pending = torch.arange(len(labels))
    found = torch.zeros(len(labels), dtype=torch.bool)
    per_restart = []
    for r in range(settings.restarts):
        if len(pending) == 0:
            break
        _, acc = train_classifiers(make(len(pending), r), x, labels[pending], epochs=settings.epochs, lr=settings.learning_rate)
        ok = acc == 1.0
        found[pending[ok]] = True
        per_restart.append(int(ok.sum()))
        pending = pending[~ok]
    return {"found": int(found.sum()), "fraction": float(found.float().mean()), "found_per_restart": per_restart}


def _selected(layer: DNPU, decision: DecisionNode, keep: torch.Tensor, electrodes, data_range) -> tuple[DNPU, DecisionNode]:
    """The nodes ``keep (L,) bool`` of a trained DNPU layer (built with ``electrodes``, ``data_range``)
    and their decision channels, as new modules in eval mode."""
    index = keep.nonzero().flatten()
    sub = DNPU(layer.processor, len(index), electrodes, data_range)
    node = DecisionNode(len(index))
    with torch.no_grad():
        sub.controls.copy_(layer.controls[index])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(node.norm, name).copy_(getattr(decision.norm, name)[index])
    sub.eval()
    node.eval()
    return sub, node


def _found_on_device(
    trial: CapacityTrial, attempt: int, layer: DNPU, decision: DecisionNode, measure: torch.Tensor, x: torch.Tensor,
    labels: torch.Tensor, device: Processor,
) -> tuple[torch.Tensor, int]:  # fmt: skip
    """The classifiers ``measure (L,) bool`` of ``layer`` + ``decision`` (for ``labels (L, N)``) that classify
    the N points on ``device`` with accuracy > ``1 - 0.5 / N`` (the decision rule unchanged), and how many
    operating points that took.

    Accuracy > ``1 - 0.5 / N`` means no error, so the points are measured one at a time, in their order,
    each only for the classifiers that classified every point before it correctly: a classifier's
    measurement stops at its first error, as it would in the lab, and the verdicts are those of measuring
    every point. Returns ``(found (L,) bool, operating points measured)``. The measurements of one
    attempt are keyed by ``("capacity_study", model, N, seed, attempt)``, the k-th point by call k.
    """
    from inmaterio.nn import processor_swapped

    settings = trial.settings
    alive = measure.clone()
    measured_points = 0
    keys = ("capacity_study", trial.model, trial.n_points, trial.seed, attempt)
    with torch.no_grad(), device.device.random_streams(*keys):
        for k in range(x.shape[0]):
            if not alive.any():
                break
            index = alive.nonzero().flatten()
            sub, node = _selected(layer, decision, alive, settings.input_electrodes, settings.data_range)
            with processor_swapped(sub, device):
                high = node(sub(x[k : k + 1]))[0] > 0  # (alive,)
            alive[index[high != labels[index, k].bool()]] = False
            measured_points += len(index)
    return alive, measured_points


def _annealed(trial: CapacityTrial, processor, device, x: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Noise-annealed training with device validation after each attempt (see the module docstring)."""
    settings = trial.settings
    rmse = processor.info.noise_na
    if rmse is None:
        raise ConfigError("the surrogate has no test RMSE (info.noise_na); the model dnpu_annealed needs it")
    pending = torch.arange(len(labels))
    surrogate_found = torch.zeros(len(labels), dtype=torch.bool)
    device_found = torch.zeros(len(labels), dtype=torch.bool)
    history = []
    for attempt, factor in enumerate(anneal_schedule(settings.attempts)):
        if len(pending) == 0:
            break
        processor.set_noise(rmse * math.sqrt(factor))
        layer = DNPU(processor, len(pending), settings.input_electrodes, settings.data_range, seed=trial.seed * 100 + attempt)
        decision, acc = train_classifiers(layer, x, labels[pending], epochs=settings.epochs, lr=settings.learning_rate)
        surrogate_found[pending[acc == 1.0]] = True
        measure = acc == 1.0 if settings.device_prefilter else torch.ones_like(acc, dtype=torch.bool)
        ok, points = _found_on_device(trial, attempt, layer, decision, measure, x, labels[pending], device)
        device_found[pending[ok]] = True
        history.append({
            "attempt": attempt, "noise_variance_factor": factor, "trained": len(pending),
            "measured_on_device": int(measure.sum()), "found_on_device": int(ok.sum()), "operating_points": points,
        })  # fmt: skip
        pending = pending[~ok]
    processor.set_noise(0.0)
    return {
        "found": int(device_found.sum()),
        "fraction": float(device_found.float().mean()),
        "found_on_surrogate_any_attempt": int(surrogate_found.sum()),
        "device_found_mask": device_found.tolist(),  # per labelling, in the order of labellings(N)
        "surrogate_found_mask": surrogate_found.tolist(),
        "attempts": history,
    }


def _searched(trial: CapacityTrial, processor, device, x: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Max-margin search (see :mod:`~inmaterio.studies.capacity_search`), found on the surrogate or on ``device``."""
    from inmaterio.studies.capacity_search import constant_mask, gap_threshold, refine_margin, screen_controls

    settings = trial.settings
    electrodes, data_range = settings.input_electrodes, settings.data_range
    tries = settings.attempts if device is not None else settings.restarts
    probe = DNPU(processor, 1, electrodes, data_range)
    screen = screen_controls(probe, x, labels, settings.screen_samples, tries, torch.Generator().manual_seed(trial.seed))
    constant = constant_mask(labels)
    margin_na = torch.where(constant, torch.inf, -torch.inf)  # best surrogate margin of a tried classifier
    found = constant.clone() if device is None else torch.zeros_like(constant)
    pending = (~found).nonzero().flatten()
    history = []
    for attempt in range(tries):
        if len(pending) == 0:
            break
        layer = DNPU(processor, len(pending), electrodes, data_range)
        with torch.no_grad():
            layer.controls.copy_(screen.controls[pending, attempt])
        high_class = screen.high_class[pending, attempt]
        margin = refine_margin(
            layer, x, labels[pending], high_class, steps=settings.refine_steps, lr=settings.refine_lr,
            temperature_na=settings.temperature_na,
        )  # fmt: skip
        margin_na[pending] = torch.maximum(margin_na[pending], margin)
        with torch.no_grad(), processor.noise_off():
            decision = DecisionNode.from_threshold(*gap_threshold(layer(x), labels[pending], high_class))
        entry = {"attempt": attempt, "tried": len(pending)}
        if device is None:
            ok = margin > 0
        else:
            everything = torch.ones(len(pending), dtype=torch.bool)
            ok, entry["operating_points"] = _found_on_device(
                trial, attempt, layer, decision, everything, x, labels[pending], device
            )
        found[pending[ok]] = True
        history.append(entry | {"found": int(ok.sum())})
        pending = pending[~ok]
    rmse = processor.info.noise_na
    result = {
        "found": int(found.sum()),
        "fraction": float(found.float().mean()),
        "found_mask": found.tolist(),  # per labelling, in the order of labellings(N)
        "surrogate_margin_na": [None if m == float("inf") else round(m, 4) for m in margin_na.tolist()],
        "screen_samples": settings.screen_samples,
        "attempts": history,
    }
    if rmse is not None:
        robust = constant | (margin_na >= rmse)
        result |= {"margin_threshold_na": rmse, "found_margin_ge_rmse": int(robust.sum()),
                   "fraction_margin_ge_rmse": float(robust.float().mean())}  # fmt: skip
    return result
