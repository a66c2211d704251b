"""The capacity study of Ruiz Euler et al. (2021): DNPU vs small logistic networks, N = 4..10 points.

For N points of :data:`~inmaterio.tasks.config.CAPACITY_POINTS` every one of
the ``2**N`` labellings is a binary classification problem. A classifier is a
*feature* model followed by a *decision node*: batch norm with an affine
transform, then a logistic sigmoid, trained with binary cross-entropy, full
batch, Adam (lr 0.03, betas (0.995, 0.999)), 1500 epochs. The feature models:

* ``dnpu``: one DNPU node of the surrogate, inputs on two electrodes, the
  points mapped onto the electrodes' voltage range (the points are volts);
* ``dnpu_annealed``: the same, trained up to 15 times with Gaussian output
  noise whose variance, in units of the surrogate's test MSE, starts at 1 and
  is multiplied by ``1 - (n + 1) / 15`` after attempt ``n`` (so it reaches 0
  at the last attempt); after every attempt the classifier is measured on the
  virtual device and counts as found there when its accuracy exceeds
  ``1 - 0.5 / N``; the next attempt trains only the labellings not yet found
  (with ``device_prefilter`` only the classifiers the surrogate separates
  without error are measured, which makes the count a lower bound);
* ``logistic2`` / ``logistic3``: a layer of 2 or 3 logistic units (weights
  and biases) on the two inputs, summed with learned weights;
* ``dnpu_search`` (our recipe, not the paper's): the same DNPU, its controls
  found by a max-margin search instead of cross-entropy from a uniform start
  (:mod:`~inmaterio.tasks.capacity_search`: screen random control vectors
  on the surrogate, refine the best one per labelling by gradient ascent on
  a smooth margin, set the decision node to the middle of the gap); found
  when the surrogate separates the labelling (margin > 0); the next-best
  screened vectors are tried for the labellings not separated (``restarts``
  in all), and each labelling's margin is reported, so the fraction found
  with a margin of at least the surrogate's test RMSE can be read too;
* ``dnpu_search_device``: the searched classifiers measured on the virtual
  device, found there as for ``dnpu_annealed`` (accuracy > ``1 - 0.5 / N``);
  the labellings not found get the next-best screened vector, ``attempts``
  times in all.

The plain models retrain the labellings not yet separated with fresh
initialisations, ``restarts`` times in all (default 30: with 5 the paper's
recipe misses labellings the DNPU can separate).

All labellings of one N train at once: the feature model and the decision
node carry a leading "labelling" dimension (one DNPU node / one small
network / one batch-norm channel per labelling), and the BCE losses of the
labellings are summed, so each gets exactly the gradient it would get alone.
The two constant labellings are trained like the others.

:func:`capacity_trial` runs one (model, N, seed) case and returns plain
numbers; it is a top-level function so an executor can ship it to a worker.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from torch import nn

from inmaterio.errors import ConfigError
from inmaterio.nn import DNPU
from inmaterio.processors import Processor
from inmaterio.tasks.capacity import labellings
from inmaterio.tasks.config import CAPACITY_POINTS

__all__ = ["MODELS", "DecisionNode", "LogisticFeatures", "anneal_schedule", "capacity_trial", "train_classifiers"]

#: Feature models of the study.
MODELS = ("dnpu", "dnpu_annealed", "dnpu_search", "dnpu_search_device", "logistic2", "logistic3")


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
    controls are kept in range (``constrain`` after every step). Accuracy is
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


def capacity_trial(spec: dict[str, Any]) -> dict[str, Any]:
    """One case of the study: ``spec`` = model, n_points, seed, epochs, restarts (plain models:
    labellings not yet separated are retrained with fresh initialisations, 30
    times in all by default), input_electrodes, data_range, and for DNPU
    models ``surrogate_dir`` (None: bundled) and, for
    ``dnpu_annealed``, ``device`` (a device spec such as ``{"type": "analytic"}``
    or ``{"type": "hopping", ...}``; None: the surrogate's own virtual DNPU, on
    ``device_threads`` threads), ``plateau_samples``, ``attempts`` and
    ``device_prefilter`` (False: every classifier of an attempt is measured
    on the device; True: only those the surrogate separates without error, a
    lower bound on the found count that saves most of the device time at
    large N).

    ``dnpu_search`` and ``dnpu_search_device`` also take ``screen_samples``
    (control vectors screened, default 200,000), ``refine_steps`` (500),
    ``refine_lr`` (0.01 V) and ``temperature_na`` (0.5 nA); ``restarts``
    (surrogate) or ``attempts`` (device) screened vectors are tried per labelling.

    Returns found counts and fractions (constant labellings included), the
    per-attempt history of the annealed and searched models, the searched
    model's margins, and the wall time.
    """
    start = time.perf_counter()
    model, n = spec["model"], int(spec["n_points"])
    if model not in MODELS:
        raise ConfigError(f"unknown capacity model '{model}'; choose one of {MODELS}")
    seed = int(spec["seed"])
    torch.manual_seed(seed)
    x = torch.tensor(CAPACITY_POINTS[:n], dtype=torch.float32)
    labels = labellings(n)
    epochs = int(spec.get("epochs", 1500))
    result: dict[str, Any] = {"model": model, "n_points": n, "labellings": len(labels), "seed": spec["seed"]}
    restarts = int(spec.get("restarts", 30))
    if model.startswith("logistic"):
        hidden = int(model[-1])
        make = lambda count, r: LogisticFeatures(count, hidden, torch.Generator().manual_seed(seed * 1000 + r))  # noqa: E731
        result.update(_with_restarts(make, x, labels, restarts, epochs))
    else:
        processor = _surrogate_processor(spec.get("surrogate_dir"))
        electrodes = spec.get("input_electrodes", (3, 4))
        data_range = tuple(spec.get("data_range", (-1.2, 0.6)))
        if model == "dnpu":
            make = lambda count, r: DNPU(processor, count, electrodes, data_range, seed=seed * 1000 + r)  # noqa: E731
            result.update(_with_restarts(make, x, labels, restarts, epochs))
        elif model == "dnpu_annealed":
            result.update(_annealed(spec, processor, electrodes, data_range, x, labels, epochs))
        else:
            device = _validation_device(spec, processor) if model == "dnpu_search_device" else None
            tries = int(spec.get("attempts", 15)) if device is not None else restarts
            result.update(_searched(spec, processor, electrodes, data_range, x, labels, tries, device))
    result["seconds"] = time.perf_counter() - start
    return result


def _with_restarts(make, x: torch.Tensor, labels: torch.Tensor, restarts: int, epochs: int) -> dict[str, Any]:
    """Train all labellings; retrain those not yet separated with fresh initialisations, ``restarts`` times in all.

    ``make(count, restart)`` builds the feature model of ``count`` labellings.
    """
    pending = torch.arange(len(labels))
    found = torch.zeros(len(labels), dtype=torch.bool)
    per_restart = []
    for r in range(restarts):
        if len(pending) == 0:
            break
        _, acc = train_classifiers(make(len(pending), r), x, labels[pending], epochs=epochs)
        ok = acc == 1.0
        found[pending[ok]] = True
        per_restart.append(int(ok.sum()))
        pending = pending[~ok]
    return {"found": int(found.sum()), "fraction": float(found.float().mean()), "found_per_restart": per_restart}


def _surrogate_processor(model_dir: str | None) -> Processor:
    from inmaterio.processors import SurrogateProcessor
    from inmaterio.surrogate import load_default_surrogate, load_surrogate

    return SurrogateProcessor(load_default_surrogate() if model_dir is None else load_surrogate(model_dir))


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


def _validation_device(spec: dict[str, Any], processor: Processor):
    """The device of ``spec['device']`` (None: the surrogate's own virtual DNPU) as a DeviceProcessor."""
    from inmaterio.config import validate_config
    from inmaterio.devices.hopping import HoppingDevice
    from inmaterio.devices.registry import DeviceFile, build_device, device_config_from_description
    from inmaterio.processors import DeviceProcessor

    if spec.get("device") is None:  # the virtual DNPU the surrogate was generated from
        config = device_config_from_description(processor.info.provenance["device"])
        physical = HoppingDevice(config, n_threads=spec.get("device_threads", 1))
    else:
        physical = build_device(validate_config(DeviceFile, {"device": spec["device"]}, "spec['device']").device)
    return DeviceProcessor(physical, plateau_samples=int(spec.get("plateau_samples", 1)))


def _found_on_device(layer: DNPU, decision: DecisionNode, measure: torch.Tensor, x: torch.Tensor, labels: torch.Tensor,
                     device: Processor, electrodes, data_range) -> torch.Tensor:
    """``(L,)`` bool: the classifiers ``measure (L,) bool`` of ``layer`` + ``decision`` (for ``labels (L, N)``)
    that classify the N points on ``device`` with accuracy > ``1 - 0.5 / N`` (the decision rule unchanged)."""
    from inmaterio.nn import processor_swapped

    ok = torch.zeros_like(measure)
    if measure.any():
        sub, node = _selected(layer, decision, measure, electrodes, data_range)
        with torch.no_grad(), processor_swapped(sub, device):
            measured = node(sub(x)) > 0  # (N, measured)
        device_acc = (measured == labels[measure].T.bool()).float().mean(dim=0)
        ok[measure] = device_acc > 1.0 - 0.5 / x.shape[0]
    return ok


def _annealed(spec, processor, electrodes, data_range, x, labels, epochs) -> dict[str, Any]:
    """Noise-annealed training with device validation after each attempt (see the module docstring)."""
    device = _validation_device(spec, processor)
    rmse = processor.info.noise_na
    if rmse is None:
        raise ConfigError("the surrogate has no test RMSE (info.noise_na); the annealed model needs it")
    prefilter = bool(spec.get("device_prefilter", False))
    pending = torch.arange(len(labels))
    surrogate_found = torch.zeros(len(labels), dtype=torch.bool)
    device_found = torch.zeros(len(labels), dtype=torch.bool)
    history = []
    for attempt, factor in enumerate(anneal_schedule(int(spec.get("attempts", 15)))):
        if len(pending) == 0:
            break
        processor.set_noise(rmse * math.sqrt(factor))
        layer = DNPU(processor, len(pending), electrodes, data_range, seed=int(spec["seed"]) * 100 + attempt)
        decision, acc = train_classifiers(layer, x, labels[pending], epochs=epochs)
        surrogate_found[pending[acc == 1.0]] = True
        measure = acc == 1.0 if prefilter else torch.ones_like(acc, dtype=torch.bool)
        ok = _found_on_device(layer, decision, measure, x, labels[pending], device, electrodes, data_range)
        device_found[pending[ok]] = True
        history.append({
            "attempt": attempt, "noise_variance_factor": factor, "trained": len(pending),
            "measured_on_device": int(measure.sum()), "found_on_device": int(ok.sum()),
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


def _searched(spec, processor, electrodes, data_range, x, labels, tries: int, device: Processor | None) -> dict[str, Any]:
    """Max-margin search (see :mod:`~inmaterio.tasks.capacity_search`), found on the surrogate or on ``device``."""
    from inmaterio.tasks.capacity_search import constant_mask, gap_threshold, refine_margin, screen_controls

    seed = int(spec["seed"])
    n_samples = int(spec.get("screen_samples", 200_000))
    probe = DNPU(processor, 1, electrodes, data_range)
    screen = screen_controls(probe, x, labels, n_samples, tries, torch.Generator().manual_seed(seed))
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
            layer, x, labels[pending], high_class, steps=int(spec.get("refine_steps", 500)),
            lr=float(spec.get("refine_lr", 0.01)), temperature_na=float(spec.get("temperature_na", 0.5)),
        )  # fmt: skip
        margin_na[pending] = torch.maximum(margin_na[pending], margin)
        with torch.no_grad(), processor.noise_off():
            decision = DecisionNode.from_threshold(*gap_threshold(layer(x), labels[pending], high_class))
        if device is None:
            ok = margin > 0
        else:
            everything = torch.ones(len(pending), dtype=torch.bool)
            ok = _found_on_device(layer, decision, everything, x, labels[pending], device, electrodes, data_range)
        found[pending[ok]] = True
        history.append({"attempt": attempt, "tried": len(pending), "found": int(ok.sum())})
        pending = pending[~ok]
    rmse = processor.info.noise_na
    result = {
        "found": int(found.sum()),
        "fraction": float(found.float().mean()),
        "found_mask": found.tolist(),  # per labelling, in the order of labellings(N)
        "surrogate_margin_na": [None if m == float("inf") else round(m, 4) for m in margin_na.tolist()],
        "screen_samples": n_samples,
        "attempts": history,
    }
    if rmse is not None:
        robust = constant | (margin_na >= rmse)
        result |= {"margin_threshold_na": rmse, "found_margin_ge_rmse": int(robust.sum()),
                   "fraction_margin_ge_rmse": float(robust.float().mean())}  # fmt: skip
    return result
