"""scikit-learn digits (8x8 images, 64 features, 10 classes) with a diode circuit trained by Equilibrium Propagation.

Command (from the repository root)::

    python benchmarks/ep/digits.py --seeds 3 --epochs 15 --batch-size 16

Network: 64 pixel inputs and their inverses, fixed biases +1 V and -1 V ->
``Dense(--hidden)`` -> Shockley diodes both ways (series bias
``--diode-bias``) -> bidirectional amplifiers (gain ``--gain``) ->
``Dense(20)`` (+ biases), 10 classes read differentially
(:func:`inmaterio.circuits.examples.diode_network`, the Iris recipe of ``iris.py``).

Data: :func:`inmaterio.data.tabular.load_digits_split` (stratified 1257/540,
``random_state = seed``, features min-max scaled to [-1, 1] V on the
training set, test values clipped). Symmetric EP, beta = 1e-7 S, MSE on
the class scores (target +-0.1 V), Adam. Writes ``results/digits.md`` and
``results/digits.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from inmaterio.circuits.examples import diode_network  # noqa: E402
from _learning import RESULTS, learning_curve, run_seeds, seed_table, write_report  # noqa: E402

from inmaterio.circuits import EPTrainConfig  # noqa: E402
from inmaterio.data.tabular import load_digits_split  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--hidden", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--beta", type=float, default=1e-7)
    parser.add_argument("--diode-bias", type=float, default=-0.3)
    parser.add_argument("--gain", type=float, default=4.0)
    args = parser.parse_args()
    cfg = EPTrainConfig(epochs=args.epochs, batch_size=args.batch_size, beta=args.beta, lr=args.lr,
                        readout="differential", loss="mse", target_v=0.1)
    build = lambda s: diode_network(64, args.hidden, 10, seed=s, diode_bias_v=args.diode_bias, gain=args.gain)  # noqa: E731
    runs = run_seeds(build, load_digits_split, cfg, range(args.seeds))
    cmd = (f"python benchmarks/ep/digits.py --seeds {args.seeds} --epochs {args.epochs} --hidden {args.hidden} "
           f"--batch-size {args.batch_size} --lr {args.lr} --beta {args.beta} --diode-bias {args.diode_bias} --gain {args.gain}")
    lines = [
        "# scikit-learn digits with a diode circuit trained by Equilibrium Propagation",
        "",
        f"Command: `{cmd}` (1 torch thread).",
        "",
        f"64 pixel inputs + inverses (min-max to [-1, 1] V on the training set), biases +-1 V -> Dense({args.hidden}) -> Shockley "
        f"diodes both ways (series bias {args.diode_bias} V) -> amplifiers (gain {args.gain}) -> Dense(20) (+ biases), "
        f"differential readout. Symmetric EP, beta {args.beta:g} S, MSE (target +-0.1 V), Adam lr {args.lr}, batch "
        f"{args.batch_size}, {args.epochs} epochs. Each seed: its own stratified 1257/540 split and initialisation; "
        "accuracies after the last epoch.",
        "",
        *seed_table(runs, 1257, 540),
        "",
        "![learning curve](digits.png)",
    ]
    write_report("digits", lines)
    learning_curve(runs, "digits (8x8), symmetric EP", RESULTS / "digits.png")


if __name__ == "__main__":
    main()
