"""What subnormal floats cost the surrogate's hot loops, and what flushing them to zero gives back.

Command (one thread; prints a markdown table; numbers go to benchmarks/RESULTS.md):

    python benchmarks/denormals.py

Times, on the bundled surrogate, with the flush-to-zero mode of
:mod:`inmaterio.denormals` off (``torch.set_flush_denormal`` made a no-op for
the run) and on, in the same process on the same data:

1. a forward pass of 200,000 random operating points, and a forward and
   backward pass of 20,000 (inside ``flushed_denormals``, as the training
   loops run it), and whether the outputs and input gradients agree
   to the last bit;
2. the capacity study's hot loops at N = 8 (all 256 labellings): 100 epochs
   of :func:`~inmaterio.studies.capacity_trial.train_classifiers` with output
   noise, 50,000 screened control vectors
   (:func:`~inmaterio.studies.capacity_search.screen_controls`) and 100 steps
   of :func:`~inmaterio.studies.capacity_search.refine_margin`, and whether
   the trained accuracies and refined margins agree.

On CPUs without a slow path for subnormals the two columns agree.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from contextlib import contextmanager

import torch

from inmaterio.denormals import flushed_denormals
from inmaterio.nn import DNPU
from inmaterio.processors import SurrogateProcessor
from inmaterio.studies.capacity_search import refine_margin, screen_controls
from inmaterio.studies.capacity_trial import train_classifiers
from inmaterio.surrogate import load_default_surrogate
from inmaterio.tasks.capacity import labellings
from inmaterio.tasks.config import CAPACITY_POINTS

INPUT_ELECTRODES = [3, 4]
DATA_RANGE = (-1.2, 0.6)


@contextmanager
def flush_mode(on: bool):
    """Inside: :func:`~inmaterio.denormals.flushed_denormals` works (``on``) or does nothing (off)."""
    original = torch.set_flush_denormal
    if not on:
        torch.set_flush_denormal = lambda mode: False
    try:
        yield
    finally:
        torch.set_flush_denormal = original


def timed(fn: Callable[..., object], *args, **kwargs) -> tuple[float, object]:
    """Seconds taken by ``fn(*args, **kwargs)``, and its value."""
    start = time.perf_counter()
    value = fn(*args, **kwargs)
    return time.perf_counter() - start, value


def input_gradient(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """d(sum of squared outputs)/dx, ``x.shape``: one forward and one backward pass, inside
    :func:`~inmaterio.denormals.flushed_denormals` as the library's training loops run them."""
    with flushed_denormals():
        return torch.autograd.grad(model(x).square().sum(), x)[0]


def surrogate_rows() -> dict[str, tuple[float, object]]:
    model = load_default_surrogate()
    x = torch.rand(200_000, 7, generator=torch.Generator().manual_seed(0)) * 1.8 - 1.2
    with torch.no_grad():
        model(x[:1000])  # warm-up
    rows = {}
    for on in (False, True):
        with flush_mode(on), torch.no_grad():
            rows[f"forward {on}"] = timed(lambda: model(x))
        small = x[:20_000].clone().requires_grad_(True)
        with flush_mode(on):
            rows[f"backward {on}"] = timed(input_gradient, model, small)
    return rows


def capacity_rows() -> dict[str, tuple[float, object]]:
    processor = SurrogateProcessor(load_default_surrogate())
    x = torch.tensor(CAPACITY_POINTS[:8], dtype=torch.float32)
    labels = labellings(8)
    rows = {}
    for on in (False, True):
        with flush_mode(on):
            processor.set_noise(processor.info.noise_na)
            torch.manual_seed(0)  # the output noise
            layer = DNPU(processor, len(labels), INPUT_ELECTRODES, DATA_RANGE, seed=0)
            seconds, (_, accuracy) = timed(train_classifiers, layer, x, labels, epochs=100)
            rows[f"train {on}"] = (seconds, accuracy)
            processor.set_noise(0.0)
            probe = DNPU(processor, 1, INPUT_ELECTRODES, DATA_RANGE)
            seconds, screen = timed(screen_controls, probe, x, labels, 50_000, 1, torch.Generator().manual_seed(0))
            rows[f"screen {on}"] = (seconds, screen.margin_na)
            refined = DNPU(processor, len(labels), INPUT_ELECTRODES, DATA_RANGE)
            with torch.no_grad():
                refined.controls.copy_(screen.controls[:, 0])
            rows[f"refine {on}"] = timed(
                refine_margin, refined, x, labels, screen.high_class[:, 0], steps=100, temperature_na=1.0
            )
    return rows


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread; flush-to-zero available: {torch.set_flush_denormal(False)}\n")
    print("| work | flush off (s) | flush on (s) | off / on | same result |")
    print("| --- | ---: | ---: | ---: | --- |")

    def row(name: str, rows: dict, key: str) -> None:
        (off, a), (on, b) = rows[f"{key} False"], rows[f"{key} True"]
        print(f"| {name} | {off:.3f} | {on:.3f} | {off / on:.1f}x | {'bit-identical' if torch.equal(a, b) else 'differs'} |")

    rows = surrogate_rows()
    row("bundled surrogate: forward, 200,000 points (outputs)", rows, "forward")
    row("bundled surrogate: forward + backward, 20,000 points (input gradients)", rows, "backward")
    rows = capacity_rows()
    row("capacity N = 8: train_classifiers, 100 epochs, 256 labellings (accuracies)", rows, "train")
    row("capacity N = 8: screen_controls, 50,000 control vectors (margins)", rows, "screen")
    row("capacity N = 8: refine_margin, 100 steps, 256 labellings (margins)", rows, "refine")


if __name__ == "__main__":
    main()
