"""Training throughput of the 5x90 surrogate MLP: ours vs a brains-py-style loop vs a plain loop.

Command (from the repository root)::

    python benchmarks/surrogate_training.py --n-samples 100000 --epochs 3 --repeats 3 --threads 2

Every variant trains the same :class:`~inmaterio.surrogate.SurrogateModel`
(7 inputs, hidden layers 5 x 90, ReLU) with Adam (lr 1e-3) on the same
synthetic data (the analytic device's closed form on uniform random
voltages), in ONE process, so the ratios are comparable:

(a) ``train_surrogate``: our epoch loop (whole-tensor shuffling, contiguous
    slices, fused Adam, loss accumulated in a tensor), batch 512 and 256;
    samples/s from its history (epoch time: training + validation pass,
    without the checkpoint writes);
(b) brains-py style: ``torch.utils.data.DataLoader`` over a ``TensorDataset``,
    ``shuffle=True``, batch 256, ``loss.item()`` after every batch, default Adam;
(c) a plain in-memory loop: shuffled tensor, slices, batch 256, default Adam,
    no per-batch sync.

Variants run interleaved ``--repeats`` times (other processes on a shared
machine slow all of them alike); the table shows the best and the median
samples/s over all timed epochs (the first epoch of each run is a warm-up and
not timed). Samples/s counts training samples per second of epoch time.

Measured (2-core AMD EPYC VM, torch 2.13 CPU, 2 threads, machine otherwise idle;
other processes on the same cores cut every number, the 2-thread ones most)::

    variant                                      best samples/s  median samples/s  median vs (b)
    (a) train_surrogate, batch 512                      421,106           390,277          3.73x
    (a) train_surrogate, batch 256                      313,709           300,683          2.87x
    (b) brains-py style DataLoader, batch 256           140,465           104,627          1.00x
    (c) plain in-memory loop, batch 256                 247,601           217,841          2.08x
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import torch

from inmaterio.devices import AnalyticDevice
from inmaterio.smg.config import TrainConfig
from inmaterio.smg.dataset import Dataset, split
from inmaterio.smg.train import train_surrogate
from inmaterio.surrogate import DeviceInfo, SurrogateModel

HIDDEN = (90,) * 5


def synthetic_data(n_samples: int) -> tuple[Dataset, Dataset, DeviceInfo]:
    device = AnalyticDevice(n_activation=7)
    v = np.random.default_rng(0).uniform(-1.2, 0.6, size=(n_samples, 7))
    data = Dataset(v, device.measure(v), np.zeros(n_samples))
    train, val, _ = split(data, (0.9, 0.1, 0.0), seed=0)
    return train, val, DeviceInfo.from_device(device)


def ours(batch_size: int) -> Callable[[Dataset, Dataset, DeviceInfo, int], list[float]]:
    def run(train: Dataset, val: Dataset, info: DeviceInfo, epochs: int) -> list[float]:
        config = TrainConfig(hidden_sizes=HIDDEN, batch_size=batch_size, max_epochs=epochs + 1, patience=epochs + 1)
        with tempfile.TemporaryDirectory() as directory:
            result = train_surrogate(train, val, config, directory, info, progress=False)
        return [len(train) / h["time_s"] for h in result.history[1:]]

    return run


def _tensors(train: Dataset, info: DeviceInfo) -> tuple[SurrogateModel, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = SurrogateModel(info, hidden_sizes=HIDDEN)
    x = torch.tensor(train.voltages_v, dtype=torch.float32)
    y = torch.tensor(train.current_na, dtype=torch.float32)
    return model, x, y


def brainspy_style(train: Dataset, val: Dataset, info: DeviceInfo, epochs: int) -> list[float]:
    model, x, y = _tensors(train, info)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=256, shuffle=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rates = []
    for epoch in range(epochs + 1):
        start = time.perf_counter()
        running = 0.0
        for xb, yb in loader:
            optimizer.zero_grad()
            loss = torch.nn.functional.mse_loss(model(xb), yb)
            loss.backward()
            optimizer.step()
            running += loss.item() * len(xb)
        if epoch:
            rates.append(len(x) / (time.perf_counter() - start))
    return rates


def plain_loop(train: Dataset, val: Dataset, info: DeviceInfo, epochs: int) -> list[float]:
    model, x, y = _tensors(train, info)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    rates = []
    for epoch in range(epochs + 1):
        start = time.perf_counter()
        perm = torch.randperm(len(x))
        xs, ys = x[perm], y[perm]
        total = torch.zeros(())
        for i in range(0, len(x), 256):
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(model(xs[i : i + 256]), ys[i : i + 256])
            loss.backward()
            optimizer.step()
            total += loss.detach()
        total.item()
        if epoch:
            rates.append(len(x) / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=100_000, help="synthetic points (90%% used for training)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per run (after one warm-up epoch)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of every variant")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train, val, info = synthetic_data(args.n_samples)
    variants = {
        "(a) train_surrogate, batch 512": ours(512),
        "(a) train_surrogate, batch 256": ours(256),
        "(b) brains-py style DataLoader, batch 256": brainspy_style,
        "(c) plain in-memory loop, batch 256": plain_loop,
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.repeats):
        for name, run in variants.items():
            rates[name] += run(train, val, info, args.epochs)
    baseline = statistics.median(rates["(b) brains-py style DataLoader, batch 256"])
    print(f"5x90 ReLU MLP, {len(train)} training samples, {args.threads} threads, torch {torch.__version__}")
    print(f"{'variant':<44} {'best samples/s':>15} {'median samples/s':>17} {'median vs (b)':>14}")
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"{name:<44} {max(values):>15,.0f} {median:>17,.0f} {median / baseline:>13.2f}x")


if __name__ == "__main__":
    main()
