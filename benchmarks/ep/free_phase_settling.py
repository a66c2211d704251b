"""Does the free phase of an ``ep_ebm`` network settle? Step residuals along the free phase, before and after training.

Command (from the repository root; MNIST in ``$INMATERIO_MNIST_DIR``)::

    python benchmarks/ep/free_phase_settling.py runs/ep_ebm_convnet/weights_bptt_seed_0.pt --config examples/ep_ebm/convnet.yaml

``WEIGHTS``: a trained network's ``weights_<estimator>_seed_<seed>.pt`` from an ``ep_ebm`` run folder, or a run's
``checkpoint.pt`` (or a copy) whose training in progress (``current``) holds the weights to examine. On the first ``--images`` validation images, for the seed's initial weights and for those
weights: the largest and the mean step ``|F(s_t) - s_t|`` over units at chosen steps ``t`` up to ``2 T`` (``F``
one free step), the error and cost there, and the fraction of images whose free phase has not settled at ``T``
(:func:`inmaterio.ebm.evaluate`, threshold 1e-3, as the study counts them). A fixed point gives a residual at float32 rounding; a cycle of
the synchronous dynamics keeps units flipping by up to 1 at every step, at any ``t``. Then, on ``--batches`` training
batches of the config's size, how much BPTT's gradient changes when the free phase runs one or two steps longer:
``|g(T+1) - g(T)| / |g(T)|`` and ``|g(T+2) - g(T)| / |g(T)|`` (a period-2 cycle makes the gradient depend on the
parity of ``T``). One torch thread.
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import torch

from inmaterio.ebm import bptt_step, evaluate
from inmaterio.studies.ep_ebm import WEIGHTS_FORMAT, _weights_seed, build_network, load_trained_network, prepare_ep_ebm
from inmaterio.tasks.registry import load_run_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path, help="a weights_*.pt file, or a checkpoint.pt with a training in progress")
    parser.add_argument("--config", type=Path, required=True, help="the run's config (its network and T)")
    parser.add_argument("--images", type=int, default=1000, help="validation images (default 1000)")
    parser.add_argument("--batches", type=int, default=3, help="training batches for BPTT's gradients (default 3)")
    args = parser.parse_args(argv)
    if args.images < 1 or args.batches < 0:
        parser.error(f"--images must be >= 1 and --batches >= 0, got {args.images} and {args.batches}")
    config = load_run_config(args.config)
    if config.task.type != "ep_ebm":
        parser.error(f"--config {args.config} is a {config.task.type!r} study, not ep_ebm")
    try:
        payload = torch.load(args.weights, map_location="cpu", weights_only=True)
        if isinstance(payload, dict) and payload.get("format") == WEIGHTS_FORMAT:
            trained = load_trained_network(args.weights)
            estimator, seed, what = payload["estimator"], int(payload["seed"]), "after the last epoch"
        else:
            current = payload["state"]["current"]
            estimator, seed = current["key"].split("/seed_")
            seed, what = int(seed), f"after epoch {current['epoch']}"
            trained = build_network(config.task.network, vector_field=estimator == "symmetric_kpvf", seed=0)
            trained.load_state_dict(current["model"])
    except (OSError, KeyError, TypeError, ValueError, RuntimeError, pickle.UnpicklingError) as err:
        first_line = (str(err).splitlines() or [""])[0]
        parser.error(
            f"{args.weights} holds neither ep_ebm weights nor a training in progress ({type(err).__name__}: {first_line})"
        )
    torch.set_num_threads(1)
    task = config.task
    splits = prepare_ep_ebm(config).extra["splits"]
    x, y = splits.x_val[: args.images], splits.y_val[: args.images]
    marks = sorted({1, 10, 50, task.T // 2, task.T - 1, task.T, task.T + 1, 2 * task.T})
    trained_label = f"{estimator} seed {seed} {what}"
    print(f"{len(x)} validation images, T = {task.T}; weights of {trained_label}")
    initial = build_network(task.network, vector_field=estimator == "symmetric_kpvf", seed=_weights_seed(seed))
    for label, model in (("initial weights", initial), (trained_label, trained)):
        unsettled = evaluate(model, x, y, T=task.T)["unsettled"]
        print(f"\n{label}: {100 * unsettled:.2f} % of the images not settled at T (a unit moving > 1e-3)")
        print("| t | max step | mean step | error % | cost |\n| ---: | ---: | ---: | ---: | ---: |")
        with torch.no_grad():
            drive = model.input_drive(x)
            states = model.step(drive, model.initial_states(len(x)))  # after t = 1 step
            for t in range(1, max(marks) + 1):
                after = model.step(drive, states)
                if t in marks:
                    moves = [(a - s).abs() for a, s in zip(after, states)]
                    largest = max(float(m.max()) for m in moves)
                    mean = sum(float(m.sum()) for m in moves) / sum(m.numel() for m in moves)
                    error = 100 * float((model.predict(states) != y).float().mean())
                    print(f"| {t} | {largest:.2e} | {mean:.2e} | {error:.2f} | "
                          f"{float(model.cost(states, y).mean()):.4f} |")  # fmt: skip
                states = after
        if args.batches:
            print(f"\nBPTT's gradient on {args.batches} training batches of {task.batch_size}, T + 1 and T + 2 steps against T:")
            for b in range(args.batches):
                rows = slice(b * task.batch_size, (b + 1) * task.batch_size)
                g = [_bptt_gradient(model, splits.x_train[rows], splits.y_train[rows], task.T + k) for k in range(3)]
                print(f"  batch {b}: |g(T+1) - g(T)| / |g(T)| = {float((g[1] - g[0]).norm() / g[0].norm()):.3f}, "
                      f"|g(T+2) - g(T)| / |g(T)| = {float((g[2] - g[0]).norm() / g[0].norm()):.3f}")  # fmt: skip
    return 0


def _bptt_gradient(model, x: torch.Tensor, y: torch.Tensor, T: int) -> torch.Tensor:
    """BPTT's gradient through ``T`` free steps, all parameters flattened into one vector."""
    for p in model.parameters():
        p.grad = None
    bptt_step(model, x, y, T=T)
    return torch.cat([p.grad.flatten() for p in model.parameters()])


if __name__ == "__main__":
    sys.exit(main())
