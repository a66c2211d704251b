"""Capacity study (Ruiz Euler et al. 2021, experiment 1): fraction of the 2^N labellings found, N = 4..10.

Commands (from the repository root)::

    python benchmarks/dnpu_networks/capacity.py                        # the full study, local process pool
    python benchmarks/dnpu_networks/capacity.py --n-points 4 5 6 --models dnpu logistic2 logistic3   # minutes
    python benchmarks/dnpu_networks/capacity.py --executor ray --address auto   # on a Ray cluster
    # the annealed DNPU to N = 10 on one core in about an hour: only surrogate-separated classifiers go to the device
    python benchmarks/dnpu_networks/capacity.py --models dnpu_annealed --device-prefilter --workers 1 --out benchmarks/dnpu_networks/results/capacity_annealed_prefilter

Models (see :mod:`inmaterio.tasks.capacity_study`): one DNPU of the bundled
surrogate (``dnpu``); the same trained with output noise annealed over 15
attempts and validated on the virtual DNPU after each (``dnpu_annealed``,
found if the device accuracy exceeds 1 - 0.5/N); networks of 2 and 3 logistic
units (``logistic2``, ``logistic3``). Every classifier ends in the decision
node (batch norm with affine transform, logistic), BCE, full batch, Adam lr
0.03, betas (0.995, 0.999), 1500 epochs; the plain models retrain labellings
not yet separated with fresh initialisations (``--restarts``, 5 in all).
The virtual DNPU costs about 33 ms per point on one core, so measuring every
annealed classifier after every attempt takes hours at N = 9, 10;
``--device-prefilter`` measures only those the surrogate separates without
error (a lower bound on the found fraction: a classifier the surrogate gets
wrong but the device gets right is not counted).

One trial per (model, N), run by :func:`inmaterio.parallel.run_trials`
(identical numbers under every executor: each trial takes its seed from its
task). Writes ``results.json``, ``capacity.md`` (our fractions beside the
paper's VC-dimension bounds, wall time, executor) and ``capacity.png`` to
``--out`` (default ``benchmarks/dnpu_networks/results/capacity``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import inmaterio
from inmaterio.fileio import atomic_write_json, atomic_write_text
from inmaterio.parallel import executor_config_from_cli, run_trials
from inmaterio.plots import plot_capacity
from inmaterio.tasks.capacity_study import MODELS, capacity_trial

#: Lower bounds of the VC dimension reported by the paper (their chip and surrogate).
PAPER_VC = {"dnpu": ">= 6 (surrogate)", "dnpu_annealed": ">= 5 (on chip)", "logistic2": ">= 5", "logistic3": ">= 8"}
LABELS = {
    "dnpu": "DNPU (surrogate)",
    "dnpu_annealed": "DNPU, noise-annealed, on the virtual device",
    "logistic2": "2 logistic units",
    "logistic3": "3 logistic units",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-points", type=int, nargs="+", default=list(range(4, 11)), help="values of N (4..10)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--epochs", type=int, default=1500)
    parser.add_argument("--restarts", type=int, default=5, help="initialisations per labelling (plain models)")
    parser.add_argument("--attempts", type=int, default=15, help="noise-annealed attempts (dnpu_annealed)")
    parser.add_argument("--plateau-samples", type=int, default=1, help="device samples per point (dnpu_annealed)")
    parser.add_argument("--input-electrodes", type=int, nargs=2, default=[3, 4], metavar=("A", "B"),
                        help="DNPU models: the activation electrodes that take the two inputs")
    parser.add_argument("--device-prefilter", action="store_true",
                        help="dnpu_annealed: measure on the device only classifiers the surrogate separates (a lower bound)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--executor", default="local", choices=("serial", "local", "ray"))
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--address", default=None, help="Ray cluster address (with --executor ray)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/dnpu_networks/results/capacity"))
    args = parser.parse_args()
    executor = executor_config_from_cli(args.executor, args.workers, args.address)

    specs = [
        {
            "model": model, "n_points": n, "seed": args.seed, "epochs": args.epochs, "restarts": args.restarts,
            "attempts": args.attempts, "plateau_samples": args.plateau_samples, "device_threads": 1,
            "device_prefilter": args.device_prefilter, "input_electrodes": args.input_electrodes,
        }
        for model in args.models
        for n in sorted(args.n_points, reverse=True)  # the longest first: better load balance
    ]  # fmt: skip
    start = time.perf_counter()
    results = [r.value for r in run_trials(capacity_trial, specs, executor, progress=True, description="capacity")]
    wall = time.perf_counter() - start

    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "results.json", {"package_version": inmaterio.__version__, "args": vars(args) | {"out": str(args.out)}, "executor": executor.model_dump(), "wall_s": wall, "trials": results})
    ns = sorted(args.n_points)
    table = {m: {r["n_points"]: r for r in results if r["model"] == m} for m in args.models}
    plot_capacity(ns, {LABELS[m]: [table[m][n]["fraction"] for n in ns] for m in args.models}, args.out / "capacity.png")

    lines = [
        "# Capacity: fraction of the 2^N labellings found",
        "",
        f"Command: `python benchmarks/dnpu_networks/capacity.py {' '.join(_cli_args(args))}`  ",
        f"Wall time {wall / 60:.1f} min, executor `{executor.kind}` ({executor.n_workers()} workers), inmaterio {inmaterio.__version__}.",
        "",
        "| model | " + " | ".join(f"N = {n}" for n in ns) + " | our VC dimension >= | paper |",
        "| --- | " + " | ".join("---" for _ in ns) + " | --- | --- |",
    ]
    for m in args.models:
        full = [n for n in ns if table[m][n]["fraction"] == 1.0]
        vc = max(full) if full else f"< {ns[0]}"  # the largest N whose labellings were all found
        cells = " | ".join(f"{table[m][n]['fraction']:.3f}" for n in ns)
        lines.append(f"| {LABELS[m]} | {cells} | {vc} | {PAPER_VC[m]} |")
    if args.device_prefilter and "dnpu_annealed" in args.models:
        lines += ["", "Device pre-filter: after each attempt only the classifiers the surrogate separates without error "
                  "were measured on the virtual DNPU, so the annealed fractions are lower bounds."]
    lines += ["", "Seconds per trial:", "", "| model | " + " | ".join(f"N = {n}" for n in ns) + " |", "| --- | " + " | ".join("---" for _ in ns) + " |"]
    for m in args.models:
        lines.append(f"| {LABELS[m]} | " + " | ".join(f"{table[m][n]['seconds']:.1f}" for n in ns) + " |")
    lines += ["", "![capacity](capacity.png)", ""]
    atomic_write_text(args.out / "capacity.md", "\n".join(lines))
    print("\n".join(lines))


def _cli_args(args: argparse.Namespace) -> list[str]:
    """The options that differ from the defaults, to print the exact command."""
    defaults = {"n_points": list(range(4, 11)), "models": list(MODELS), "epochs": 1500, "restarts": 5, "attempts": 15,
                "plateau_samples": 1, "input_electrodes": [3, 4], "device_prefilter": False, "seed": 0, "executor": "local", "workers": None, "address": None,
                "out": Path("benchmarks/dnpu_networks/results/capacity")}  # fmt: skip
    out = []
    for key, default in defaults.items():
        value = getattr(args, key)
        if value != default:
            flag = "--" + key.replace("_", "-")
            if isinstance(value, bool):
                out.append(flag)
            else:
                out.append(f"{flag} {' '.join(map(str, value))}" if isinstance(value, list) else f"{flag} {value}")
    return out


if __name__ == "__main__":
    main()
