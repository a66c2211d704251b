"""Validation of trained solutions on a device, reported beside the surrogate's results.

The trained model keeps its control voltages; only its back end changes
(:func:`inmaterio.nn.processor_swapped`). Every repeat re-measures the whole
set. Accuracy on the device is reported two ways:

* ``device_accuracy``: a logistic threshold re-fitted on the device's output
  (the read-out perceptron is trained on the hardware, as on a real chip);
* ``device_accuracy_surrogate_threshold``: the threshold fitted on the
  surrogate's output, applied unchanged (how well the solution transfers).

With progress on (``validate_model(progress=True)``, or inside
:func:`validation_progress`, which ``inmaterio run`` enters with its progress
flag), a :class:`~inmaterio.processors.DeviceProcessor` shows a bar with rate
and ETA on every call of more than one waveform (on a terminal only).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from contextvars import ContextVar
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from inmaterio.nn import dnpu_layers, processor_swapped
from inmaterio.processors import DeviceProcessor, Processor
from inmaterio.training.metrics import LogisticThreshold, threshold_accuracy

__all__ = ["Validation", "output_map", "validate_layer", "validate_model", "validation_progress"]

_PROGRESS: ContextVar[bool] = ContextVar("inmaterio_validation_progress", default=False)


@contextmanager
def validation_progress(enabled: bool = True) -> Iterator[None]:
    """Inside the block, :func:`validate_model` calls given no ``progress`` show progress bars when ``enabled``."""
    token = _PROGRESS.set(bool(enabled))
    try:
        yield
    finally:
        _PROGRESS.reset(token)


@dataclass
class Validation:
    """Device results of ``problems`` solutions, each on its own targets.

    Attributes
    ----------
    output_na : ``(repeats, problems, batch)`` device currents.
    surrogate_output_na : ``(problems, batch)`` the surrogate's currents on the same inputs.
    accuracy : ``(repeats, problems)`` with a threshold re-fitted on the device output.
    accuracy_surrogate_threshold : ``(repeats, problems)`` with the surrogate's threshold.
    seconds : wall time of all device evaluations.
    """

    output_na: torch.Tensor
    surrogate_output_na: torch.Tensor
    accuracy: torch.Tensor
    accuracy_surrogate_threshold: torch.Tensor
    seconds: float

    @property
    def rms_difference_na(self) -> torch.Tensor:
        """``(problems,)`` RMS difference device - surrogate over batch and repeats, nA."""
        diff = self.output_na - self.surrogate_output_na[None]
        return diff.pow(2).mean(dim=(0, 2)).sqrt()

    def for_problem(self, k: int) -> dict:
        """JSON-ready numbers of problem ``k``."""
        return {
            "device_accuracy": float(self.accuracy[:, k].mean()),
            "device_accuracy_min": float(self.accuracy[:, k].min()),
            "device_accuracy_surrogate_threshold": float(self.accuracy_surrogate_threshold[:, k].mean()),
            "rms_difference_na": float(self.rms_difference_na[k]),
            "device_output_na": self.output_na[:, k].mean(dim=0).tolist(),
        }


def validate_model(
    model: nn.Module,
    device: Processor,
    x: torch.Tensor,
    targets: torch.Tensor,
    threshold: LogisticThreshold,
    *,
    outputs: Callable[[torch.Tensor], torch.Tensor],
    repeats: int = 1,
    multiplex: bool = False,
    progress: bool | None = None,
) -> Validation:
    """Evaluate ``model`` on ``x`` with its surrogate and with ``device``; compare.

    Parameters
    ----------
    model : a network of DNPU layers (in eval mode for batch norm).
    device : the processor to validate on (e.g. a :class:`~inmaterio.processors.DeviceProcessor`).
    x : inputs ``(batch, ...)``.
    targets : ``(problems, batch)`` binary targets.
    threshold : the logistic threshold fitted on the surrogate's outputs, leading shape ``(problems,)``.
    outputs : maps the model's output to ``(problems, batch)`` (e.g. ``lambda out: out.T`` for a
        layer of one node per problem, ``lambda out: out[None]`` for a ``(batch,)`` network).
    repeats : measurements of the whole set.
    multiplex : evaluate the nodes of each layer one after the other (one physical device).
    progress : a progress bar (rate, ETA) on the device calls of more than one waveform, if ``device`` is a
        :class:`~inmaterio.processors.DeviceProcessor` (on a terminal only); None: as :func:`validation_progress`
        says (off by default).
    """
    show = _PROGRESS.get() if progress is None else bool(progress)
    was_training = model.training
    model.eval()
    layers = dnpu_layers(model)
    before = [layer.multiplex for layer in layers]
    try:
        with torch.no_grad(), ExitStack() as quiet:
            for processor in {id(layer.processor): layer.processor for layer in layers}.values():
                quiet.enter_context(processor.noise_off())  # the surrogate's prediction, not one noise draw
            surrogate_out = outputs(model(x))
        with torch.no_grad():
            start = time.perf_counter()
            shown = device.progress_shown(show) if isinstance(device, DeviceProcessor) else nullcontext()
            with processor_swapped(model, device), shown:
                for layer in layers:
                    layer.multiplex = multiplex or layer.multiplex
                measured = torch.stack([outputs(model(x)) for _ in range(repeats)])
            seconds = time.perf_counter() - start
    finally:
        for layer, m in zip(layers, before):
            layer.multiplex = m
        model.train(was_training)
    targets = targets.to(measured.dtype)
    return Validation(
        output_na=measured,
        surrogate_output_na=surrogate_out,
        accuracy=threshold_accuracy(measured, targets.expand_as(measured)),
        accuracy_surrogate_threshold=(threshold.predict(measured) == targets).to(measured.dtype).mean(dim=-1),
        seconds=seconds,
    )


def validate_layer(
    layer: nn.Module,
    device: Processor,
    x: torch.Tensor,
    targets: torch.Tensor,
    threshold: LogisticThreshold,
    repeats: int = 1,
    progress: bool | None = None,
) -> Validation:
    """:func:`validate_model` for one DNPU layer whose node k solves problem k (output ``(batch, problems)``)."""
    return validate_model(layer, device, x, targets, threshold, outputs=lambda out: out.T, repeats=repeats, progress=progress)


def output_map(
    fn: Callable[[torch.Tensor], torch.Tensor] | nn.Module,
    node: int | None,
    data_range: tuple[float, float],
    n: int = 41,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Output current over an ``n x n`` grid of the two inputs in ``data_range``.

    ``fn`` maps ``(n * n, 2)`` inputs to ``(n * n,)`` currents, or to
    ``(n * n, nodes)`` of which column ``node`` is taken. Returns ``x (n,)``,
    ``y (n,)`` and ``current_na (n, n)`` (rows along y), for :func:`inmaterio.plots.plot_output_maps`.
    """
    g = torch.linspace(data_range[0], data_range[1], n)
    gy, gx = torch.meshgrid(g, g, indexing="ij")
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    was_training = getattr(fn, "training", False)
    if isinstance(fn, nn.Module):
        fn.eval()
    with torch.no_grad():
        out = fn(grid)
    if isinstance(fn, nn.Module):
        fn.train(was_training)
    if node is not None:
        out = out[:, node]
    return g.numpy(), g.numpy(), out.reshape(n, n).numpy()
