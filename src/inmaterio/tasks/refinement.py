"""Rounds of task-aware refinement shared by the DNPU tasks (gates, rings): measure, then fine-tune a copy.

A round takes the operating points of a trained solution, draws a plan around them
(:func:`~inmaterio.surrogate.refine.local_plan`), measures it on the validation device
(:func:`measure_plan`, kept in ``<out>/refinement/round_<k>.npz`` and read back on resume) and
fine-tunes a copy of the surrogate on every point measured so far
(:func:`~inmaterio.surrogate.refine.fine_tune`). Re-training the solution on the copy is the
task's own business.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from inmaterio.processors import Processor, SurrogateProcessor
from inmaterio.surrogate.refine import Refinement, fine_tune, local_plan

__all__ = ["measure_plan", "refined_processor", "refinement_round", "round_centres"]


def refinement_round(
    config, surrogate: SurrogateProcessor, device: Processor, centres_v: np.ndarray, measured: list, r: int, seed: int,
    out: Path, progress: bool,
) -> tuple[Refinement, int]:  # fmt: skip
    """Round ``r`` (from 0) of ``config`` (a :class:`~inmaterio.tasks.config.RefinementConfig`) around ``centres_v (n, electrodes)`` V.

    ``measured`` holds the ``(voltages, currents)`` of the earlier rounds and gets this round's;
    the copy is fine-tuned on all of them. Returns the refinement and the number of device points
    measured in this round.
    """
    plan = local_plan(
        centres_v, surrogate.info.ranges_array(), config.points_per_operating_point, config.radius_v, seed=(seed, r)
    )
    measured.append((plan, measure_plan(device, plan, out / "refinement" / f"round_{r + 1}.npz", (seed, r), progress)))
    refined = fine_tune(
        surrogate.model, np.concatenate([v for v, _ in measured]), np.concatenate([i for _, i in measured]) / surrogate.amplification,
        epochs=config.fine_tune_epochs, learning_rate=config.learning_rate, anchor_points=config.anchor_points, seed=seed + r,
    )  # fmt: skip
    return refined, len(plan)


def round_centres(model, processor: SurrogateProcessor, x: torch.Tensor, max_points: int | None, seed: int, r: int) -> np.ndarray:
    """The operating points ``(n, electrodes)`` V of every DNPU node of ``model`` on ``x`` (eval mode, no output noise),
    at most ``max_points`` of them: a random subset drawn anew in round ``r`` (from 0) on the stream ``(seed, r)``."""
    from inmaterio.tasks.rings import operating_points

    model.eval()
    with processor.noise_off():
        centres = operating_points(model, x).double().numpy()
    if max_points is not None and len(centres) > max_points:
        pick = np.random.default_rng((seed, r)).choice(len(centres), max_points, replace=False)
        centres = centres[np.sort(pick)]
    return centres


def refined_processor(refined, surrogate: SurrogateProcessor) -> SurrogateProcessor:
    """A processor of the refined copy ``refined`` (a :class:`~inmaterio.surrogate.refine.Refinement`) with the
    output stage of ``surrogate``: its amplification, clipping and output noise."""
    return SurrogateProcessor(
        refined.model, noise=surrogate.noise_std_na > 0, noise_std_na=surrogate.noise_std_na or None,
        amplification=surrogate.amplification, clipping_na=surrogate.clipping_na,
    )  # fmt: skip


def measure_plan(
    device: Processor, plan: np.ndarray, path: Path, keys: tuple, progress: bool, *, stream: str = "refine"
) -> np.ndarray:
    """Device currents ``(n,)`` nA at ``plan (n, electrodes)`` V, on the random streams ``(stream, *keys)``.

    Read back from ``path`` (an ``.npz``) when it holds this very plan, else measured and saved
    there atomically, so a resumed refinement does not measure again.
    """
    from inmaterio.fileio import atomic_path

    if path.is_file():
        try:
            with np.load(path) as saved:
                if np.array_equal(saved["voltages_v"], plan):
                    return saved["current_na"]
        except (OSError, ValueError, KeyError):
            pass  # unreadable or another plan: measure again
    shown = device.progress_shown(progress) if hasattr(device, "progress_shown") else nullcontext()
    with torch.no_grad(), device.random_streams(stream, *keys), shown:
        current = device(torch.as_tensor(plan, dtype=torch.float32)).double().numpy()
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, voltages_v=plan, current_na=current)
    return current
