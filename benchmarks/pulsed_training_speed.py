"""Training speed on pulsed devices: MNIST 784-256-128-10 with stochastic pulse-train updates, ours vs aihwkit.

Command (from the repository root; prints a markdown table)::

    python benchmarks/pulsed_training_speed.py --threads 1 --samples 2000

One optimiser step per image (batch 1, as the pulse-train rule of Gokmen & Vlasov works: every image is
one rank-one update of every layer) on a sigmoid MLP 784-256-128-10 with every weight on a device of
the ``gokmen_vlasov`` preset (constant step, 1200 states, 30 % device-to-device and cycle-to-cycle
spread), ideal periphery, cross-entropy. Images: MNIST training images (``--data``, default
``$INMATERIO_MNIST_DIR``) with pixels in [0, 1], or, without data, random images with MNIST's share of
lit pixels (19 %). Rows (same process, one after the other, after an untimed warm-up of 100 images):

* ``ours, pulse trains BL = 10`` — :class:`~inmaterio.crossbars.analog_sgd.AnalogSGD`, ``rule: pulse_train``,
  bit length 10, update management on.
* ``ours, pulse-count MBGD (B = 1, SR)`` — the same network, each image's gradient rounded
  stochastically to pulse counts (``rule: mbgd``).
* ``digital SGD`` — ``torch.optim.SGD`` on the same network (``nn.Linear``), the floor.
* ``aihwkit`` — ``AnalogLinear`` layers with ``SingleRPUConfig(device=ConstantStepDevice())``,
  ``update.desired_bl = 10`` and ``AnalogSGD``; its compiled tiles. Where they do not load (e.g. a torch
  ABI mismatch) the row says why.

Reported: images per second (the fastest of ``--repeats`` timed runs) and the time an epoch of
60,000 images would take at that rate.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable

import torch
from torch import nn

from inmaterio.crossbars import convert_to_analog, preset
from inmaterio.crossbars.analog_sgd import AnalogSGD


def images(n: int, data: str | None) -> tuple[torch.Tensor, torch.Tensor, str]:
    """``n`` images ``(n, 784)`` in [0, 1] and labels, and where they came from."""
    try:
        from inmaterio.data.mnist import load_mnist, scale_pixels

        raw = load_mnist(data)
        x = scale_pixels(raw.train_images[:n]) + 0.5
        return x, torch.as_tensor(raw.train_labels[:n].astype("int64")), "MNIST training images"
    except Exception as error:  # noqa: BLE001 - any missing data falls back to synthetic images
        g = torch.Generator().manual_seed(0)
        x = torch.rand(n, 784, generator=g) * (torch.rand(n, 784, generator=g) < 0.19)
        return x, torch.randint(0, 10, (n,), generator=g), f"random images ({type(error).__name__}: no MNIST)"


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(784, 256), nn.Sigmoid(), nn.Linear(256, 128), nn.Sigmoid(), nn.Linear(128, 10))


def rate(step: Callable[[torch.Tensor, torch.Tensor], None], x: torch.Tensor, y: torch.Tensor, repeats: int) -> float:
    """Images per second of ``step`` over ``x``, one image per call (the fastest of ``repeats`` runs)."""
    for i in range(min(100, len(x))):
        step(x[i : i + 1], y[i : i + 1])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(len(x)):
            step(x[i : i + 1], y[i : i + 1])
        best = min(best, time.perf_counter() - start)
    return len(x) / best


def trainer(model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable[[torch.Tensor, torch.Tensor], None]:
    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()

    return step


def ours(rule: str) -> Callable[[torch.Tensor, torch.Tensor], None]:
    model = convert_to_analog(mlp())
    settings = {"device": preset("gokmen_vlasov").model_dump(), "rule": rule, "pulse_train": {"bl": 10}}
    return trainer(model, AnalogSGD(model, settings, lr=0.01, seed=0))


def aihwkit_row() -> Callable[[torch.Tensor, torch.Tensor], None]:
    from aihwkit.nn import AnalogLinear as AihwkitLinear
    from aihwkit.optim import AnalogSGD as AihwkitSGD
    from aihwkit.simulator.configs import SingleRPUConfig
    from aihwkit.simulator.configs.devices import ConstantStepDevice

    config = SingleRPUConfig(device=ConstantStepDevice())
    config.update.desired_bl = 10
    model = nn.Sequential(
        AihwkitLinear(784, 256, rpu_config=config), nn.Sigmoid(), AihwkitLinear(256, 128, rpu_config=config), nn.Sigmoid(),
        AihwkitLinear(128, 10, rpu_config=config),
    )  # fmt: skip
    optimizer = AihwkitSGD(model.parameters(), lr=0.01)
    optimizer.regroup_param_groups(model)
    return trainer(model, optimizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--samples", type=int, default=2000, help="images per timed run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data", default=os.environ.get("INMATERIO_MNIST_DIR"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, y, source = images(args.samples, args.data)
    rows = []
    for name, make in (
        ("ours, pulse trains BL = 10", lambda: ours("pulse_train")),
        ("ours, pulse-count MBGD (B = 1, SR)", lambda: ours("mbgd")),
        ("digital SGD", lambda: trainer(model := mlp(), torch.optim.SGD(model.parameters(), lr=0.01))),
        ("aihwkit, SingleRPUConfig(ConstantStepDevice), BL = 10", aihwkit_row),
    ):
        try:
            r = rate(make(), x, y, args.repeats)
            rows.append(f"| {name} | {r:.1f} | {60000 / r:.0f} |")
        except Exception as error:  # noqa: BLE001 - a peer that does not run is reported, not fatal
            message = str(error).splitlines()[0][:160] if str(error) else ""
            rows.append(f"| {name} | not run: {type(error).__name__}: {message} | |")
    print(f"{source}, {args.samples} images per run, {args.threads} thread(s), torch {torch.__version__}\n")
    print("| training | images / s | s per 60,000-image epoch |\n|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
