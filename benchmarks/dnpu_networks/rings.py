"""Ring study (Ruiz Euler et al. 2021, experiment 2): one DNPU vs the 2-2-1 network, many trials each.

Commands (from the repository root)::

    # the results in results/rings (two cores: 2 workers, then 2 numba threads for the virtual DNPU)
    python benchmarks/dnpu_networks/rings.py --trials 1000 --executor local --workers 2 --device-threads 2
    python benchmarks/dnpu_networks/rings.py --trials 100 --validate-repeats 1   # a quick look
    python benchmarks/dnpu_networks/rings.py --executor ray --address auto
    # the first protocol (best noise-free training accuracy, one device sample per point)
    python benchmarks/dnpu_networks/rings.py --ranking train --candidates 1 --plateau-samples 1 --validate-repeats 10
    python benchmarks/dnpu_networks/rings.py --report-only    # rewrite rings.md and histograms.png from results.json
    # the chosen networks of a run measured again with 16 samples per point, no training
    # (results/rings_221_plateau16; the same with --architectures single: results/rings_single_plateau16)
    python benchmarks/dnpu_networks/rings.py --reuse-training benchmarks/dnpu_networks/results/rings \
        --architectures 2-2-1 --candidates 1 --validate-repeats 1 --plateau-samples 16 --device-threads 2 \
        --out benchmarks/dnpu_networks/results/rings_221_plateau16

Data: :func:`inmaterio.data.rings.make_rings`, gap ``--gap`` (0.1), ``--n-train``
and ``--n-test`` points per class; the same data for every trial, on the
input electrodes ``--input-electrodes`` (per architecture; the defaults come
from ``ring_electrodes.py``, which judges every pair on training data only).
Stage one:
negative Fisher criterion, full batch, ``--epochs`` (400), Adam lr 0.0065,
Gaussian noise on every node's output with variance ``--noise-variance-factor``
(1) times the surrogate's test MSE. Stage two: a logistic neuron on the
standardised output (fitted on the training set). Training uses bfloat16
matrix products (``--float32`` to switch off; every reported number is
computed in float32). Trials run in groups of
``--group`` as one vectorised model (:mod:`inmaterio.studies.ring_trials`),
the groups through :func:`inmaterio.parallel.run_trials`.

Device protocol (the same for both architectures; no test point is used for
training, calibration or choice):

1. Ranking (``--ranking``): ``train`` ranks the trials by their noise-free
   training accuracy on the surrogate; ``noisy-train`` by their training
   accuracy with Gaussian output noise on every node (standard deviation
   ``--ranking-noise`` times the surrogate's test RMSE, default
   ``1/sqrt(--plateau-samples)``: the device's measurement noise after
   averaging; mean over ``--ranking-draws`` draws, threshold fitted without
   noise). The noise-free accuracy ignores that the 2-2-1 meets the device
   noise on five nodes and the single DNPU on one.
2. Calibration (``--readout``): ``surrogate`` keeps the logistic read-out
   fitted on the surrogate's training output; ``device`` measures the
   training set once on the device, takes the 2-2-1's batch-norm statistics
   from that measurement (``--no-calibrate-bn`` keeps those of training) and
   re-fits the logistic read-out on the measured output
   (:func:`inmaterio.studies.ring_trials.calibrate_on_device`), as a read-out
   trained on the chip.
3. Choice (``--candidates K``): the ``K`` best-ranked trials are each
   calibrated and measured once on a validation set (``--n-val`` points per
   class, seed ``--seed + 2``); the one with the best device validation
   accuracy is chosen. ``K = 1``: the best-ranked trial, no validation set.
4. Test: the chosen network is measured ``--validate-repeats`` times over the
   test set on the virtual DNPU (the 2-2-1 node after node on one device: time
   multiplexing), ``--plateau-samples`` device samples averaged per operating
   point, numba threads ``--device-threads``.

The old protocol (best training accuracy, surrogate read-out, one sample per
point) is ``--ranking train --readout surrogate --candidates 1 --plateau-samples 1``.

The test set has 500 points per class by default (100 until the run kept in
``results/rings_test200``): the two architectures differ by a few points on
the device, and 200 test points have a sampling error of about 1.8 points.
The report gives the 2-2-1's margin over the single DNPU on the same test
points with a 95% paired-bootstrap interval
(:func:`inmaterio.training.metrics.paired_accuracy_difference`).
``results.json`` keeps the candidates' states, so ``--reuse-training DIR``
can measure them again under other device options without training.

Writes ``results.json``, ``rings.md`` (our numbers beside the paper's, the
candidates' device validation accuracies), ``histograms.png`` to ``--out``
(default ``benchmarks/dnpu_networks/results/rings``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

import inmaterio
from inmaterio.data.rings import make_rings
from inmaterio.fileio import atomic_write_json, atomic_write_text
from inmaterio.parallel import ExecutorConfig, executor_config_from_cli, run_trials
from inmaterio.plots import save_figure
from inmaterio.studies.ring_trials import ARCHITECTURES, ring_trials

#: Best of 1000 off-chip, and validated on their chip over 50 measurements (test accuracy).
PAPER = {"single": (84.95, 76.75), "2-2-1": (94.62, 93.98)}

#: Input electrodes per architecture: the pair with the best noisy training accuracy in
#: ``ring_electrodes.py`` (results/ring_electrodes/electrodes.md; training data only).
INPUT_ELECTRODES = {"single": (2, 5), "2-2-1": (1, 6)}


def _electrode_pair(text: str) -> tuple[str, tuple[int, int]]:
    """``"single=2,5"`` -> ``("single", (2, 5))`` (argparse type)."""
    arch, _, pair = text.partition("=")
    try:
        a, b = (int(e) for e in pair.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected ARCH=A,B such as 2-2-1=1,6, got '{text}'") from None
    if arch not in ARCHITECTURES or a == b or not (0 <= a < 7 and 0 <= b < 7):
        raise argparse.ArgumentTypeError(
            f"'{text}': ARCH is one of {ARCHITECTURES}, A and B two different activation electrodes in 0..6"
        )
    return arch, (a, b)


class _MergePairs(argparse.Action):
    """``--input-electrodes single=2,5`` overrides that architecture only; the others keep their default."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, dict(INPUT_ELECTRODES) | dict(values))


def load_trial(architecture: str, state: dict, surrogate, input_electrodes):
    """A trained network (eval mode) on ``surrogate`` from the state a trial returned."""
    from inmaterio.tasks.rings import build_ring_model

    net = build_ring_model(architecture, surrogate, tuple(input_electrodes), seed=0)
    net.load_state_dict({k: torch.tensor(v) for k, v in state.items()})
    net.eval()
    return net


def make_device(surrogate, plateau: int, threads: int | None):
    """The virtual DNPU the surrogate was made from, as a processor averaging ``plateau`` samples per point."""
    from inmaterio.devices.hopping import HoppingDevice
    from inmaterio.devices.registry import device_config_from_description
    from inmaterio.processors import DeviceProcessor

    config = device_config_from_description(surrogate.info.provenance["device"])
    return DeviceProcessor(HoppingDevice(config, n_threads=threads), plateau_samples=plateau)


def prepare_on_device(architecture: str, state: dict, surrogate, device, x_train, y_train, readout: str, calibrate_bn: bool,
                      input_electrodes):
    """Network, read-out threshold and notes for a trial, calibrated on device measurements of the TRAINING set.

    ``readout="surrogate"``: the logistic threshold fitted on the surrogate's
    training output (and the batch-norm statistics of training).
    ``readout="device"``: the training set is measured once on the device;
    with ``calibrate_bn`` the 2-2-1's batch norms take their statistics from
    that measurement (:func:`inmaterio.studies.ring_trials.calibrate_on_device`),
    and the threshold is re-fitted on the measured output.
    """
    from inmaterio.studies.ring_trials import calibrate_on_device
    from inmaterio.training.metrics import fit_logistic_threshold

    net = load_trial(architecture, state, surrogate, input_electrodes)
    with torch.no_grad():
        threshold = fit_logistic_threshold(net(x_train), y_train)
    seconds = 0.0
    if readout == "device":
        start = time.perf_counter()
        threshold, _ = calibrate_on_device(net, device, x_train, y_train, batch_norm=calibrate_bn, multiplex=architecture != "single")
        seconds = time.perf_counter() - start
    return net, threshold, seconds


def device_accuracy(net, device, threshold, x, y, repeats: int, architecture: str):
    """``(repeats,)`` accuracies of ``net`` on ``device`` over ``x`` with ``threshold``, and the :class:`Validation`."""
    from inmaterio.tasks.validation import validate_model

    v = validate_model(
        net, device, x, y[None], threshold, outputs=lambda o: o[None], repeats=repeats, multiplex=architecture != "single"
    )  # fmt: skip
    return v.accuracy_surrogate_threshold[:, 0].numpy(), v


def validate_on_device(architecture: str, candidates: list[dict], data: dict, args) -> dict:
    """Choose among ``candidates`` on the device (validation set), then measure the choice on the test set.

    Every candidate is calibrated (``--readout``) on the training set and
    measured once on the validation set; the one with the highest device
    validation accuracy (ties: the better-ranked) is measured ``--validate-repeats``
    times on the test set. With one candidate there is no validation step.
    """
    from inmaterio.processors import SurrogateProcessor
    from inmaterio.surrogate import load_default_surrogate

    x_train, y_train, x_val, y_val, x_test, y_test = (data[k] for k in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"))
    surrogate = SurrogateProcessor(load_default_surrogate())
    device = make_device(surrogate, args.plateau_samples, args.device_threads)
    calibrate_bn = args.calibrate_bn and architecture != "single"
    start = time.perf_counter()
    rows, best = [], None
    for rank, c in enumerate(candidates):
        net, threshold, _ = prepare_on_device(
            architecture, c["state"], surrogate, device, x_train, y_train, args.readout, calibrate_bn, args.input_electrodes[architecture]
        )
        row = {"rank": rank, "trial": c["trial"], "score": c["score"], "train_accuracy": c["train_accuracy"], "test_accuracy": c["test_accuracy"]}
        if len(candidates) > 1:
            acc, _ = device_accuracy(net, device, threshold, x_val, y_val, 1, architecture)
            row["device_validation_accuracy"] = float(acc[0])
            print(f"  {architecture} candidate {rank} (trial {c['trial']}): device validation {acc[0]:.3f}", flush=True)
        rows.append(row)
        if best is None or row.get("device_validation_accuracy", 0.0) > best[0].get("device_validation_accuracy", 0.0):
            best = (row, net, threshold)
    selection_seconds = time.perf_counter() - start
    row, net, threshold = best
    with torch.no_grad():
        fresh = load_trial(architecture, candidates[row["rank"]]["state"], surrogate, args.input_electrodes[architecture])
        from inmaterio.training.metrics import fit_logistic_threshold

        sur_threshold = fit_logistic_threshold(fresh(x_train), y_train)
        surrogate_correct = sur_threshold.predict(fresh(x_test)) == y_test
    start = time.perf_counter()
    per_repeat, v = device_accuracy(net, device, threshold, x_test, y_test, args.validate_repeats, architecture)
    test_seconds = time.perf_counter() - start
    device_correct = threshold.predict(v.output_na[:, 0]) == y_test  # (repeats, test points)
    return {
        "chosen": row,
        "candidates": rows,
        "surrogate_test_accuracy": float(surrogate_correct.float().mean()),
        # per test point, for the paired margin between architectures (same test points)
        "surrogate_test_correct": surrogate_correct.int().tolist(),
        "device_test_correct": device_correct.int().tolist(),
        "device_test_accuracy_mean": float(per_repeat.mean()),
        "device_test_accuracy_std": float(per_repeat.std()),
        "device_test_accuracy_per_repeat": per_repeat.tolist(),
        # a threshold fitted on the device's TEST output itself: an upper bound, not a result
        "device_test_accuracy_threshold_fitted_on_test_mean": float(v.accuracy[:, 0].mean()),
        "rms_difference_na": float(v.rms_difference_na[0]),
        "repeats": args.validate_repeats,
        "readout": args.readout,
        "calibrate_bn": calibrate_bn,
        "plateau_samples": args.plateau_samples,
        "selection_seconds": selection_seconds,
        "test_seconds": test_seconds,
        "seconds": selection_seconds + test_seconds,
    }


#: Options of the device protocol: the only ones ``--reuse-training`` may change (besides where and how to run).
DEVICE_OPTIONS = ("architectures", "n_val", "validate_repeats", "plateau_samples", "device_threads", "candidates", "readout",
                  "calibrate_bn", "executor", "workers", "address", "out", "reuse_training", "report_only")


def reuse_training(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[dict, argparse.Namespace]:
    """The stored run of ``--reuse-training DIR`` and the arguments to measure its candidates again.

    Every training and data option is taken from the stored run; an option
    given on the command line that would change them is an error, as are
    candidates without states (runs written before states were stored), more
    candidates than were kept, an architecture the run did not train, and
    ``--out`` equal to ``DIR`` (the stored run is never overwritten).
    """
    source = args.reuse_training / "results.json"
    if not source.is_file():
        parser.error(f"--reuse-training: {source} does not exist")
    if args.out.resolve() == args.reuse_training.resolve():
        parser.error(f"--reuse-training: --out must differ from {args.reuse_training}, whose results.json is kept as it is")
    stored = json.loads(source.read_text())
    old = stored["args"] | {"input_electrodes": {k: tuple(v) for k, v in stored["args"]["input_electrodes"].items()}}
    for name, value in vars(args).items():
        if name not in DEVICE_OPTIONS and value != parser.get_default(name) and value != old.get(name):
            parser.error(f"--{name.replace('_', '-')} {value}: --reuse-training keeps the training and data options of "
                         f"{source} ({name} = {old.get(name)}); only the device protocol may change")  # fmt: skip
    for arch in args.architectures:
        kept = stored["summary"].get(arch, {}).get("candidates")
        if kept is None or "state" not in kept[0]:
            parser.error(f"--reuse-training: {source} holds no trained candidates of {arch} (run rings.py to train them)")
        if args.candidates > len(kept):
            parser.error(f"--candidates {args.candidates}: {source} kept {len(kept)} candidates of {arch}")
    merged = argparse.Namespace(**(old | {k: v for k, v in vars(args).items() if k in DEVICE_OPTIONS}))
    merged.out, merged.reuse_training = args.out, args.reuse_training
    return stored, merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architectures", nargs="+", default=list(ARCHITECTURES), choices=ARCHITECTURES)
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--group", type=int, default=25, help="trials vectorised in one task")
    parser.add_argument("--epochs", type=int, default=400)
    parser.add_argument("--learning-rate", type=float, default=0.0065)
    parser.add_argument("--noise-variance-factor", type=float, default=1.0)
    parser.add_argument("--input-electrodes", nargs="+", type=_electrode_pair, default=dict(INPUT_ELECTRODES),
                        metavar="ARCH=A,B", action=_MergePairs,
                        help="activation electrodes that take the data, per architecture (default: "
                        + " ".join(f"{k}={a},{b}" for k, (a, b) in INPUT_ELECTRODES.items()) + "; see ring_electrodes.py)")
    parser.add_argument("--gap", type=float, default=0.1)
    parser.add_argument("--n-train", type=int, default=200, help="training points per class")
    parser.add_argument("--n-test", type=int, default=500, help="test points per class")
    parser.add_argument("--n-val", type=int, default=200, help="validation points per class (device selection)")
    parser.add_argument("--validate-repeats", type=int, default=3, help="test-set measurements; 0: no device validation")
    parser.add_argument("--plateau-samples", type=int, default=4, help="device samples averaged per operating point")
    parser.add_argument("--device-threads", type=int, default=None, help="numba threads of the virtual DNPU (default: all)")
    parser.add_argument("--candidates", type=int, default=4, help="best-ranked trials measured on the device's validation set")
    parser.add_argument("--ranking", default="noisy-train", choices=("train", "noisy-train"),
                        help="rank trials by noise-free training accuracy, or by training accuracy with node noise")
    parser.add_argument("--ranking-noise", type=float, default=None,
                        help="node noise std of --ranking noisy-train, x the surrogate's test RMSE (default 1/sqrt(plateau samples))")
    parser.add_argument("--ranking-draws", type=int, default=20)
    parser.add_argument("--readout", default="surrogate", choices=("surrogate", "device"),
                        help="logistic threshold fitted on the surrogate's, or on the device's, output of the training set")
    parser.add_argument("--no-calibrate-bn", dest="calibrate_bn", action="store_false",
                        help="with --readout device: keep the 2-2-1's batch-norm statistics of training")
    parser.add_argument("--float32", action="store_true", help="train in float32 (default: bfloat16 products, 3-4x faster)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--executor", default="local", choices=("serial", "local", "ray"))
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--address", default=None)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/dnpu_networks/results/rings"))
    parser.add_argument("--reuse-training", type=Path, default=None, metavar="DIR",
                        help="measure the candidates stored in DIR/results.json again on the device (new device options, "
                        "no training); writes to --out, which must differ from DIR")
    parser.add_argument("--report-only", action="store_true", help="rewrite rings.md and histograms.png from --out/results.json")
    args = parser.parse_args()
    if args.report_only:
        stored = json.loads((args.out / "results.json").read_text())
        old = argparse.Namespace(**(vars(parser.parse_args([])) | stored["args"] | {"out": args.out}))
        command = stored.get("command") or " ".join(
            ["python benchmarks/dnpu_networks/rings.py"]
            + [f"--{k.replace('_', '-')} {v}" for k, v in stored["args"].items()
               if k not in ("out", "report_only") and (k in ("trials", "executor") or v != parser.get_default(k))]
        )  # fmt: skip
        write_report(stored["summary"], old, ExecutorConfig(**stored["executor"]), command)
        return
    stored = None
    if args.reuse_training is not None:
        stored, args = reuse_training(parser, args)
    executor = executor_config_from_cli(args.executor, args.workers, args.address)

    x_train, y_train = make_rings(args.n_train, gap=args.gap, seed=args.seed)
    x_test, y_test = make_rings(args.n_test, gap=args.gap, seed=args.seed + 1)
    x_val, y_val = make_rings(args.n_val, gap=args.gap, seed=args.seed + 2)
    tensors = {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val, "x_test": x_test, "y_test": y_test}
    ranking_noise = args.ranking_noise if args.ranking_noise is not None else args.plateau_samples**-0.5
    ranking = {"noisy_draws": args.ranking_draws if args.ranking == "noisy-train" else 0, "noisy_std_factor": ranking_noise}
    data = {"x_train": x_train.tolist(), "y_train": y_train.tolist(), "x_test": x_test.tolist(), "y_test": y_test.tolist()}
    summary, timing = {}, {}
    for arch in args.architectures:
        if stored is not None:
            summary[arch] = {k: v for k, v in stored["summary"][arch].items() if k != "validation"}
            if args.validate_repeats > 0:
                summary[arch]["validation"] = validate_on_device(arch, summary[arch]["candidates"][: args.candidates], tensors, args)
                print(f"{arch}: device test {summary[arch]['validation']['device_test_accuracy_mean']:.4f}", flush=True)
            continue
        specs = [
            {"architecture": arch, "first_seed": args.seed * 1_000_003 + start, "count": min(args.group, args.trials - start),
             "epochs": args.epochs, "learning_rate": args.learning_rate, "noise_variance_factor": args.noise_variance_factor,
             "bfloat16": not args.float32, "keep": args.candidates, "input_electrodes": list(args.input_electrodes[arch]),
             **ranking, **data}
            for start in range(0, args.trials, args.group)
        ]  # fmt: skip
        start = time.perf_counter()
        groups = [r.value for r in run_trials(ring_trials, specs, executor, progress=True, description=f"rings {arch}")]
        timing[arch] = time.perf_counter() - start
        fisher = np.concatenate([g["fisher"] for g in groups])
        train = np.concatenate([g["train_accuracy"] for g in groups])
        test = np.concatenate([g["test_accuracy"] for g in groups])
        candidates = []
        for g in groups:
            offset = g["first_seed"] - specs[0]["first_seed"]
            for c in g["top"]:
                candidates.append(c | {"trial": offset + c["index"], "test_accuracy": float(test[offset + c["index"]])})
        candidates.sort(key=lambda c: (-c["score"], c["trial"]))  # stable: the earlier trial first on ties
        candidates = candidates[: args.candidates]
        best = candidates[0]["trial"]
        summary[arch] = {
            "trials": len(test), "fisher": fisher.tolist(), "train_accuracy": train.tolist(), "test_accuracy": test.tolist(),
            "best_trial": int(best), "best_train_accuracy": float(train[best]), "best_test_accuracy": float(test[best]),
            "median_test_accuracy": float(np.median(test)), "training_seconds": timing[arch],
            "ranking": args.ranking, "best_score": candidates[0]["score"],
            "candidates": candidates,  # with their states: --reuse-training measures them again without training
        }  # fmt: skip
        if args.ranking == "noisy-train":
            summary[arch]["noisy_train_accuracy"] = np.concatenate([g["noisy_train_accuracy"] for g in groups]).tolist()
        if args.validate_repeats > 0:
            summary[arch]["validation"] = validate_on_device(arch, candidates, tensors, args)
            print(f"{arch}: device test {summary[arch]['validation']['device_test_accuracy_mean']:.4f}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python benchmarks/dnpu_networks/rings.py", *sys.argv[1:]])
    atomic_write_json(args.out / "results.json", {"package_version": inmaterio.__version__, "command": command,
                                                  "args": vars(args) | {"out": str(args.out), "reuse_training": (
                                                      None if args.reuse_training is None else str(args.reuse_training))},
                                                  "executor": executor.model_dump(), "summary": summary})  # fmt: skip
    write_report(summary, args, executor, command)


def margin_lines(summary: dict) -> list[str]:
    """Report lines: the 2-2-1's test accuracy minus the single DNPU's, on the same test points, with 95% intervals."""
    from inmaterio.training.metrics import paired_accuracy_difference

    v = {arch: summary.get(arch, {}).get("validation") or {} for arch in ARCHITECTURES}
    if not all("device_test_correct" in v[arch] for arch in ARCHITECTURES):
        return []
    device = paired_accuracy_difference(v["2-2-1"]["device_test_correct"], v["single"]["device_test_correct"])
    surrogate = paired_accuracy_difference(v["2-2-1"]["surrogate_test_correct"], v["single"]["surrogate_test_correct"])
    return ["", f"Margin of the chosen 2-2-1 over the chosen single DNPU (test accuracy, the same test points; paired "
                f"bootstrap over the points, each point's correctness averaged over the repeats): on the virtual DNPU "
                f"**{device}**; on the surrogate {surrogate}."]  # fmt: skip


def write_report(summary: dict, args: argparse.Namespace, executor: ExecutorConfig, command: str) -> None:
    """``histograms.png`` and ``rings.md`` in ``args.out`` from the summary of a run."""
    ranking_noise = args.ranking_noise if args.ranking_noise is not None else args.plateau_samples**-0.5
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
        f"Command: `{command}`  ",
        f"Executor `{executor.kind}` ({executor.n_workers()} workers); data: gap {args.gap}, {args.n_train} training + "
        f"{args.n_val} validation + {args.n_test} test points per class (seeds {args.seed}, {args.seed + 2}, {args.seed + 1}); "
        f"{args.epochs} epochs; noise variance {args.noise_variance_factor} x test MSE; data on electrodes "
        + ", ".join(f"{a}: e{p[0]}, e{p[1]}" for a, p in args.input_electrodes.items() if a in args.architectures)
        + f"; inmaterio {inmaterio.__version__}.",
        "",
        "| architecture | trials | training wall / s | median test acc. (surrogate) | best-ranked trial: train / test acc. (surrogate) "
        "| chosen trial: test acc. (surrogate) | chosen trial on the virtual DNPU: test acc. (mean ± std over repeats) "
        "| device wall / s | paper: best off-chip | paper: on chip |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for arch in args.architectures:
        s = summary[arch]
        v = s.get("validation")
        device = f"{100 * v['device_test_accuracy_mean']:.2f}% ± {100 * v['device_test_accuracy_std']:.2f} ({v['repeats']} x)" if v else "-"
        chosen = f"{100 * v['surrogate_test_accuracy']:.2f}% (trial {v['chosen']['trial']})" if v else "-"
        lines.append(
            f"| {arch} | {s['trials']} | {s['training_seconds']:.0f} | {100 * s['median_test_accuracy']:.2f}% "
            f"| {100 * s['best_train_accuracy']:.2f}% / {100 * s['best_test_accuracy']:.2f}% | {chosen} | {device} "
            f"| {v['seconds']:.0f} | {PAPER[arch][0]}% | {PAPER[arch][1]}% |"
            if v else
            f"| {arch} | {s['trials']} | {s['training_seconds']:.0f} | {100 * s['median_test_accuracy']:.2f}% "
            f"| {100 * s['best_train_accuracy']:.2f}% / {100 * s['best_test_accuracy']:.2f}% | - | - | - "
            f"| {PAPER[arch][0]}% | {PAPER[arch][1]}% |"
        )  # fmt: skip
    best_clean = []
    for arch in args.architectures:
        train, test = np.array(summary[arch]["train_accuracy"]), np.array(summary[arch]["test_accuracy"])
        t = int(train.argmax())  # the first of equals
        best_clean.append(f"{arch} {100 * train[t]:.2f}% / {100 * test[t]:.2f}% (trial {t})")
    lines += ["", "Best trial by noise-free training accuracy on the surrogate (as the paper's best off-chip), train / test: "
              + "; ".join(best_clean) + "."]  # fmt: skip
    lines += margin_lines(summary)
    if any("validation" in summary[a] for a in args.architectures):
        rank = ("noise-free training accuracy on the surrogate" if args.ranking == "train" else
                f"training accuracy on the surrogate with output noise of {ranking_noise:.3g} x its test RMSE on every node "
                f"(mean of {args.ranking_draws} draws)")  # fmt: skip
        readout = (
            "keep the logistic read-out fitted on the surrogate's output of the training set (no device calibration)"
            if args.readout == "surrogate"
            else "are calibrated on the device: the training set measured once, "
            + ("the 2-2-1's batch-norm statistics taken from that measurement and " if args.calibrate_bn else "")
            + "the logistic read-out re-fitted on the measured output"
        )
        lines += [
            "",
            f"Device protocol (the same for both architectures): trials ranked by {rank}; the best {args.candidates} "
            f"{readout}"
            + (", are each measured once on the validation set, and the one with the best device validation accuracy is chosen" if args.candidates > 1 else "")
            + f"; the chosen network is measured {args.validate_repeats} times on the test set "
            f"({args.plateau_samples} device sample(s) averaged per operating point; the 2-2-1 node after node on one device). "
            "No test point is used for training, calibration or choice.",
            "",
            "| architecture | candidate | trial | ranking score | train acc. (surrogate) | test acc. (surrogate) | device validation acc. |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]  # fmt: skip
        for arch in args.architectures:
            for c in summary[arch].get("validation", {}).get("candidates", []):
                dv = c.get("device_validation_accuracy")
                lines.append(
                    f"| {arch} | {c['rank']} | {c['trial']} | {100 * c['score']:.2f}% | {100 * c['train_accuracy']:.2f}% "
                    f"| {100 * c['test_accuracy']:.2f}% | {'-' if dv is None else f'{100 * dv:.1f}%'} |"
                )
    lines += ["", "![histograms](histograms.png)", ""]
    atomic_write_text(args.out / "rings.md", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
