"""Two-input Boolean gates: the first task every DNPU solves.

The four input pairs ``(0, 0), (0, 1), (1, 0), (1, 1)`` (data range [0, 1],
mapped onto the input electrodes' voltage ranges) have the truth-table
targets below. A gate is *found* when a threshold on the output current
(a trained logistic neuron, :func:`inmaterio.training.metrics.threshold_accuracy`)
classifies all four points correctly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch

from inmaterio.errors import ConfigError
from inmaterio.tasks.outcome import TaskOutcome

__all__ = ["GATES", "GATE_INPUTS", "GateName", "gate_data", "run_gates"]

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
    With ``resumable`` (``out`` is a run folder whose identity covers the back
    ends) the training is the nested run folder ``out/training`` and resumes
    after its last epoch or generation.
    """
    from inmaterio.plots import plot_class_outputs, plot_loss_curves, plot_output_maps
    from inmaterio.tasks.fitting import evaluate_nodes, fit_binary_nodes
    from inmaterio.tasks.validation import output_map, validate_layer
    from inmaterio.training.metrics import fit_logistic_threshold

    x, _ = gate_data(task.gates[0])
    targets = torch.stack([gate_data(g)[1] for g in task.gates])  # (gates, 4)
    fits = fit_binary_nodes(
        trainer or surrogate, x, targets, input_electrodes=task.input_electrodes, data_range=(0.0, 1.0), loss=task.loss,
        algorithm=task.algorithm, gd=task.gd, ga=task.ga, attempts=task.attempts, seed=seed, progress=progress,
        directory=Path(out) / "training" if resumable else None,
    )  # fmt: skip
    if trainer is not None and trainer is not surrogate:  # evolved on the device: what does the surrogate say?
        fits.layer.set_processor(surrogate)
        fits.output_na, fits.loss, fits.accuracy = evaluate_nodes(fits.layer, x, targets, task.loss)
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
        }
        panels[gate] = {"surrogate": (fits.output_na[k].numpy(), targets[k].numpy())}
        if validation is not None:
            entry.update(validation.for_problem(k))
            panels[gate]["device"] = (validation.output_na[0, k].numpy(), targets[k].numpy())
        metrics[gate] = entry
        rows.append(
            [gate, f"{entry['surrogate_accuracy']:.0%}", f"{entry['loss']:.3g}"]
            + (
                [
                    f"{entry['device_accuracy']:.0%}",
                    f"{entry['device_accuracy_surrogate_threshold']:.0%}",
                    f"{entry['rms_difference_na']:.1f}",
                ]
                if validation
                else []
            )
        )
    columns = ["gate", "surrogate acc.", "loss"] + (
        ["device acc.", "device acc. (surrogate threshold)", "RMS surrogate-device / nA"] if validation else []
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
        "gates": metrics,
    }
    if validation is not None:
        summary["gates_found_on_device"] = sum(int(metrics[g]["device_accuracy"] == 1) for g in task.gates)
        summary["validation_seconds"] = validation.seconds
    controls = {g: fits.layer.control_table()[k] for k, g in enumerate(task.gates)}
    return TaskOutcome(summary, controls, "Boolean gates", columns, rows, curves)
