r"""Adaptive sampling: measure the device where an ensemble of surrogates disagrees.

After the initial plan, round :math:`r = 1 .. R` of an SMG run with
``adaptive`` set (:class:`~inmaterio.smg.config.AdaptiveConfig`):

1. **Ensemble.** ``members`` surrogates are trained on the points measured so
   far (cleaned and split as the final model's data; seeds ``training.seed + k``).
2. **Pool.** ``pool_factor * points_per_round`` candidates are drawn from the
   stream ``(seed, r)``: a fraction ``1 - slice_fraction`` uniform in the box,
   the rest on *slices*, the low-dimensional sets a random plan almost never
   visits: 1 or 2 electrodes (equally likely) uniform in their ranges, every
   other electrode held at its range's low end, 0 V (clipped into the range)
   or its high end. For half the slice points all held electrodes take the
   same one of the three (the lines and planes through ground, where I-V
   sweeps are taken, and through the two extreme corners); for the other
   half each takes its own, uniformly.
3. **Selection.** Each candidate's score is the members' standard deviation
   :math:`s(v)` nA. Candidates are taken greedily by score; a taken one
   removes every candidate closer than ``exclusion_radius`` in the unit box
   (each electrode's range scaled to 1), so one narrow ridge of disagreement
   does not take the whole round.
4. **Measurement.** The selected points are saved (``plan.npz``) and then
   measured as a resumable acquisition, and join the data.

Run-folder layout (inside the SMG run)::

    adaptive/round_<r>/member_<k>/   the round's ensemble (training run folders)
    adaptive/round_<r>/plan.npz      voltages_v (n, n_electrodes) V, on_slice (n,) bool, score_na (n,) nA
    adaptive/round_<r>/data/         the round's acquisition (kind inmaterio.smg.acquisition)

Every stage resumes: a saved plan is measured as saved; members and
acquisitions resume as everywhere else. The per-round report holds the
points before the round, the pool's and the selection's mean spread, the
fraction of selected points on slices, and the ensemble's RMSE on the points
it chose *before* they were measured (``selected_rmse_na``) beside its
validation RMSE: the first is larger when the selection finds where the model
is wrong.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from inmaterio.devices.base import Device
from inmaterio.errors import ConfigError, ModelFileError
from inmaterio.runs import RunFolder
from inmaterio.smg.acquire import acquire
from inmaterio.smg.config import AcquisitionConfig, SMGConfig
from inmaterio.smg.dataset import Dataset, postprocess, split
from inmaterio.smg.ensemble import member_directory, train_member
from inmaterio.smg.evaluate import error_metrics
from inmaterio.surrogate import DeviceInfo
from inmaterio.surrogate.ensemble import SurrogateEnsemble

__all__ = ["candidate_pool", "select_spread", "concatenate", "adaptive_rounds", "ROUND_DIR"]

#: Folder of round ``r`` inside the SMG run: ``ROUND_DIR.format(r)``.
ROUND_DIR = "adaptive/round_{}"
PLAN_FILE = "plan.npz"
#: Arrays of a round's plan file: the selected points, whether each is on a slice, their spread (nA), and the
#: pool's size and mean spread (nA, 0-dim).
PLAN_KEYS = ("voltages_v", "on_slice", "score_na", "pool_size", "pool_mean_spread_na")


def candidate_pool(ranges: np.ndarray, n: int, slice_fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` candidates ``(n, n_electrodes)`` V and whether each lies on a slice ``(n,)`` bool (module docstring).

    ``ranges`` is ``(n_electrodes, 2)`` [low, high] V. Slice points come first.
    """
    ranges = np.asarray(ranges, dtype=np.float64)
    low, high = ranges[:, 0], ranges[:, 1]
    n_electrodes = len(ranges)
    n_slice = int(round(slice_fraction * n))
    voltages = rng.uniform(low, high, size=(n, n_electrodes))
    if n_slice:
        anchors = np.stack([low, np.clip(0.0, low, high), high])  # (3, n_electrodes)
        choice = rng.integers(0, 3, size=(n_slice, n_electrodes))
        shared = rng.random(n_slice) < 0.5  # every held electrode at the same anchor: lines through ground and corners
        choice[shared] = rng.integers(0, 3, size=(int(shared.sum()), 1))
        fixed = anchors[choice, np.arange(n_electrodes)]
        n_free = rng.integers(1, min(2, n_electrodes) + 1, size=n_slice)
        order = np.argsort(rng.random((n_slice, n_electrodes)), axis=1)  # a random permutation per point
        free = np.zeros((n_slice, n_electrodes), dtype=bool)
        rows = np.arange(n_slice)
        free[rows, order[:, 0]] = True
        if n_electrodes > 1:
            free[rows, order[:, 1]] = n_free == 2
        voltages[:n_slice] = np.where(free, voltages[:n_slice], fixed)
    on_slice = np.arange(n) < n_slice
    return voltages, on_slice


def select_spread(
    voltages: np.ndarray, score: np.ndarray, ranges: np.ndarray, n_select: int, exclusion_radius: float
) -> np.ndarray:
    """Indices of ``n_select`` candidates taken greedily by ``score``, none within ``exclusion_radius`` of another.

    ``voltages`` ``(n, n_electrodes)`` V, ``score`` ``(n,)``; distances are Euclidean in the
    unit box (each electrode's range scaled to 1). Fewer indices come back when the
    exclusions leave too few candidates.
    """
    ranges = np.asarray(ranges, dtype=np.float64)
    unit = (voltages - ranges[:, 0]) / (ranges[:, 1] - ranges[:, 0])
    available = np.ones(len(voltages), dtype=bool)
    order = np.argsort(-score, kind="stable")
    taken: list[int] = []
    radius_sq = exclusion_radius**2
    for index in order:
        if len(taken) == n_select:
            break
        if not available[index]:
            continue
        taken.append(int(index))
        if radius_sq > 0:
            available &= np.sum((unit - unit[index]) ** 2, axis=1) >= radius_sq
    return np.array(taken, dtype=np.int64)


def concatenate(datasets: list[Dataset]) -> Dataset:
    """The points of ``datasets`` in order.

    The metadata are the first dataset's without its fingerprints, plus ``parts``: each
    dataset's ``n_points`` and acquisition ``fingerprint`` (None where it has none).
    """
    first = {k: v for k, v in datasets[0].metadata.items() if k not in ("fingerprint", "plan_fingerprint")}
    parts = [{"n_points": len(d), "fingerprint": d.metadata.get("fingerprint")} for d in datasets]
    return Dataset(
        np.concatenate([d.voltages_v for d in datasets]),
        np.concatenate([d.current_na for d in datasets]),
        np.concatenate([d.stderr_na for d in datasets]),
        {**first, "parts": parts},
    )


def _plan_writer(plan: dict[str, np.ndarray]) -> Callable[[Any], None]:
    def write(path: Any) -> None:
        with open(path, "wb") as fh:
            np.savez(fh, **plan)

    return write


def _read_plan(path: Any) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in PLAN_KEYS}
    except (OSError, ValueError, KeyError) as err:
        raise ModelFileError(
            f"the saved adaptive plan '{path}' is unreadable ({err}); replace the run with --overwrite"
        ) from None


def adaptive_rounds(
    config: SMGConfig,
    run: RunFolder,
    device: Device,
    initial: Dataset,
    info: DeviceInfo,
    acquisition: AcquisitionConfig,
    progress: bool,
    notify: Callable[[str], None],
) -> tuple[Dataset, list[dict[str, Any]]]:
    """Run (or resume) the rounds of ``config.adaptive`` after ``initial``; return all data and one report per round.

    With ``stop_ratio`` the rounds end early after the first round whose picks the ensemble predicted within
    ``stop_ratio`` times its validation RMSE (that round's points are kept); a resumed run stops at the same round.
    """
    adaptive = config.adaptive
    if adaptive is None:
        raise ConfigError("adaptive_rounds needs a config with 'adaptive' set")
    ranges = np.asarray(device.voltage_ranges, dtype=np.float64)
    parts = [initial]
    reports = []
    for r in range(1, adaptive.rounds + 1):
        folder = ROUND_DIR.format(r)
        data = concatenate(parts)
        clean, _ = postprocess(data, config.postprocess)
        train, val, _ = split(clean, config.postprocess.split, config.postprocess.seed)
        notify(f"adaptive round {r} of {adaptive.rounds}: an ensemble of {adaptive.members} on {len(data)} points")
        training = config.training
        if adaptive.max_epochs is not None:
            training = training.model_copy(update={"max_epochs": adaptive.max_epochs,
                                                   "patience": min(training.patience, adaptive.max_epochs)})  # fmt: skip
        members = [
            train_member(train, val, training, member_directory(run.subfolder(folder), k), info, k, progress,
                         notify=notify).model
            for k in range(adaptive.members)
        ]  # fmt: skip
        ensemble = SurrogateEnsemble(members)
        plan_path = run.file(f"{folder}/{PLAN_FILE}")
        if plan_path.is_file():
            plan = _read_plan(plan_path)
        else:
            rng = np.random.default_rng([adaptive.seed, r])
            pool, pool_on_slice = candidate_pool(
                ranges, adaptive.pool_factor * adaptive.points_per_round, adaptive.slice_fraction, rng
            )
            pool_score = ensemble.predict_with_std(pool)[1]
            chosen = select_spread(pool, pool_score, ranges, adaptive.points_per_round, adaptive.exclusion_radius)
            plan = {"voltages_v": pool[chosen], "on_slice": pool_on_slice[chosen], "score_na": pool_score[chosen],
                    "pool_size": np.array(len(pool)), "pool_mean_spread_na": np.array(pool_score.mean())}  # fmt: skip
            run.write_file(f"{folder}/{PLAN_FILE}", _plan_writer(plan), what=f"round {r}'s plan")
        measured = acquire(device, plan["voltages_v"], run.subfolder(f"{folder}/data"), acquisition,
                           metadata={"adaptive_round": r}, notify=notify)  # fmt: skip
        report = {
            "round": r,
            "fingerprint": measured.metadata["fingerprint"],
            "n_points_before": len(data),
            "pool_size": int(plan["pool_size"]),
            "pool_mean_spread_na": float(plan["pool_mean_spread_na"]),
            "n_selected": len(measured),
            "selected_mean_spread_na": float(plan["score_na"].mean()),
            "selected_on_slices": float(plan["on_slice"].mean()),
            "selected_rmse_na": error_metrics(ensemble.predict(measured.voltages_v), measured)["rmse_na"],
            "validation_rmse_na": error_metrics(ensemble.predict(val.voltages_v), val)["rmse_na"],
        }
        reports.append(report)
        parts.append(measured)
        if adaptive.stop_ratio is not None and report["selected_rmse_na"] < adaptive.stop_ratio * report["validation_rmse_na"]:
            notify(f"adaptive rounds stop after round {r}: its picks' RMSE {report['selected_rmse_na']:.3g} nA is within "
                   f"{adaptive.stop_ratio:g}x the validation RMSE {report['validation_rmse_na']:.3g} nA")  # fmt: skip
            break
    return concatenate(parts), reports
