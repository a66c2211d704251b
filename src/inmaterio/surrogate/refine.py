"""Task-aware refinement: a surrogate fine-tuned on device points around where a solution operates.

A surrogate trained on points spread over the whole voltage space is only as
good as its error at the few operating points a trained DNPU solution uses.
Refinement measures the device there (and in a small box around each point,
so that re-training can move), fine-tunes a copy of the surrogate on those
measurements, and leaves the original untouched:

1. :func:`local_plan`: every operating point plus ``per_point`` points drawn
   uniformly in a box of half-width ``radius_v`` around it, clipped to the
   electrodes' ranges;
2. :func:`fine_tune`: Adam on the mean squared error (nA²) of the copy on the
   measured points, plus the same error against the *original* surrogate's
   own predictions at ``anchor_points`` uniform random voltages (so that away
   from the task the refined model stays what it was). One part of the
   measured points is held out and the RMSE there is reported before and
   after, so the gain is measured on points the fine-tuning did not see.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch

from inmaterio.denormals import flushed_denormals
from inmaterio.errors import ConfigError
from inmaterio.surrogate.model import SurrogateModel

__all__ = ["Refinement", "fine_tune", "local_plan"]


def local_plan(
    centres_v: np.ndarray, ranges_v: np.ndarray, per_point: int, radius_v: float, seed: int | Sequence[int]
) -> np.ndarray:
    """Operating points and uniform neighbours in a box around each, ``(n * (per_point + 1), electrodes)`` V.

    Parameters
    ----------
    centres_v : ``(n, electrodes)`` operating points (V), inside ``ranges_v``.
    ranges_v : ``(electrodes, 2)`` low and high voltage of each electrode (V).
    per_point : neighbours per operating point (>= 0).
    radius_v : half-width of the box (V, > 0); neighbours are clipped to the ranges.
    seed : seed of the draw, an int or a sequence of ints (the same seed gives the same plan).

    Returns the centres first, then their neighbours, centre by centre.
    """
    centres_v = np.asarray(centres_v, dtype=np.float64)
    ranges_v = np.asarray(ranges_v, dtype=np.float64)
    if centres_v.ndim != 2 or ranges_v.shape != (centres_v.shape[1], 2):
        raise ConfigError(
            f"local_plan: centres must be (n, electrodes) and ranges (electrodes, 2); got {centres_v.shape} and {ranges_v.shape}"
        )
    if per_point < 0:
        raise ConfigError(f"local_plan: per_point must be >= 0, got {per_point}")
    if not (math.isfinite(radius_v) and radius_v > 0):
        raise ConfigError(f"local_plan: radius_v must be a finite number > 0 V, got {radius_v}")
    rng = np.random.default_rng(seed)
    offsets = rng.uniform(-radius_v, radius_v, size=(centres_v.shape[0], per_point, centres_v.shape[1]))
    neighbours = np.clip(centres_v[:, None, :] + offsets, ranges_v[:, 0], ranges_v[:, 1])
    return np.concatenate([centres_v, neighbours.reshape(-1, centres_v.shape[1])])


@dataclass
class Refinement:
    """A fine-tuned copy of a surrogate and how much it gained.

    model : the refined copy (the original is unchanged).
    n_train, n_held_out : measured points used for fine-tuning and held out.
    held_out_rmse_before_na, held_out_rmse_after_na : RMSE (nA) on the held-out measured points.
    anchor_drift_na : RMS difference (nA) between the copy and the original at the anchor points.
    """

    model: SurrogateModel
    n_train: int
    n_held_out: int
    held_out_rmse_before_na: float
    held_out_rmse_after_na: float
    anchor_drift_na: float

    def summary(self) -> dict:
        """JSON-ready numbers (everything but the model)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "model"}


def fine_tune(
    model: SurrogateModel,
    voltages_v: np.ndarray,
    current_na: np.ndarray,
    *,
    epochs: int = 300,
    learning_rate: float = 1e-3,
    anchor_points: int = 4096,
    held_out_fraction: float = 0.2,
    seed: int = 0,
) -> Refinement:
    """Fine-tune a copy of ``model`` on measured ``(voltages_v (n, electrodes), current_na (n,))``.

    Full-batch Adam for ``epochs`` steps on ``mse(copy, measured) + mse(copy, original at anchors)``;
    a random ``held_out_fraction`` of the measured points is kept out of the fit and scores it.
    Deterministic for a given ``seed``.
    """
    v = torch.as_tensor(np.asarray(voltages_v), dtype=torch.float32)
    i = torch.as_tensor(np.asarray(current_na), dtype=torch.float32)
    n_act = model.info.n_activation
    if v.ndim != 2 or v.shape[1] != n_act or i.shape != (v.shape[0],):
        raise ConfigError(
            f"fine_tune: voltages must be (n, {n_act}) and currents (n,); got {tuple(v.shape)} and {tuple(i.shape)}"
        )
    if not (torch.isfinite(v).all() and torch.isfinite(i).all()):
        raise ConfigError("fine_tune: voltages and currents must be finite (a NaN or inf was given)")
    if epochs < 1 or anchor_points < 0 or not (0.0 <= held_out_fraction < 1.0) or not learning_rate > 0:
        raise ConfigError(
            "fine_tune: epochs >= 1, anchor_points >= 0, 0 <= held_out_fraction < 1 and learning_rate > 0 are required; "
            f"got {epochs}, {anchor_points}, {held_out_fraction}, {learning_rate}"
        )
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(v), generator=generator)
    n_held = int(round(held_out_fraction * len(v)))
    held, train = order[:n_held], order[n_held:]
    if len(train) == 0:
        raise ConfigError(f"fine_tune: no measured point is left to train on ({len(v)} points, {n_held} held out)")
    ranges = torch.as_tensor(model.info.ranges_array(), dtype=torch.float32)
    anchors = ranges[:, 0] + (ranges[:, 1] - ranges[:, 0]) * torch.rand(anchor_points, n_act, generator=generator)

    original = model.eval()
    refined = copy.deepcopy(model).train()
    for p in refined.parameters():
        p.requires_grad_(True)
    with torch.no_grad():
        anchor_target = original(anchors)
        before = _rmse(original(v[held]), i[held]) if n_held else float("nan")
    optimiser = torch.optim.Adam(refined.parameters(), lr=learning_rate)
    with torch.random.fork_rng(), flushed_denormals():
        torch.manual_seed(seed)
        for _ in range(epochs):
            optimiser.zero_grad()
            loss = torch.mean((refined(v[train]) - i[train]) ** 2)
            if anchor_points:
                loss = loss + torch.mean((refined(anchors) - anchor_target) ** 2)
            loss.backward()
            optimiser.step()
    refined.eval()
    for p in refined.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        after = _rmse(refined(v[held]), i[held]) if n_held else float("nan")
        drift = _rmse(refined(anchors), anchor_target) if anchor_points else 0.0
    return Refinement(refined, len(train), n_held, before, after, drift)


def _rmse(prediction: torch.Tensor, target: torch.Tensor) -> float:
    return float(torch.sqrt(torch.mean((prediction - target) ** 2)))
