"""Wine (scikit-learn, 13 features, 3 classes) with a diode circuit trained by Equilibrium Propagation.

Command (from the repository root)::

    python benchmarks/ep/wine.py --seeds 5 --epochs 60

Network: 13 inputs and their inverses, fixed biases +1 V and -1 V ->
``Dense(--hidden)`` -> Shockley diodes both ways (series bias
``--diode-bias``) -> bidirectional amplifiers (gain ``--gain``) ->
``Dense(6)`` (+ biases), 3 classes read differentially
(:func:`inmaterio.circuits.examples.diode_network`, the Iris recipe of ``iris.py``).

Data: :func:`inmaterio.data.tabular.load_wine_split` (stratified 124/54,
``random_state = seed``, features min-max scaled to [-1, 1] V on the
training set, test values clipped). Symmetric EP, beta = 1e-7 S, MSE on
the class scores (target +-0.1 V), Adam. Writes ``results/wine.md`` and
``results/wine.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from inmaterio.circuits.examples import diode_network  # noqa: E402
from _learning import RESULTS, learning_curve, run_seeds, seed_table, write_report  # noqa: E402

from inmaterio.circuits import EPTrainConfig  # noqa: E402
from inmaterio.data.tabular import load_wine_split  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--hidden", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--beta", type=float, default=1e-7)
    parser.add_argument("--diode-bias", type=float, default=-0.3)
    parser.add_argument("--gain", type=float, default=4.0)
    args = parser.parse_args()
    cfg = EPTrainConfig(epochs=args.epochs, batch_size=args.batch_size, beta=args.beta, lr=args.lr,
                        readout="differential", loss="mse", target_v=0.1)
    build = lambda s: diode_network(13, args.hidden, 3, seed=s, diode_bias_v=args.diode_bias, gain=args.gain)  # noqa: E731
    runs = run_seeds(build, load_wine_split, cfg, range(args.seeds))
    cmd = (f"python benchmarks/ep/wine.py --seeds {args.seeds} --epochs {args.epochs} --hidden {args.hidden} "
           f"--batch-size {args.batch_size} --lr {args.lr} --beta {args.beta} --diode-bias {args.diode_bias} --gain {args.gain}")
    lines = [
        "# Wine with a diode circuit trained by Equilibrium Propagation",
        "",
        f"Command: `{cmd}` (1 torch thread).",
        "",
        f"13 inputs + inverses (min-max to [-1, 1] V on the training set), biases +-1 V -> Dense({args.hidden}) -> Shockley "
        f"diodes both ways (series bias {args.diode_bias} V) -> amplifiers (gain {args.gain}) -> Dense(6) (+ biases), "
        f"differential readout. Symmetric EP, beta {args.beta:g} S, MSE (target +-0.1 V), Adam lr {args.lr}, batch "
        f"{args.batch_size}, {args.epochs} epochs. Each seed: its own stratified 124/54 split and initialisation; "
        "accuracies after the last epoch.",
        "",
        *seed_table(runs, 124, 54),
        "",
        "![learning curve](wine.png)",
    ]
    write_report("wine", lines)
    learning_curve(runs, "Wine, symmetric EP", RESULTS / "wine.png")


if __name__ == "__main__":
    main()
