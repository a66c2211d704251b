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

__all__ = ["build_ring_model", "operating_points", "run_rings"]


def build_ring_model(architecture: str, processor: Processor, input_electrodes, seed: int) -> nn.Module:
    """The network of ``architecture`` (``single`` or ``2-2-1``) on ``processor``; output ``(batch,)`` nA."""
    if architecture == "single":
        return single_dnpu(processor, input_electrodes=input_electrodes, data_range=(-1.0, 1.0), seed=seed)
    return two_two_one(processor, input_electrodes=input_electrodes, data_range=(-1.0, 1.0), seed=seed)


def operating_points(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The activation voltages of every DNPU node of ``model`` on the inputs ``x``: ``(n, electrodes)`` V.

    One row per node and sample, layer by layer (``batch * nodes`` rows per layer), in the model's
    current mode; the model's output is not needed and its back ends are called as usual.

    Raises
    ------
    ConfigError
        ``model`` has no DNPU layer.
    """
    layers = dnpu_layers(model)
    if not layers:
        from inmaterio.errors import ConfigError

        raise ConfigError(f"{type(model).__name__} has no DNPU layer, so no operating points")
    seen: list[torch.Tensor] = []
    hooks = [
        layer.register_forward_hook(
            lambda layer, args, output: seen.append(layer.voltages(args[0]).reshape(-1, layer.n_inputs + layer.n_controls))
        )
        for layer in layers
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return torch.cat(seen)


def _refine(task, model, surrogate, device, x_train, y_train, loss_fn, seed: int, out: Path, progress: bool):
    """Rounds of task-aware refinement of the network's surrogate (``task.refine``).

    Each round measures the device where the nodes operate on the training set (at most
    ``max_operating_points`` of those points, and ``points_per_operating_point`` neighbours in a box
    of ``radius_v`` around each), fine-tunes a copy of the surrogate on every point measured so
    far, and re-trains the network on the copy from where it is, its controls kept within
    ``radius_v`` of the trained ones (the box the copy was fitted in). Returns the last refined
    surrogate's processor (the model is left on it) and one JSON-ready record per round; the
    measurements are kept in ``out/refinement/round_<k>.npz``, the refined surrogate in
    ``out/refinement/surrogate``, and each re-training is a resumable run folder.
    """
    from inmaterio.nn import set_processor
    from inmaterio.surrogate import save_surrogate
    from inmaterio.tasks.refinement import refined_processor, refinement_round, round_centres

    config = task.refine
    for layer in dnpu_layers(model):  # the trust region: the controls stay in the box the refined surrogate is fitted in
        layer.keep_controls_within(config.radius_v)
    measured, rounds = [], []
    processor = surrogate
    for r in range(config.rounds):
        centres = round_centres(model, processor, x_train, config.max_operating_points, seed, r)
        refined, n_points = refinement_round(config, surrogate, device, centres, measured, r, seed, out, progress)
        processor = refined_processor(refined, surrogate)
        set_processor(model, processor)
        retrained = train_gd(
            model, loss_fn, x_train, y_train,
            task.gd.model_copy(update={"epochs": config.retrain_epochs, "seed": seed + 1000 + r}), progress=progress,
            directory=out / "refinement" / f"retrain_{r + 1}",
        )  # fmt: skip
        rounds.append(
            {"round": r + 1, "device_points": n_points, **refined.summary(), "retrain_loss": float(retrained.best_loss)}
        )
    save_surrogate(
        refined.model, out / "refinement" / "surrogate", overwrite=True,
        metadata={"refined_from": surrogate.model.metadata, "refinement": rounds},
    )  # fmt: skip
    return processor, rounds


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
    refinement = []
    if task.refine is not None:
        if device is None:
            from inmaterio.errors import ConfigError

            raise ConfigError("task.refine measures the device where the network operates: set validation.enabled: true")
        surrogate, refinement = _refine(task, model, surrogate, device, x_train, y_train, loss_fn, seed, out, progress)
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
        if refinement:
            metrics["refinement"] = refinement
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
