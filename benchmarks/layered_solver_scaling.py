"""Cost of the layered block-coordinate-descent solver against the number of conductances.

Command (from the repository root; prints a markdown table)::

    python benchmarks/layered_solver_scaling.py --threads 1 --batch 100 --repeats 3

Network: MNIST-sized, ``784 x 2`` input sources (``x`` and ``-x``, ``x`` uniform in [0, 1] V) ->
``H`` hidden nodes -> 10 outputs (``--hidden-layers`` repeats the hidden layer), for the hidden sizes in
``--hidden``. Conductances uniform in ``[0, 2 g / fan_in]`` with ``g = 1e-4`` S (every node sees about
``g`` from the layer below); no bias currents; hidden diodes ``"split"`` at 0 V (half the nodes bounded
below, half above: about half of them clamp); no diodes at the outputs.

One EP step's worth of solving per sample: the free phase from 0 V, then the nudged phases at
``+beta`` and ``-beta`` (``beta = 1e-5`` S, a tenth of an output node's conductance, target
``0.1 V`` one-hot), each warm-started from the free phase, all to ``--tol-v``. Each size gets an untimed
warm-up, then ``--repeats`` timed runs; the table shows the fastest, as milliseconds per sample,
the sweeps each phase took, and the time per sample per million conductances (flat when the cost is
linear in the conductances at a fixed number of sweeps).
"""

from __future__ import annotations

import argparse
import time

import torch

from inmaterio.circuits.solve.layered import LayeredNetwork, diode_boxes, solve_layered

G_S = 1e-4
BETA_S = 1e-5


def network(hidden: int, layers: int, seed: int) -> LayeredNetwork:
    g = torch.Generator().manual_seed(seed)
    sizes = [2 * 784] + [hidden] * layers + [10]
    weights = [
        2 * G_S / sizes[k] * torch.rand(sizes[k + 1], sizes[k], generator=g, dtype=torch.float64) for k in range(len(sizes) - 1)
    ]
    boxes = [diode_boxes(n, "split", lower_v=0.0, upper_v=0.0) for n in sizes[1:-1]] + [None]
    return LayeredNetwork(weights, None, boxes)


def ep_solves(net: LayeredNetwork, x: torch.Tensor, y: torch.Tensor, tol_v: float) -> tuple[int, int, int]:
    free = solve_layered(x, net, tol_v=tol_v)
    plus = solve_layered(x, net, beta=BETA_S, target=y, tol_v=tol_v, v_init=free.voltages_v)
    minus = solve_layered(x, net, beta=-BETA_S, target=y, tol_v=tol_v, v_init=free.voltages_v)
    return free.sweeps, plus.sweeps, minus.sweeps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--hidden", type=int, nargs="+", default=[10, 30, 100, 300, 1024, 4096])
    parser.add_argument("--hidden-layers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tol-v", type=float, default=1e-10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(args.batch, 784, generator=g, dtype=torch.float64)
    x = torch.cat([pixels, -pixels], 1)
    labels = torch.randint(0, 10, (args.batch,), generator=g)
    y = 0.1 * torch.nn.functional.one_hot(labels, 10).to(torch.float64)

    print(
        f"layered solver, {args.threads} thread(s), batch {args.batch}, tol {args.tol_v:g} V, 1568-H{'-H' * (args.hidden_layers - 1)}-10\n"
    )
    print(
        "| H | conductances | ms / sample (free + nudged +-beta) | sweeps free / +beta / -beta | ms / sample / 1e6 conductances |"
    )
    print("|---:|---:|---:|---:|---:|")
    for hidden in args.hidden:
        net = network(hidden, args.hidden_layers, seed=hidden)
        ep_solves(net, x, y, args.tol_v)  # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            sweeps = ep_solves(net, x, y, args.tol_v)
            best = min(best, time.perf_counter() - t0)
        ms = 1e3 * best / args.batch
        n = net.n_conductances
        print(f"| {hidden} | {n:,} | {ms:.4f} | {sweeps[0]} / {sweeps[1]} / {sweeps[2]} | {ms / (n / 1e6):.3f} |", flush=True)


if __name__ == "__main__":
    main()
