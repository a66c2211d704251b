"""Two-input Boolean gates: the first task every DNPU solves.

The four input pairs ``(0, 0), (0, 1), (1, 0), (1, 1)`` (data range [0, 1],
mapped onto the input electrodes' voltage ranges) have the truth-table
targets below. A gate is *found* when a threshold on the output current
(a trained logistic neuron, :func:`inmaterio.training.metrics.threshold_accuracy`)
classifies all four points correctly.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Literal

import torch

from inmaterio.errors import ConfigError
from inmaterio.tasks.outcome import TaskOutcome

__all__ = ["GATES", "GATE_INPUTS", "GateName", "device_noise_na", "gate_data", "run_gates"]

GateName = Literal["AND", "OR", "NAND", "NOR", "XOR", "XNOR"]

#: Input pairs, in truth-table order.
GATE_INPUTS: tuple[tuple[int, int], ...] = ((0, 0), (0, 1), (1, 0), (1, 1))

#: Truth tables: output for the inputs of :data:`GATE_INPUTS`.
GATES: dict[str, tuple[int, int, int, int]] = {
    "AND": (0, 0, 0, 1),
    "OR": (0, 1, 1, 1),
    "NAND": (1, 1, 1, 0),
    "NOR": (1, 0, 0, 0),
    "XOR": (0, 1, 1, 0),
    "XNOR": (1, 0, 0, 1),
}


def gate_data(gate: str, repeats: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``(4 * repeats, 2)`` in {0, 1} and targets ``(4 * repeats,)`` of a gate.

    Each truth-table row is repeated ``repeats`` times consecutively (as the
    plateaus of a measured waveform would be).
    """
    if gate not in GATES:
        raise ConfigError(f"unknown gate '{gate}'; choose one of {sorted(GATES)}")
    if repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {repeats}")
    x = torch.tensor(GATE_INPUTS, dtype=torch.float32).repeat_interleave(repeats, dim=0)
    y = torch.tensor(GATES[gate], dtype=torch.float32).repeat_interleave(repeats)
    return x, y


def device_noise_na(task, surrogate) -> tuple[float | None, str | None]:
    """The device noise of a gates task, nA, and where it came from (``"config"`` or ``"model card"``).

    ``task.noise_na`` when set; otherwise the noise floor recorded on the surrogate's model
    card (``metadata["test_metrics"]["noise_floor_na"]``: the RMS standard error of the
    device measurements it was tested on); ``(None, None)`` when neither is known.
    """
    if task.noise_na is not None:
        return float(task.noise_na), "config"
    metadata = getattr(getattr(surrogate, "model", None), "metadata", None) or {}
    floor = (metadata.get("test_metrics") or {}).get("noise_floor_na")
    if isinstance(floor, (int, float)) and math.isfinite(floor) and floor > 0:
        return float(floor), "model card"
    return None, None


def run_gates(
    task, surrogate, device, out, seed: int = 0, progress: bool = False, repeats: int = 1, trainer=None, resumable: bool = False
) -> TaskOutcome:
    """Find every gate of ``task`` on ``surrogate``, validate on ``device`` (or None); write plots to ``out``.

    Accuracy on the device is reported twice: with a threshold re-fitted on
    the device's own output (the perceptron of the read-out is trained on the
    hardware), and with the threshold fitted on the surrogate's output (how
    well the surrogate's solution transfers unchanged). ``trainer`` is the
    processor the gates are trained on (default ``surrogate``; a device
    processor for evolution on the device, with ``task.algorithm == "ga"``);
    the solutions are then re-evaluated on the surrogate for the comparison.
    The class gap on the device is reported twice, in nA and (with a known noise) in units of the device
    noise: the worst over the ``repeats`` measurements (``device_separation_na``: the gap every repeat kept,
    lowered by the noise of each measurement) and the gap of the per-point means over the repeats with its
    standard error (``device_mean_separation_na``: the device's own gap, what a longer measurement converges to).
    With ``task.refine`` the surrogate is refined around the solutions after training
    (:func:`_refine`), and the surrogate's outputs and class gaps reported are the refined copy's.
    With ``resumable`` (``out`` is a run folder whose identity covers the back
    ends) the training is the nested run folder ``out/training`` and resumes
    after its last epoch or generation.
    """
    from inmaterio.plots import plot_class_outputs, plot_loss_curves, plot_output_maps
    from inmaterio.tasks.fitting import best_of_groups, evaluate_nodes, fit_binary_nodes
    from inmaterio.tasks.validation import output_map, validate_layer
    from inmaterio.training.losses import noise_margin
    from inmaterio.training.metrics import fit_logistic_threshold, repeat_mean_separation_na, separation_na

    x, _ = gate_data(task.gates[0])
    targets = torch.stack([gate_data(g)[1] for g in task.gates])  # (gates, 4)
    noise_na, noise_source = device_noise_na(task, surrogate)
    loss = task.loss
    if loss == "noise_margin":
        if noise_na is None:
            raise ConfigError(
                "task.noise_na: loss noise_margin needs the device noise in nA, and the surrogate's model card "
                "records no noise floor (metadata test_metrics.noise_floor_na); set task.noise_na (> 0)"
            )
        loss = functools.partial(noise_margin, noise_na=noise_na, margin=task.margin)
    if task.refine is not None and device is None:
        raise ConfigError("task.refine measures the device around the solutions: set validation.enabled: true")
    candidates = 1 if task.refine is None else task.refine.candidates
    fits = fit_binary_nodes(  # candidate c of gate g is problem c * gates + g
        trainer or surrogate, x, targets.repeat(candidates, 1), input_electrodes=task.input_electrodes,
        data_range=(0.0, 1.0), loss=loss, algorithm=task.algorithm, gd=task.gd, ga=task.ga, attempts=task.attempts,
        seed=seed, progress=progress, directory=Path(out) / "training" if resumable else None,
    )  # fmt: skip
    refinement = []
    if task.refine is not None:
        fits, refinement = _refine(
            task, fits, surrogate, device, x, targets.repeat(candidates, 1), loss, seed, Path(out), progress
        )
        fits = fits.select(best_of_groups(fits.accuracy, fits.separation_na, len(task.gates)), task.input_electrodes, (0.0, 1.0))
    if trainer is not None and trainer is not surrogate:  # evolved on the device: what does the surrogate say?
        fits.layer.set_processor(surrogate)
        fits.output_na, fits.loss, fits.accuracy = evaluate_nodes(fits.layer, x, targets, loss)
        fits.separation_na = separation_na(fits.output_na, targets)
    rows, metrics, panels = [], {}, {}
    validation = (
        validate_layer(fits.layer, device, x, targets, fit_logistic_threshold(fits.output_na, targets), repeats)
        if device
        else None
    )
    for k, gate in enumerate(task.gates):
        entry = {
            "surrogate_accuracy": float(fits.accuracy[k]),
            "loss": float(fits.loss[k]),
            "surrogate_output_na": fits.output_na[k].tolist(),
            "surrogate_separation_na": float(fits.separation_na[k]),
        }
        panels[gate] = {"surrogate": (fits.output_na[k].numpy(), targets[k].numpy())}
        if validation is not None:
            entry.update(validation.for_problem(k))
            # the worst measurement of the set: the gap every repeat kept
            entry["device_separation_na"] = float(separation_na(validation.output_na[:, k], targets[k]).min())
            # the gap of the mean over the repeats: the device's own gap, less biased by the noise
            mean_gap, mean_gap_stderr = repeat_mean_separation_na(validation.output_na[:, k], targets[k])
            entry["device_mean_separation_na"] = mean_gap
            entry["device_mean_separation_stderr_na"] = mean_gap_stderr
            if noise_na is not None:
                entry["device_separation_over_noise"] = entry["device_separation_na"] / noise_na
                entry["device_mean_separation_over_noise"] = mean_gap / noise_na
            panels[gate]["device"] = (validation.output_na[0, k].numpy(), targets[k].numpy())
        metrics[gate] = entry
        rows.append(
            [gate, f"{entry['surrogate_accuracy']:.0%}"]
            + (
                [
                    f"{entry['device_accuracy']:.0%}",
                    f"{entry['device_accuracy_surrogate_threshold']:.0%}",
                    f"{entry['rms_difference_na']:.1f}",
                    f"{entry['device_separation_over_noise' if noise_na is not None else 'device_separation_na']:.1f}, "
                    f"{entry['device_mean_separation_over_noise' if noise_na is not None else 'device_mean_separation_na']:.1f}",
                ]
                if validation
                else []
            )
        )
    columns = ["gate", "surrogate acc."] + (
        ["device acc.", "device acc. (surrogate threshold)", "RMS Δ/nA"]
        + (["gap/noise (worst, mean)"] if noise_na is not None else ["gap / nA (worst, mean)"])
        if validation
        else []
    )
    curves = {f"{task.algorithm} ({task.loss}), mean over gates": fits.history}
    plot_loss_curves(curves, out / "learning_curve.png")
    plot_class_outputs(panels, out / "outputs_per_class.png")
    maps = {g: output_map(fits.layer, k, (0.0, 1.0)) for k, g in enumerate(task.gates)}
    plot_output_maps(maps, {g: (x.numpy(), targets[k].numpy()) for k, g in enumerate(task.gates)}, out / "solution_iv.png")
    found = int((fits.accuracy == 1).sum())
    summary = {
        "gates_found_on_surrogate": found,
        "n_gates": len(task.gates),
        "fit_seconds": fits.seconds,
        "loss": task.loss,
        "noise_na": noise_na,
        "noise_source": noise_source,
        "gates": metrics,
    }
    if refinement:
        summary["refinement"] = refinement
    if validation is not None:
        summary["gates_found_on_device"] = sum(int(metrics[g]["device_accuracy"] == 1) for g in task.gates)
        if noise_na is not None:
            summary["min_device_separation_over_noise"] = min(m["device_separation_over_noise"] for m in metrics.values())
            summary["min_device_mean_separation_over_noise"] = min(
                m["device_mean_separation_over_noise"] for m in metrics.values()
            )
        summary["validation_seconds"] = validation.seconds
    controls = {g: fits.layer.control_table()[k] for k, g in enumerate(task.gates)}
    return TaskOutcome(summary, controls, "Boolean gates", columns, rows, curves)


def _refine(task, fits, surrogate, device, x, targets, loss, seed: int, out: Path, progress: bool):
    """Rounds of task-aware refinement (``task.refine``): measure around the solutions, fine-tune, re-train.

    Returns the re-trained fits (their layer on the last refined surrogate) and one JSON-ready
    record per round. Each round's device measurements are kept in ``out/refinement/round_<k>.npz``
    and reused when the run is resumed with the same plan; the last refined surrogate is saved to
    ``out/refinement/surrogate`` (load it with :func:`~inmaterio.surrogate.load_surrogate`).
    """
    from inmaterio.processors import SurrogateProcessor
    from inmaterio.surrogate import save_surrogate
    from inmaterio.tasks.fitting import fit_binary_nodes
    from inmaterio.tasks.refinement import refinement_round

    config = task.refine
    seconds = fits.seconds
    measured, rounds = [], []
    for r in range(config.rounds):
        with torch.no_grad():
            # gate by gate, the four operating points of each: (gates * 4, electrodes)
            centres = fits.layer.voltages(x).transpose(0, 1).reshape(-1, surrogate.info.n_activation).double().numpy()
        refined, n_points = refinement_round(config, surrogate, device, centres, measured, r, seed, out, progress)
        processor = SurrogateProcessor(refined.model, amplification=surrogate.amplification, clipping_na=surrogate.clipping_na)
        fits = fit_binary_nodes(
            processor, x, targets, input_electrodes=task.input_electrodes, data_range=(0.0, 1.0), loss=loss,
            gd=task.gd.model_copy(update={"epochs": config.retrain_epochs}), attempts=1, seed=seed, progress=progress,
            initial_controls=fits.controls, trust_radius_v=config.radius_v,
        )  # fmt: skip
        seconds += fits.seconds
        rounds.append(
            {
                "round": r + 1,
                "device_points": n_points,
                **refined.summary(),
                # per gate, the widest gap of its candidates on this round's refined surrogate
                "surrogate_separation_na": dict(
                    zip(task.gates, fits.separation_na.reshape(-1, len(task.gates)).amax(dim=0).tolist())
                ),
            }
        )
    fits.seconds = seconds  # all the gradient descent: the first training and every re-training
    save_surrogate(
        refined.model, out / "refinement" / "surrogate", overwrite=True,
        metadata={"refined_from": surrogate.model.metadata, "refinement": rounds},
    )  # fmt: skip
    return fits, rounds
