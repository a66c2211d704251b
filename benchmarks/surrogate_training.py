"""Training throughput of the 5x90 surrogate MLP: ours vs brainspy-smg, and vs the machine's matmul bound.

Command (from the repository root; ``--install-peers`` pip-installs
brainspy 1.0.2 and brainspy-smg 1.0.7 with ``--no-deps`` into this
environment first)::

    python benchmarks/surrogate_training.py --install-peers --threads 1

Every variant trains a 7-input, 5 x 90 ReLU MLP with Adam (lr 1e-3) at the
same batch size on the same synthetic data (the analytic device's closed
form on uniform random voltages, 90 % training, 10 % validation), in ONE
process, so the ratios are comparable. An epoch is a training pass plus a
validation pass on both sides.

(a) ours: :func:`inmaterio.smg.train.train_surrogate` (whole-tensor
    shuffling, :class:`~inmaterio.smg.mlp_trainer.MLPTrainer`); samples/s from
    its history (epoch time without the checkpoint writes);
(b) brainspy-smg 1.0.7, its own code: ``bspysmg.model.training``'s
    ``default_train_step`` and ``default_val_step`` on brains-py's
    ``NeuralNetworkModel``, with a ``DataLoader`` over bspysmg's
    ``ModelDataset`` read from a ``postprocessed_data``-style ``.npz`` (shuffle
    on, no workers, as its ``get_dataloaders`` builds it); its progress bars go
    to a null stream;
(c) the autograd loop ours replaced (same slices, ``torch.optim.Adam(fused=True)``):
    what the hand-written backward pass gains.

The bound: the matrix products of one training step (forward ``addmm``;
backward ``dL/dW`` and ``dL/dh``) and of the validation forward pass, timed
alone at the same batch size and thread count, give the training samples/s an
epoch could reach if everything else were free; the table reports each
variant's fraction of it.

Variants run interleaved ``--repeats`` times (other processes on a shared
machine slow all of them alike); the table shows the best and the median
samples/s over all timed epochs (the first epoch of each run is a warm-up and
not timed), and each against brainspy-smg's best and median. brainspy-smg's
epochs come at two speeds (about one in three ~20 % slower, also in a process
of its own), so its median moves between runs with how many slow epochs a run
draws; the ratio of best to best is the stable one. Results go to
benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from inmaterio.devices import AnalyticDevice
from inmaterio.smg.config import TrainConfig
from inmaterio.smg.dataset import Dataset, split
from inmaterio.smg.train import train_surrogate
from inmaterio.surrogate import DeviceInfo, SurrogateModel

HIDDEN = (90,) * 5
PEERS = ("brainspy==1.0.2", "brainspy-smg==1.0.7")

Result = tuple[list[float], float]  # samples/s of every timed epoch, validation RMSE (nA) at the end


def install_peers() -> None:
    """pip-install the peers without their pinned dependencies (they pin torch 1.x and Python 3.9)."""
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--ignore-requires-python", *PEERS]
    subprocess.run(command, check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "tqdm", "matplotlib", "scipy"], check=True)


def synthetic_data(n_samples: int) -> tuple[Dataset, Dataset, DeviceInfo]:
    device = AnalyticDevice(n_activation=7)
    v = np.random.default_rng(0).uniform(-1.2, 0.6, size=(n_samples, 7))
    data = Dataset(v, device.measure(v), np.zeros(n_samples))
    train, val, _ = split(data, (0.9, 0.1, 0.0), seed=0)
    return train, val, DeviceInfo.from_device(device)


def ours(batch: int) -> Callable[[Dataset, Dataset, DeviceInfo, int], Result]:
    def run(train: Dataset, val: Dataset, info: DeviceInfo, epochs: int) -> Result:
        config = TrainConfig(hidden_sizes=HIDDEN, batch_size=batch, max_epochs=epochs + 1, patience=epochs + 1)
        with tempfile.TemporaryDirectory() as directory:
            result = train_surrogate(train, val, config, directory, info, progress=False)
        return [len(train) / h["time_s"] for h in result.history[1:]], result.history[-1]["val_rmse_na"]

    return run


def brainspy_smg(batch: int) -> Callable[[Dataset, Dataset, DeviceInfo, int], Result]:
    def run(train: Dataset, val: Dataset, info: DeviceInfo, epochs: int) -> Result:
        from brainspy.processors.simulation.model import NeuralNetworkModel
        from bspysmg.data.dataset import ModelDataset
        from bspysmg.model.training import default_train_step, default_val_step

        with tempfile.TemporaryDirectory() as directory, contextlib.redirect_stdout(io.StringIO()):
            loaders = []
            for name, ds, shuffle in (("train", train, True), ("val", val, False)):
                path = Path(directory) / f"{name}.npz"
                np.savez(
                    path,
                    inputs=ds.voltages_v.astype(np.float32),
                    outputs=ds.current_na.astype(np.float32)[:, None],
                    sampling_configs=np.array({"driver": {"amplification": 1.0}}, dtype=object),
                )
                loaders.append(
                    torch.utils.data.DataLoader(ModelDataset(str(path)), batch_size=batch, shuffle=shuffle, num_workers=0)
                )
            torch.manual_seed(0)
            structure = {"hidden_sizes": list(HIDDEN), "D_in": 7, "D_out": 1, "activation": "relu"}
            model = NeuralNetworkModel(structure)
            optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
            criterion = torch.nn.MSELoss()
            rates = []
            with contextlib.redirect_stderr(io.StringIO()):
                for epoch in range(epochs + 1):
                    start = time.perf_counter()
                    default_train_step(model, loaders[0], criterion, optimizer)
                    val_mse = default_val_step(model, loaders[1], criterion)
                    if epoch:
                        rates.append(len(train) / (time.perf_counter() - start))
        return rates, float(val_mse) ** 0.5

    return run


def autograd_loop(batch: int) -> Callable[[Dataset, Dataset, DeviceInfo, int], Result]:
    def run(train: Dataset, val: Dataset, info: DeviceInfo, epochs: int) -> Result:
        torch.manual_seed(0)
        mlp = SurrogateModel(info, hidden_sizes=HIDDEN).mlp
        mean, std = float(train.current_na.mean()), float(train.current_na.std())
        x, y = (torch.tensor(a, dtype=torch.float32) for a in (train.voltages_v, (train.current_na - mean) / std))
        xv, yv = (torch.tensor(a, dtype=torch.float32) for a in (val.voltages_v, (val.current_na - mean) / std))
        optimizer = torch.optim.Adam(mlp.parameters(), lr=1e-3, fused=True)
        rates = []
        for epoch in range(epochs + 1):
            start = time.perf_counter()
            perm = torch.randperm(len(x))
            xs, ys = x[perm], y[perm]
            total = torch.zeros(())
            for i in range(0, len(x), batch):
                optimizer.zero_grad(set_to_none=True)
                loss = torch.nn.functional.mse_loss(mlp(xs[i : i + batch]).squeeze(-1), ys[i : i + batch])
                loss.backward()
                optimizer.step()
                total += loss.detach() * len(ys[i : i + batch])
            total.item()
            with torch.no_grad():
                val_rmse = (mlp(xv).squeeze(-1) - yv).square().mean().sqrt().item() * std
            if epoch:
                rates.append(len(x) / (time.perf_counter() - start))
        return rates, val_rmse

    return run


def matmul_seconds(batch: int, n_in: int = 7, repeats: int = 2000) -> tuple[float, float, float]:
    """Seconds per sample of a training step's matrix products alone and of a forward pass's, and their GFLOP/s.

    The step's products: forward ``addmm``, backward ``dL/dW`` and ``dL/dh``
    (none for the input), float32, at the current thread count.
    """
    widths = [n_in, *HIDDEN, 1]
    weights = [torch.randn(n_out, n_in_) for n_in_, n_out in zip(widths[:-1], widths[1:])]
    biases = [torch.randn(n_out) for n_out in widths[1:]]
    acts = [torch.randn(batch, w) for w in widths]
    grads = [torch.randn(batch, w) for w in widths]
    grad_w = [torch.empty_like(w) for w in weights]

    def forward() -> None:
        for i, w in enumerate(weights):
            torch.addmm(biases[i], acts[i], w.t(), out=acts[i + 1])

    def step() -> None:
        forward()
        for i in range(len(weights) - 1, -1, -1):
            torch.mm(grads[i + 1].t(), acts[i], out=grad_w[i])
            if i > 0:
                torch.mm(grads[i + 1], weights[i], out=grads[i])

    seconds = []
    for fn in (step, forward):
        for _ in range(100):
            fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        seconds.append((time.perf_counter() - start) / repeats / batch)
    macs = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    flops = 2 * (3 * macs - widths[0] * widths[1])
    return seconds[0], seconds[1], flops / seconds[0] / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=100_000, help="synthetic points (90%% used for training)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs per run (after one warm-up epoch)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of every variant")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--batch-size", type=int, default=512, help="samples per step, every variant")
    parser.add_argument("--install-peers", action="store_true", help=f"pip install --no-deps {' '.join(PEERS)} first")
    args = parser.parse_args()
    for name in ("n_samples", "epochs", "repeats", "threads", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be a whole number >= 1, got {getattr(args, name)}")
    if args.install_peers:
        install_peers()
    try:
        import bspysmg  # noqa: F401
    except ImportError:
        sys.exit("brainspy-smg is not installed: run with --install-peers (pip install --no-deps " + " ".join(PEERS) + ")")
    torch.set_num_threads(args.threads)
    train, val, info = synthetic_data(args.n_samples)
    batch = args.batch_size
    variants = {
        f"(a) ours, train_surrogate, batch {batch}": ours(batch),
        f"(b) brainspy-smg 1.0.7, batch {batch}": brainspy_smg(batch),
        f"(c) autograd + fused torch Adam, batch {batch}": autograd_loop(batch),
    }
    rates: dict[str, list[float]] = {name: [] for name in variants}
    rmse: dict[str, list[float]] = {name: [] for name in variants}
    bounds = []
    for _ in range(args.repeats):
        for name, run in variants.items():
            values, val_rmse = run(train, val, info, args.epochs)
            rates[name] += values
            rmse[name].append(val_rmse)
        bounds.append(matmul_seconds(batch))
    step_s = statistics.median(b[0] for b in bounds)  # medians, like the variants' columns
    forward_s = statistics.median(b[1] for b in bounds)
    gflops = statistics.median(b[2] for b in bounds)
    # an epoch trains on the training set and evaluates the validation set: the bound counts both
    bound = len(train) / (len(train) * step_s + len(val) * forward_s)
    peer_rates = rates[f"(b) brainspy-smg 1.0.7, batch {batch}"]
    peer_best, peer = max(peer_rates), statistics.median(peer_rates)
    print(f"5x90 ReLU MLP, {len(train)} training samples, {args.threads} thread(s), torch {torch.__version__}")
    print(
        f"matmul bound: {bound:,.0f} training samples/s per epoch (training steps and validation pass; "
        f"{gflops:.1f} GFLOP/s in a step's matrix products)\n"
    )
    print(
        "| variant | best samples/s | best vs (b)'s best | median samples/s | median vs (b)'s median "
        "| median / matmul bound | val RMSE after the epochs (nA) |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, values in rates.items():
        median = statistics.median(values)
        print(
            f"| {name} | {max(values):,.0f} | {max(values) / peer_best:.2f}x | {median:,.0f} | {median / peer:.2f}x "
            f"| {median / bound:.0%} "
            f"| {statistics.median(rmse[name]):.3g} |"
        )


if __name__ == "__main__":
    main()
