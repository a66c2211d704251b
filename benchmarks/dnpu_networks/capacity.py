"""Capacity study (Ruiz Euler et al. 2021, experiment 1): fraction of the 2^N labellings found, N = 4..10.

Commands (from the repository root)::

    # the surrogate models (the paper's recipe, our max-margin search, 2 and 3 logistic units): about 20 min
    python benchmarks/dnpu_networks/capacity.py --models dnpu dnpu_search logistic2 logistic3 --workers 2
    python benchmarks/dnpu_networks/capacity.py --n-points 4 5 6 --models dnpu logistic2 logistic3   # minutes
    python benchmarks/dnpu_networks/capacity.py --executor ray --address auto   # on a Ray cluster
    # on the virtual device: the paper's noise-annealed protocol, every classifier measured (hours on one core)
    python benchmarks/dnpu_networks/capacity.py --models dnpu_annealed --workers 1 --out benchmarks/dnpu_networks/results/capacity_annealed
    # the same with only surrogate-separated classifiers measured (a lower bound; about an hour)
    python benchmarks/dnpu_networks/capacity.py --models dnpu_annealed --device-prefilter --workers 1 --out benchmarks/dnpu_networks/results/capacity_annealed_prefilter
    # our max-margin search, measured on the virtual device
    python benchmarks/dnpu_networks/capacity.py --models dnpu_search_device --workers 2 --out benchmarks/dnpu_networks/results/capacity_search_device

Models (see :mod:`inmaterio.tasks.capacity_study`): one DNPU of the bundled
surrogate (``dnpu``); the same trained with output noise annealed over 15
attempts and validated on the virtual DNPU after each (``dnpu_annealed``,
found if the device accuracy exceeds 1 - 0.5/N); networks of 2 and 3 logistic
units (``logistic2``, ``logistic3``). Every classifier ends in the decision
node (batch norm with affine transform, logistic), BCE, full batch, Adam lr
0.03, betas (0.995, 0.999), 1500 epochs; the plain models retrain labellings
not yet separated with fresh initialisations (``--restarts``, 30 in all; with
5, the paper's recipe finds 30 of the 32 labellings of 5 points that the
DNPU separates).

Ours (:mod:`inmaterio.tasks.capacity_search`): ``dnpu_search`` screens
``--screen-samples`` random control vectors on the surrogate, refines the
best one per labelling by gradient ascent on a smooth margin and puts the
threshold in the middle of the gap; the table gives the fraction separated
and, on an extra row, the fraction separated with a margin of at least the
surrogate's test RMSE (the error a device adds). ``dnpu_search_device``
measures those classifiers on the virtual DNPU (found as for the annealed
model), the next-best screened vector for what is not found, ``--attempts``
times in all.

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
PAPER_VC = {
    "dnpu": ">= 6 (surrogate)", "dnpu_annealed": ">= 5 (on chip)", "dnpu_search": ">= 6 (surrogate)",
    "dnpu_search_device": ">= 5 (on chip)", "logistic2": ">= 5", "logistic3": ">= 8",
}  # fmt: skip
LABELS = {
    "dnpu": "DNPU (surrogate)",
    "dnpu_annealed": "DNPU, noise-annealed, on the virtual device",
    "dnpu_search": "DNPU, max-margin search (ours), surrogate",
    "dnpu_search_device": "DNPU, max-margin search (ours), on the virtual device",
    "logistic2": "2 logistic units",
    "logistic3": "3 logistic units",
}
#: The extra row of ``dnpu_search``: labellings found with a margin of at least the surrogate's test RMSE.
ROBUST_LABEL = "DNPU, max-margin search (ours), surrogate, margin >= test RMSE ({rmse:.1f} nA)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-points", type=int, nargs="+", default=list(range(4, 11)), help="values of N (4..10)")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--epochs", type=int, default=1500)
    parser.add_argument("--restarts", type=int, default=30,
                        help="initialisations per labelling (dnpu, logistic2/3), screened vectors tried (dnpu_search)")
    parser.add_argument("--attempts", type=int, default=15, help="attempts per labelling on the device (dnpu_annealed, dnpu_search_device)")
    parser.add_argument("--screen-samples", type=int, default=200_000, help="control vectors screened (dnpu_search*)")
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
            "screen_samples": args.screen_samples,
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
    rows = []  # (label, fraction per N, paper)
    for m in args.models:
        rows.append((LABELS[m], [table[m][n]["fraction"] for n in ns], PAPER_VC[m]))
        if m == "dnpu_search" and all("fraction_margin_ge_rmse" in table[m][n] for n in ns):
            rmse = table[m][ns[0]]["margin_threshold_na"]
            rows.append((ROBUST_LABEL.format(rmse=rmse), [table[m][n]["fraction_margin_ge_rmse"] for n in ns], ""))
    plot_capacity(ns, {label: fractions for label, fractions, _ in rows}, args.out / "capacity.png")

    lines = [
        "# Capacity: fraction of the 2^N labellings found",
        "",
        f"Command: `python benchmarks/dnpu_networks/capacity.py {' '.join(_cli_args(args))}`  ",
        f"Wall time {wall / 60:.1f} min, executor `{executor.kind}` ({executor.n_workers()} workers), inmaterio {inmaterio.__version__}.",
        "",
        "| model | " + " | ".join(f"N = {n}" for n in ns) + " | our VC dimension >= | paper |",
        "| --- | " + " | ".join("---" for _ in ns) + " | --- | --- |",
    ]
    for label, fractions, paper in rows:
        full = [n for n, f in zip(ns, fractions) if f == 1.0]
        vc = max(full) if full else f"< {ns[0]}"  # the largest N whose labellings were all found
        lines.append(f"| {label} | " + " | ".join(f"{f:.3f}" for f in fractions) + f" | {vc} | {paper} |")
    if "dnpu_search" in args.models:
        medians = []
        for n in ns:
            margins = [m for m in table["dnpu_search"][n]["surrogate_margin_na"] if m is not None]
            medians.append(f"{sorted(margins)[len(margins) // 2]:.1f}" if margins else "-")
        lines += ["", "Median margin of the searched classifiers (nA, non-constant labellings, on the surrogate): "
                  + ", ".join(f"N = {n}: {m}" for n, m in zip(ns, medians)) + "."]
    if args.device_prefilter and "dnpu_annealed" in args.models:
        lines += ["", "Device pre-filter: after each attempt only the classifiers the surrogate separates without error "
                  "were measured on the virtual DNPU, so the annealed fractions are lower bounds."]
    lines += ["", "Seconds per trial (one model at one N, all 2^N labellings):", "", "| model | " + " | ".join(f"N = {n}" for n in ns) + " |", "| --- | " + " | ".join("---" for _ in ns) + " |"]
    for m in args.models:
        lines.append(f"| {LABELS[m]} | " + " | ".join(f"{table[m][n]['seconds']:.1f}" for n in ns) + " |")
    lines += ["", "![capacity](capacity.png)", ""]
    atomic_write_text(args.out / "capacity.md", "\n".join(lines))
    print("\n".join(lines))


def _cli_args(args: argparse.Namespace) -> list[str]:
    """The options that differ from the defaults, to print the exact command."""
    defaults = {"n_points": list(range(4, 11)), "models": list(MODELS), "epochs": 1500, "restarts": 30, "attempts": 15,
                "screen_samples": 200_000, "plateau_samples": 1, "input_electrodes": [3, 4], "device_prefilter": False,
                "seed": 0, "executor": "local", "workers": None, "address": None,
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
