"""Scaling of independent trials with workers: serial, local process pool (1 and 2 workers), Ray (2 workers).

Command (from the repository root; prints a markdown table; Ray from ``pip install -e ".[dev]"``)::

    python benchmarks/parallel_scaling.py --trials 16 --epochs 100

One trial = one ring classifier trained from scratch: ``make_rings(n_per_class)``
(seed = the trial's seed), a single DNPU node (:func:`~inmaterio.nn.layers.single_dnpu`,
inputs on e3 and e4, data range [-1, 1], initial controls from the trial's
seed) on the bundled surrogate (no output noise), full-batch Adam (learning
rate 0.0065) on the ``fisher`` loss for ``--epochs`` epochs (``train_gd``,
seeded with the trial's seed). A trial returns its best loss and the best
single-threshold accuracy of the trained node. Every executor runs with 1
torch thread per worker (``ExecutorConfig.threads_per_worker``).

Timed: the wall time of the whole ``run_trials`` call, pool start-up
included (the forkserver is warmed up first by an untimed call, as it is
after the first call of a session; each call still starts fresh worker
processes, which import inmaterio; the surrogate is loaded per trial, 2 ms). The Ray
instance is started after the local rows, before its timing (its start-up is printed separately), and
its 2 worker processes are warmed up by an untimed call. The benchmark
checks that every executor returns bit-identical results, in task order.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from inmaterio.parallel import ExecutorConfig, run_trials

LEARNING_RATE = 0.0065


def train_ring_classifier(task: dict) -> tuple[float, float]:
    """One trial: ``task = {"seed", "epochs", "n_per_class"}`` -> (best fisher loss, best threshold accuracy)."""
    from inmaterio.data.rings import make_rings
    from inmaterio.nn.layers import single_dnpu
    from inmaterio.processors import SurrogateProcessor
    from inmaterio.surrogate import load_default_surrogate
    from inmaterio.training.gd import GDConfig, train_gd
    from inmaterio.training.losses import fisher
    from inmaterio.training.metrics import best_threshold_accuracy

    # loaded per trial (2 ms): Ray pickles functions of __main__ by value, so a module-level cache would not last
    processor = SurrogateProcessor(load_default_surrogate())
    seed = task["seed"]
    x, y = make_rings(task["n_per_class"], seed=seed)
    model = single_dnpu(processor, input_electrodes=("e3", "e4"), data_range=(-1.0, 1.0), seed=seed)
    config = GDConfig(learning_rate=LEARNING_RATE, epochs=task["epochs"], seed=seed)
    result = train_gd(model, fisher, x, y, config, progress=False)
    with torch.no_grad():
        accuracy = float(best_threshold_accuracy(model(x), y))
    return result.best_loss, accuracy


def _noop(i: int) -> int:
    return i


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=16, help="trials per executor")
    parser.add_argument("--epochs", type=int, default=100, help="epochs per trial")
    parser.add_argument("--n-per-class", type=int, default=500, help="ring points per class (full batch)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray row")
    args = parser.parse_args()
    tasks = [{"seed": 1000 + i, "epochs": args.epochs, "n_per_class": args.n_per_class} for i in range(args.trials)]

    load_before = os.getloadavg()[0]
    executors = {
        "serial (this process)": ExecutorConfig(kind="serial"),
        "local, 1 worker": ExecutorConfig(kind="local", workers=1),
        "local, 2 workers": ExecutorConfig(kind="local", workers=2),
    }
    if not args.no_ray:
        executors["ray, 2 workers"] = ExecutorConfig(kind="ray", workers=2)
    seconds: dict[str, float] = {}
    in_worker: dict[str, float] = {}
    values: dict[str, list] = {}
    ray_start = None
    for name, config in executors.items():
        if config.kind == "ray":  # started only now, so that its daemons do not load the local rows
            import ray

            start = time.perf_counter()
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
            ray_start = time.perf_counter() - start
            run_trials(train_ring_classifier, tasks[:2], config)  # warm-up, not timed: Ray's workers
        elif config.kind == "local":
            run_trials(_noop, range(2), config)  # warm-up, not timed: the forkserver
        start = time.perf_counter()
        results = run_trials(train_ring_classifier, tasks, config)
        seconds[name] = time.perf_counter() - start
        in_worker[name] = sum(r.seconds for r in results) / len(results)
        values[name] = [r.value for r in results]
    if ray_start is not None:
        ray.shutdown()
    reference = values["serial (this process)"]
    identical = all(v == reference for v in values.values())

    n = args.trials
    base = seconds["local, 1 worker"]
    print(
        f"{n} trials: single-DNPU ring classifier, {2 * args.n_per_class} points, {args.epochs} epochs of full-batch "
        f"Adam on fisher, bundled surrogate; 1 torch thread per worker; {os.cpu_count()} CPUs, "
        f"load average (1 min) at start {load_before:.1f}; torch {torch.__version__}\n"
    )
    print("| executor | wall / s | trials/s | speed-up vs local 1 worker | mean s per trial inside the worker |")
    print("| --- | --- | --- | --- | --- |")
    for name, s in seconds.items():
        print(f"| {name} | {s:.2f} | {n / s:.2f} | {base / s:.2f}x | {in_worker[name]:.2f} |")
    print(f"\nresults bit-identical across executors: {identical}")
    if ray_start is not None:
        print(f"Ray start-up (ray.init, local, 2 CPUs; not in the table): {ray_start:.1f} s")
    mean_acc = sum(v[1] for v in reference) / n
    print(f"mean best-threshold accuracy of the {n} trials: {mean_acc:.3f}")
    if not identical:
        raise SystemExit("executors disagree")


if __name__ == "__main__":
    main()
