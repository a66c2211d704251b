"""Mixed-signal learning (EBANA's experiment, scaled to scikit-learn digits): a small CNN drives an analog EP circuit.

Command (from the repository root)::

    python benchmarks/ep/mixed_digits.py --epochs 10

Digital front end: the 8x8 digit (pixels scaled to [-1, 1]) -> Conv2d(1, 8, 3) -> ReLU -> Conv2d(8, 16, 3)
-> ReLU -> global average pool -> Linear(16, 16) -> input voltages ``0.5 tanh(.)`` V. Analog block:
:func:`inmaterio.circuits.examples.diode_network` with 16 inputs (and inverses), 20 hidden diode
nodes, 20 outputs (10 classes, differential). Both are trained together
(:func:`inmaterio.circuits.mixed.fit_mixed`): EP gives the circuit's
conductance gradients and the gradient of the loss with respect to its 16
input voltages, which is back-propagated through the CNN (Adam, lr 3e-3).
Symmetric EP, beta 1e-7 S, MSE (target +-0.1 V), circuit Adam lr 0.01,
batch 16. Split: ``load_digits_split(seed)`` (1257 / 540). Baseline: the same
analog block fed by a *fixed* random CNN (only the circuit learns). Writes
``results/mixed_digits.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn

from inmaterio.circuits import EPTrainConfig
from inmaterio.circuits.ep import readout
from inmaterio.circuits.examples import diode_network
from inmaterio.circuits.mixed import MixedSignalModel, fit_mixed
from inmaterio.data.tabular import load_digits_split
from inmaterio.fileio import atomic_write_text


def front_end() -> nn.Module:
    return nn.Sequential(
        nn.Unflatten(1, (1, 8, 8)),
        nn.Conv2d(1, 8, 3),
        nn.ReLU(),
        nn.Conv2d(8, 16, 3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 16),
    )


def run(train_front: bool, epochs: int, seed: int) -> tuple[float, float, float]:
    torch.manual_seed(seed)
    data = load_digits_split(seed)
    x_train, y_train = torch.as_tensor(data.x_train, dtype=torch.float32), torch.as_tensor(data.y_train)
    x_test, y_test = torch.as_tensor(data.x_test, dtype=torch.float32), torch.as_tensor(data.y_test)
    front = front_end()
    model = MixedSignalModel(front, diode_network(16, 20, 10, seed=seed), voltage_v=0.5)
    config = EPTrainConfig(epochs=epochs, batch_size=16, beta=1e-7, lr=0.01, readout="differential", target_v=0.1, seed=seed)
    optimizer = torch.optim.Adam(front.parameters(), lr=3e-3 if train_front else 0.0)
    t0 = time.perf_counter()
    fit_mixed(model, x_train, y_train, config, front_optimizer=optimizer, progress=False)
    wall = time.perf_counter() - t0
    accuracy = lambda x, y: (readout(model(x), "differential").argmax(1) == y).double().mean().item()  # noqa: E731
    return accuracy(x_train, y_train), accuracy(x_test, y_test), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = {
        "CNN + circuit, trained together": run(True, args.epochs, args.seed),
        "fixed random CNN + circuit (only the circuit learns)": run(False, args.epochs, args.seed),
    }
    lines = [
        "# Mixed-signal: a CNN front end and an analog EP circuit trained together (scikit-learn digits)",
        "",
        f"Command: `python benchmarks/ep/mixed_digits.py --epochs {args.epochs} --seed {args.seed}` (1 torch thread).",
        "",
        "| model | train accuracy | test accuracy | training wall (s) |",
        "| --- | --- | --- | --- |",
    ]
    lines += [f"| {name} | {tr:.2%} | {te:.2%} | {wall:.0f} |" for name, (tr, te, wall) in rows.items()]
    lines.append("")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "mixed_digits.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
