"""The ring task: separate an inner disc from a surrounding ring with one DNPU or the 2-2-1 network.

Two stages, as in Ruiz Euler et al. (2021): (1) gradient descent on the
control voltages minimises a class-separation loss of the output current
(default the negative Fisher criterion), full batch; (2) a logistic neuron on
the standardised output current is fitted on the training set and gives the
accuracy on the training and the test set. The best of ``attempts``
trainings (lowest stage-one training loss) is kept and, if a device is given,
validated on it (the 2-2-1 network by time multiplexing one device). Each
training is a run folder ``attempt_<k>/`` inside the task's, so an
interrupted task resumes every training after its last finished epoch.
Besides the usual results, the folder gets ``model.safetensors``: the state
of the whole network (controls, batch-norm weights and statistics).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from inmaterio.data.rings import make_rings
from inmaterio.fileio import atomic_path
from inmaterio.nn import dnpu_layers
from inmaterio.nn.layers import single_dnpu, two_two_one
from inmaterio.processors import Processor
from inmaterio.tasks.outcome import TaskOutcome
from inmaterio.training.gd import train_gd
from inmaterio.training.losses import get_loss
from inmaterio.training.metrics import fit_logistic_threshold

__all__ = ["build_ring_model", "run_rings"]


def build_ring_model(architecture: str, processor: Processor, input_electrodes, seed: int) -> nn.Module:
    """The network of ``architecture`` (``single`` or ``2-2-1``) on ``processor``; output ``(batch,)`` nA."""
    if architecture == "single":
        return single_dnpu(processor, input_electrodes=input_electrodes, data_range=(-1.0, 1.0), seed=seed)
    return two_two_one(processor, input_electrodes=input_electrodes, data_range=(-1.0, 1.0), seed=seed)


def run_rings(
    task, surrogate: Processor, device: Processor | None, out: Path, seed: int = 0, progress: bool = False, repeats: int = 1
) -> TaskOutcome:
    """Train, threshold, test and (optionally) validate the ring classifier; write plots to ``out``."""
    from inmaterio.plots import plot_class_outputs, plot_loss_curves, plot_output_maps
    from inmaterio.tasks.validation import output_map, validate_model

    x_train, y_train = make_rings(task.n_train, gap=task.gap, seed=seed)
    x_test, y_test = make_rings(task.n_test, gap=task.gap, seed=seed + 1)
    loss_fn = get_loss(task.loss)
    start = time.perf_counter()
    best = None
    for attempt in range(task.attempts):
        model = build_ring_model(task.architecture, surrogate, task.input_electrodes, seed=seed + 7919 * attempt)
        result = train_gd(
            model, loss_fn, x_train, y_train, task.gd.model_copy(update={"seed": seed + attempt}), progress=progress,
            directory=out / f"attempt_{attempt}",  # a nested run folder: an interrupted task resumes each training
        )  # fmt: skip
        if best is None or result.best_loss < best[1].best_loss:
            best = (model, result)
    model, result = best
    fit_seconds = time.perf_counter() - start

    with surrogate.noise_off():  # accuracy of the trained solution, not of one noise draw
        model.eval()
        with torch.no_grad():
            out_train, out_test = model(x_train), model(x_test)
        threshold = fit_logistic_threshold(out_train, y_train)
        acc_train = float((threshold.predict(out_train) == y_train).float().mean())
        acc_test = float((threshold.predict(out_test) == y_test).float().mean())
        metrics = {
            "architecture": task.architecture,
            "loss": task.loss,
            "stage_one_loss": float(result.best_loss),
            "fisher_train": float(-get_loss("fisher")(out_train, y_train)),
            "surrogate_train_accuracy": acc_train,
            "surrogate_test_accuracy": acc_test,
            "threshold_na": float(threshold.threshold_na),
            "epochs": len(result.history),
            "fit_seconds": fit_seconds,
            "n_dnpu_nodes": sum(layer.n_nodes for layer in dnpu_layers(model)),
        }
        panels = {"test set": {"surrogate": (out_test.numpy(), y_test.numpy())}}
        rows = [["surrogate", f"{acc_train:.2%}", f"{acc_test:.2%}", f"{metrics['fisher_train']:.3g}"]]
        if device is not None:
            validation = validate_model(
                model, device, x_test, y_test[None], threshold, outputs=lambda o: o[None], repeats=repeats,
                multiplex=task.architecture != "single",
            )  # fmt: skip
            v = validation.for_problem(0)
            metrics.update({k: val for k, val in v.items() if k != "device_output_na"})
            metrics["validation_seconds"] = validation.seconds
            metrics["validation_repeats"] = repeats
            panels["test set"]["device"] = (validation.output_na[0, 0].numpy(), y_test.numpy())
            rows.append(["device (surrogate threshold)", "", f"{v['device_accuracy_surrogate_threshold']:.2%}", ""])
            rows.append(["device (re-fitted threshold)", "", f"{v['device_accuracy']:.2%}", ""])

    curves = {f"{task.architecture} ({task.loss})": [{"step": h["epoch"], "loss": h["train_loss"]} for h in result.history]}
    plot_loss_curves(curves, out / "learning_curve.png")
    plot_class_outputs(panels, out / "outputs_per_class.png")
    with surrogate.noise_off():
        current_map = output_map(model, None, (-1.0, 1.0))
    plot_output_maps(
        {f"{task.architecture}: output current": current_map},
        {f"{task.architecture}: output current": (x_test.numpy(), y_test.numpy())},
        out / "solution_iv.png",
    )
    controls = {f"layer{i}": layer.control_table() for i, layer in enumerate(dnpu_layers(model))}
    controls["logistic_threshold_na"] = metrics["threshold_na"]
    # the whole classifier (controls, batch-norm weights and running statistics), loadable with
    # model.load_state_dict(safetensors.torch.load_file(...)) into build_ring_model(...)
    with atomic_path(out / "model.safetensors") as tmp:
        save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, tmp)
    return TaskOutcome(
        metrics,
        controls,
        f"Rings ({task.architecture}, gap {task.gap})",
        ["back end", "train acc.", "test acc.", "Fisher"],
        rows,
        curves,
    )
