"""Capacity (VC-dimension) estimate: how many of the 2^N labellings of N points one DNPU separates.

For each N, the first N points of :data:`~inmaterio.tasks.config.CAPACITY_POINTS`
get every binary labelling. The two constant labellings need no training (a
threshold below or above every output separates them) and count as found.
All the others, times ``attempts``, are trained at once as the nodes of one
DNPU layer (:func:`~inmaterio.tasks.fitting.fit_binary_nodes`); a labelling
is found when a logistic threshold on the output classifies all N points.
If a device is given, the found classifiers are measured there and count as
found on the device when their accuracy exceeds ``1 - 0.5 / N`` (all points
right, as the first wrong point costs 1/N).
"""

from __future__ import annotations

import itertools

import torch

from inmaterio.processors import Processor
from inmaterio.runs import RunFolder
from inmaterio.tasks.config import CAPACITY_POINTS
from inmaterio.tasks.outcome import TaskOutcome

__all__ = ["labellings", "run_capacity"]


def labellings(n: int) -> torch.Tensor:
    """All ``2**n`` binary labellings of ``n`` points, ``(2**n, n)`` float32, in binary counting order."""
    return torch.tensor(list(itertools.product((0.0, 1.0), repeat=n)), dtype=torch.float32)


def run_capacity(
    task, surrogate: Processor, device: Processor | None, run: RunFolder, seed: int = 0, progress: bool = False, repeats: int = 1
) -> TaskOutcome:
    """Estimate the capacity for every N of ``task.n_points``; write the plots into the run folder.

    Each finished N is saved in the run's checkpoint at once; a run that is
    interrupted and started again skips the N it has already done. The device
    measurements of each N are keyed by N (``device.random_streams("capacity", N)``),
    so a resumed run measures exactly what an uninterrupted one would.
    """
    from inmaterio.plots import plot_capacity, plot_loss_curves
    from inmaterio.tasks.fitting import fit_binary_nodes
    from inmaterio.tasks.validation import validate_layer
    from inmaterio.training.metrics import fit_logistic_threshold

    out = run.path
    done = (run.load_checkpoint() or {}).get("per_n", {})
    per_n, rows, curves, controls = {}, [], {}, {}
    for n in task.n_points:
        if str(n) in done:
            per_n[str(n)], curves[f"N = {n}"], controls[str(n)] = (done[str(n)][k] for k in ("entry", "history", "controls"))
            rows.append(_row(n, per_n[str(n)], device is not None))
            continue
        x = torch.tensor(CAPACITY_POINTS[:n], dtype=torch.float32)
        labels = labellings(n)
        trainable = labels[(labels.sum(1) > 0) & (labels.sum(1) < n)]  # the 2**n - 2 non-constant ones
        fits = fit_binary_nodes(
            surrogate, x, trainable, input_electrodes=task.input_electrodes, data_range=task.data_range,
            loss=task.loss, algorithm=task.algorithm, gd=task.gd, ga=task.ga, attempts=task.attempts,
            seed=seed + n, progress=progress, directory=out / f"training_N{n}",  # resumes inside an N too
        )  # fmt: skip
        found = fits.accuracy == 1
        entry = {
            "labellings": 2**n,
            "found_on_surrogate": int(found.sum()) + 2,
            "fraction_surrogate": (int(found.sum()) + 2) / 2**n,
            "fit_seconds": fits.seconds,
        }
        if device is not None and bool(found.any()):
            idx = found.nonzero()[:, 0]
            layer = fits.layer
            sub = type(layer)(surrogate, len(idx), task.input_electrodes, task.data_range)
            with torch.no_grad():
                sub.controls.copy_(layer.controls[idx])
            threshold = fit_logistic_threshold(fits.output_na[idx], trainable[idx])
            with device.random_streams("capacity", n):
                validation = validate_layer(sub, device, x, trainable[idx], threshold, repeats=repeats)
            device_found = int((validation.accuracy.mean(0) > 1 - 0.5 / n).sum()) + 2
            entry.update(
                {
                    "found_on_device": device_found,
                    "fraction_device": device_found / 2**n,
                    "validation_seconds": validation.seconds,
                }
            )
        elif device is not None:
            entry.update({"found_on_device": 2, "fraction_device": 2 / 2**n, "validation_seconds": 0.0})
        per_n[str(n)] = entry
        curves[f"N = {n}"] = fits.history
        controls[str(n)] = {
            "".join(str(int(v)) for v in label): row for label, row, ok in zip(trainable, fits.layer.control_table(), found) if ok
        }
        done[str(n)] = {"entry": entry, "history": fits.history, "controls": controls[str(n)]}
        run.save_checkpoint({"per_n": done})
        rows.append(_row(n, entry, device is not None))
    fractions = {"surrogate": [per_n[str(n)]["fraction_surrogate"] for n in task.n_points]}
    if device is not None:
        fractions["virtual device"] = [per_n[str(n)]["fraction_device"] for n in task.n_points]
    plot_capacity(task.n_points, fractions, out / "capacity.png")
    plot_loss_curves(curves, out / "learning_curve.png")
    full = [n for n in task.n_points if per_n[str(n)]["fraction_surrogate"] == 1.0]
    metrics = {"per_n": per_n, "vc_dimension_lower_bound_surrogate": max(full) if full else None}
    if device is not None:
        full_dev = [n for n in task.n_points if per_n[str(n)]["fraction_device"] == 1.0]
        metrics["vc_dimension_lower_bound_device"] = max(full_dev) if full_dev else None
    columns = ["N", "labellings", "found (surrogate)"] + (["found (device)"] if device is not None else []) + ["fit / s"]
    return TaskOutcome(metrics, controls, "Capacity", columns, rows, curves)


def _row(n: int, entry: dict, with_device: bool) -> list[str]:
    """One line of the summary table."""
    return (
        [str(n), str(2**n), f"{entry['fraction_surrogate']:.3f}"]
        + ([f"{entry['fraction_device']:.3f}"] if with_device else [])
        + [f"{entry['fit_seconds']:.1f}"]
    )
