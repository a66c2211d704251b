"""Which two electrodes should take the ring data? A sweep over all pairs, judged on training data only.

Commands (from the repository root)::

    python benchmarks/dnpu_networks/ring_electrodes.py --workers 1          # the results in results/ring_electrodes
    python benchmarks/dnpu_networks/ring_electrodes.py --trials 8 --pairs 3,4 1,6   # a quick look

The paper's chip and our virtual DNPU differ in which electrodes couple
strongly to the output, so the input electrodes are a design choice of ours.
Two measurements, neither of which looks at a test point:

1. Electrode sensitivity of the surrogate
   (:func:`inmaterio.surrogate.electrode_sensitivity`): for 2000 random
   operating points, one electrode is swept over its range (9 steps) with the
   others held; the mean standard deviation of the output over the sweep
   (nA), per electrode.
   Data on a weak electrode gives hidden nodes a small swing, which the
   device noise (about 3 nA per sample) then swamps.
2. For every pair of activation electrodes and both architectures,
   ``--trials`` ring trials (:func:`inmaterio.studies.ring_trials.ring_trials`,
   the recipe of ``rings.py``: 400 epochs, lr 0.0065, noise variance = test
   MSE) on the training set of ``rings.py``; reported: the best and the median
   training accuracy, and the best training accuracy with output noise of
   ``--ranking-noise`` x the surrogate's test RMSE on every node (mean of 10
   draws; the ranking ``rings.py`` uses), which is the column the choice is
   made on.

Writes ``electrodes.md`` and ``results.json`` to ``--out`` (default
``benchmarks/dnpu_networks/results/ring_electrodes``).
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np

import inmaterio
from inmaterio.data.rings import make_rings
from inmaterio.fileio import atomic_write_json, atomic_write_text
from inmaterio.parallel import executor_config_from_cli, run_trials
from inmaterio.surrogate import electrode_sensitivity, load_default_surrogate
from inmaterio.studies.ring_trials import ARCHITECTURES, ring_trials


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=32, help="trials per (architecture, pair)")
    parser.add_argument("--pairs", nargs="+", default=None, help="pairs as 'a,b' (default: all pairs of activation electrodes)")
    parser.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES), choices=ARCHITECTURES)
    parser.add_argument("--ranking-noise", type=float, default=0.5, help="output noise of the ranking, x the surrogate's test RMSE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--executor", default="local", choices=("serial", "local", "ray"))
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--address", default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/dnpu_networks/results/ring_electrodes"))
    args = parser.parse_args()
    executor = executor_config_from_cli(args.executor, args.workers, args.address)

    surrogate = load_default_surrogate()
    n_activation = len(surrogate.info.electrode_names)
    if args.pairs is None:
        pairs = list(itertools.combinations(range(n_activation), 2))
    else:
        try:
            pairs = [tuple(int(e) for e in p.split(",")) for p in args.pairs]
        except ValueError:
            parser.error(f"--pairs takes pairs like 3,4; got {args.pairs}")
        bad = [p for p in pairs if len(p) != 2 or p[0] == p[1] or not all(0 <= e < n_activation for e in p)]
        if bad:
            parser.error(f"--pairs: each pair needs two different electrodes in 0..{n_activation - 1}; got {bad}")
    sensitivity = electrode_sensitivity(surrogate, surrogate.info.voltage_ranges_v)

    x_train, y_train = make_rings(200, gap=0.1, seed=args.seed)
    x_test, y_test = make_rings(100, gap=0.1, seed=args.seed + 1)  # ring_trials needs a test set; not reported here
    data = {"x_train": x_train.tolist(), "y_train": y_train.tolist(), "x_test": x_test.tolist(), "y_test": y_test.tolist()}
    specs = [
        {"architecture": arch, "first_seed": args.seed * 1_000_003, "count": args.trials, "input_electrodes": list(pair),
         "bfloat16": True, "noisy_draws": 10, "noisy_std_factor": args.ranking_noise, **data}
        for arch in args.architectures for pair in pairs
    ]  # fmt: skip
    start = time.perf_counter()
    results = [r.value for r in run_trials(ring_trials, specs, executor, progress=True, description="electrode pairs")]
    wall = time.perf_counter() - start
    rows = []
    for spec, r in zip(specs, results):
        train, noisy = np.array(r["train_accuracy"]), np.array(r["noisy_train_accuracy"])
        rows.append({"architecture": spec["architecture"], "pair": spec["input_electrodes"], "best_train": float(train.max()),
                     "median_train": float(np.median(train)), "best_noisy_train": float(noisy.max()), "seconds": r["seconds"]})  # fmt: skip

    args.out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python benchmarks/dnpu_networks/ring_electrodes.py", *sys.argv[1:]])
    atomic_write_json(args.out / "results.json", {"package_version": inmaterio.__version__, "command": command, "wall_s": wall,
                                                  "executor": executor.model_dump(), "sensitivity_na": sensitivity, "rows": rows})  # fmt: skip
    names = surrogate.info.electrode_names
    lines = [
        "# Rings: which electrodes take the data",
        "",
        f"Command: `{command}`  ",
        f"Wall time {wall / 60:.1f} min, executor `{executor.kind}` ({executor.n_workers()} workers), inmaterio {inmaterio.__version__}. "
        "Training data only (200 points per class, seed 0); no test point is used.",
        "",
        "Sensitivity of the surrogate's output to each electrode (mean std over a sweep of its range, 2000 random operating points):",
        "",
        "| " + " | ".join(names) + " |",
        "| " + " | ".join("---" for _ in names) + " |",
        "| " + " | ".join(f"{s:.1f} nA" for s in sensitivity) + " |",
        "",
        f"{args.trials} trials per cell; best noisy training accuracy = output noise of {args.ranking_noise} x test RMSE on every node.",
        "",
        "| architecture | inputs | best train acc. | median train acc. | best noisy train acc. |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in sorted(rows, key=lambda r: (r["architecture"], -r["best_noisy_train"])):
        pair = ", ".join(names[e] for e in row["pair"])
        lines.append(f"| {row['architecture']} | {pair} | {100 * row['best_train']:.2f}% | {100 * row['median_train']:.2f}% "
                     f"| {100 * row['best_noisy_train']:.2f}% |")  # fmt: skip
    lines.append("")
    atomic_write_text(args.out / "electrodes.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
