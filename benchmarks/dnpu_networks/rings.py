"""Ring study (Ruiz Euler et al. 2021, experiment 2): one DNPU vs the 2-2-1 network, many trials each.

Commands (from the repository root)::

    python benchmarks/dnpu_networks/rings.py                               # 1000 trials per architecture
    python benchmarks/dnpu_networks/rings.py --trials 100 --validate-repeats 5   # a quick look
    python benchmarks/dnpu_networks/rings.py --executor ray --address auto

Data: :func:`inmaterio.data.rings.make_rings`, gap ``--gap`` (0.1), ``--n-train``
and ``--n-test`` points per class; the same data for every trial. Stage one:
negative Fisher criterion, full batch, ``--epochs`` (400), Adam lr 0.0065,
Gaussian noise on every node's output with variance ``--noise-variance-factor``
(1) times the surrogate's test MSE. Stage two: a logistic neuron on the
standardised output (fitted on the training set). Training uses bfloat16
matrix products (``--float32`` to switch off; every reported number is
computed in float32). Trials run in groups of
``--group`` as one vectorised model (:mod:`inmaterio.tasks.rings_study`),
the groups through :func:`inmaterio.parallel.run_trials`.

The best trial of each architecture (highest training accuracy) is measured
on the virtual DNPU, ``--validate-repeats`` times over the test set (the
2-2-1 node after node on one device: time multiplexing), with the logistic
threshold of the surrogate. Writes ``results.json``, ``rings.md`` (our
numbers beside the paper's), ``histograms.png`` to ``--out``
(default ``benchmarks/dnpu_networks/results/rings``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

import inmaterio
from inmaterio.data.rings import make_rings
from inmaterio.fileio import atomic_write_json, atomic_write_text
from inmaterio.parallel import executor_config_from_cli, run_trials
from inmaterio.plots import save_figure
from inmaterio.tasks.rings_study import ARCHITECTURES, ring_trials

#: Best of 1000 off-chip, and validated on their chip over 50 measurements (test accuracy).
PAPER = {"single": (84.95, 76.75), "2-2-1": (94.62, 93.98)}


def validate_best(architecture: str, state: dict, x_train, y_train, x_test, y_test, repeats: int, plateau: int) -> dict:
    """Test accuracy of one trained network on the surrogate and ``repeats`` times on the virtual DNPU."""
    from inmaterio.devices.hopping import HoppingDevice
    from inmaterio.devices.registry import device_config_from_description
    from inmaterio.processors import DeviceProcessor, SurrogateProcessor
    from inmaterio.surrogate import load_default_surrogate
    from inmaterio.tasks.rings import build_ring_model
    from inmaterio.tasks.validation import validate_model
    from inmaterio.training.metrics import fit_logistic_threshold

    surrogate = SurrogateProcessor(load_default_surrogate())
    net = build_ring_model(architecture, surrogate, (3, 4), seed=0)
    net.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
    net.eval()
    with torch.no_grad():
        threshold = fit_logistic_threshold(net(x_train), y_train)
        surrogate_test = float((threshold.predict(net(x_test)) == y_test).float().mean())
    device = DeviceProcessor(
        HoppingDevice(device_config_from_description(surrogate.info.provenance["device"])), plateau_samples=plateau
    )
    v = validate_model(
        net, device, x_test, y_test[None], threshold, outputs=lambda o: o[None], repeats=repeats,
        multiplex=architecture != "single",
    )  # fmt: skip
    per_repeat = v.accuracy_surrogate_threshold[:, 0].numpy()
    return {
        "surrogate_test_accuracy": surrogate_test,
        "device_test_accuracy_mean": float(per_repeat.mean()),
        "device_test_accuracy_std": float(per_repeat.std()),
        "device_test_accuracy_refitted_mean": float(v.accuracy[:, 0].mean()),
        "rms_difference_na": float(v.rms_difference_na[0]),
        "repeats": repeats,
        "seconds": v.seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES), choices=ARCHITECTURES)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--group", type=int, default=25, help="trials vectorised in one task")
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--learning-rate", type=float, default=0.0065)
    parser.add_argument("--noise-variance-factor", type=float, default=1.0)
    parser.add_argument("--gap", type=float, default=0.1)
    parser.add_argument("--n-train", type=int, default=200, help="training points per class")
    parser.add_argument("--n-test", type=int, default=100, help="test points per class")
    parser.add_argument("--validate-repeats", type=int, default=50, help="0: no device validation")
    parser.add_argument("--plateau-samples", type=int, default=1)
    parser.add_argument("--float32", action="store_true", help="train in float32 (default: bfloat16 products, 3-4x faster)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--executor", default="local", choices=("serial", "local", "ray"))
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--address", default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/dnpu_networks/results/rings"))
    args = parser.parse_args()
    executor = executor_config_from_cli(args.executor, args.workers, args.address)

    x_train, y_train = make_rings(args.n_train, gap=args.gap, seed=args.seed)
    x_test, y_test = make_rings(args.n_test, gap=args.gap, seed=args.seed + 1)
    data = {"x_train": x_train.tolist(), "y_train": y_train.tolist(), "x_test": x_test.tolist(), "y_test": y_test.tolist()}
    summary, timing = {}, {}
    for arch in args.architectures:
        specs = [
            {"architecture": arch, "first_seed": args.seed * 1_000_003 + start, "count": min(args.group, args.trials - start),
             "epochs": args.epochs, "learning_rate": args.learning_rate, "noise_variance_factor": args.noise_variance_factor,
             "bfloat16": not args.float32, **data}
            for start in range(0, args.trials, args.group)
        ]  # fmt: skip
        start = time.perf_counter()
        groups = [r.value for r in run_trials(ring_trials, specs, executor, progress=True, description=f"rings {arch}")]
        timing[arch] = time.perf_counter() - start
        fisher = np.concatenate([g["fisher"] for g in groups])
        train = np.concatenate([g["train_accuracy"] for g in groups])
        test = np.concatenate([g["test_accuracy"] for g in groups])
        best_group = max(groups, key=lambda g: g["train_accuracy"][g["best"]["index"]])
        best = best_group["first_seed"] - specs[0]["first_seed"] + best_group["best"]["index"]
        summary[arch] = {
            "trials": len(test), "fisher": fisher.tolist(), "train_accuracy": train.tolist(), "test_accuracy": test.tolist(),
            "best_trial": int(best), "best_train_accuracy": float(train[best]), "best_test_accuracy": float(test[best]),
            "median_test_accuracy": float(np.median(test)), "training_seconds": timing[arch],
        }  # fmt: skip
        if args.validate_repeats > 0:
            summary[arch]["validation"] = validate_best(
                arch, best_group["best"]["state"], x_train, y_train, x_test, y_test, args.validate_repeats, args.plateau_samples
            )

    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "results.json", {"package_version": inmaterio.__version__, "args": vars(args) | {"out": str(args.out)},
                                                  "executor": executor.model_dump(), "summary": summary})  # fmt: skip
    fig = Figure(figsize=(10, 3.6), layout="constrained")
    ax_f, ax_a = fig.subplots(1, 2)
    for arch in args.architectures:
        ax_f.hist(summary[arch]["fisher"], bins=40, alpha=0.6, label=arch)
        ax_a.hist(100 * np.array(summary[arch]["test_accuracy"]), bins=40, alpha=0.6, label=arch)
    ax_f.set_xlabel("Fisher criterion (training set)")
    ax_a.set_xlabel("test accuracy / %")
    for ax in (ax_f, ax_a):
        ax.set_ylabel("trials")
        ax.legend()
    save_figure(fig, args.out / "histograms.png")

    lines = [
        "# Rings: one DNPU vs the 2-2-1 network",
        "",
        f"Command: `python benchmarks/dnpu_networks/rings.py --trials {args.trials} --validate-repeats {args.validate_repeats}"
        f"{'' if args.architectures == list(ARCHITECTURES) else ' --architectures ' + ' '.join(args.architectures)}`  ",
        f"Executor `{executor.kind}` ({executor.n_workers()} workers); data: gap {args.gap}, {args.n_train} + {args.n_test} points "
        f"per class; {args.epochs} epochs; noise variance {args.noise_variance_factor} x test MSE; inmaterio {inmaterio.__version__}.",
        "",
        "| architecture | trials | training wall / s | median test acc. | best trial: train / test acc. (surrogate) "
        "| best trial on the virtual DNPU (mean ± std over repeats) | paper: best off-chip | paper: on chip |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arch in args.architectures:
        s = summary[arch]
        v = s.get("validation")
        device = f"{100 * v['device_test_accuracy_mean']:.2f}% ± {100 * v['device_test_accuracy_std']:.2f} ({v['repeats']} x)" if v else "-"
        lines.append(
            f"| {arch} | {s['trials']} | {s['training_seconds']:.0f} | {100 * s['median_test_accuracy']:.2f}% "
            f"| {100 * s['best_train_accuracy']:.2f}% / {100 * s['best_test_accuracy']:.2f}% | {device} "
            f"| {PAPER[arch][0]}% | {PAPER[arch][1]}% |"
        )
    lines += ["", "![histograms](histograms.png)", ""]
    atomic_write_text(args.out / "rings.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
