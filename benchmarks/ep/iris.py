"""EBANA's Iris network trained with Equilibrium Propagation: test accuracy on stratified 105/45 splits.

Command (from the repository root)::

    python benchmarks/ep/iris.py --seeds 10 --epochs 200 --lr 0.003   # lr 0.01, 100 epochs: 1 of 10 seeds at 100% test

Network (Watfa et al. 2023, Iris): 4 inputs and their inverses, fixed bias
sources +1 V and -1 V -> ``Dense(10)`` (conductances 1e-7..1e-5 S, default
initialisation: uniform in [1e-7, 1e-6] S) -> Shockley diodes to ground both
ways with series bias sources ``--diode-bias`` (default -0.3 V: the diodes
start conducting when a hidden node passes about +-0.1 V) -> bidirectional
amplifiers (gain ``--gain``, current gain 1/gain) -> ``Dense(6)`` fed by the
amplifiers and the biases; 3 classes read differentially
(score ``k = V[2k] - V[2k+1]``).

Data: :func:`inmaterio.data.tabular.load_iris_split` (stratified 105/45 split
with ``random_state = seed``; every feature min-max scaled to [-1, 1] V with
the training set's statistics, test values clipped). Each seed draws its own
split *and* its own initial conductances. Training: symmetric EP,
beta = 1e-7 S, MSE on the class scores (target +-0.1 V), Adam
(lr relative to the bound width), mini-batches of ``--batch-size``.

Writes ``results/iris.md`` (per seed: final train/test accuracy, best test
accuracy seen during training, time per epoch) and ``results/iris.png``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _learning import RESULTS, learning_curve, run_seeds, seed_table, write_report  # noqa: E402

from inmaterio.circuits import EPTrainConfig, Model  # noqa: E402
from inmaterio.circuits.examples import diode_network  # noqa: E402
from inmaterio.data.tabular import load_iris_split  # noqa: E402


def network(seed: int, diode_bias_v: float = -0.3, gain: float = 4.0, hidden: int = 10) -> Model:
    """EBANA's Iris circuit: 4 inputs + inverses + 2 biases -> 10 diode nodes -> amplifiers -> 6 outputs."""
    return diode_network(4, hidden, 3, seed=seed, diode_bias_v=diode_bias_v, gain=gain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--beta", type=float, default=1e-7)
    parser.add_argument("--diode-bias", type=float, default=-0.3)
    parser.add_argument("--gain", type=float, default=4.0)
    args = parser.parse_args()
    cfg = EPTrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        beta=args.beta,
        lr=args.lr,
        readout="differential",
        loss="mse",
        target_v=0.1,
    )
    runs = run_seeds(lambda s: network(s, args.diode_bias, args.gain), load_iris_split, cfg, range(args.seeds))
    cmd = (
        f"python benchmarks/ep/iris.py --seeds {args.seeds} --epochs {args.epochs} --batch-size {args.batch_size} "
        f"--lr {args.lr} --beta {args.beta} --diode-bias {args.diode_bias} --gain {args.gain}"
    )
    lines = [
        "# Iris with EBANA's network, trained with Equilibrium Propagation",
        "",
        f"Command: `{cmd}` (1 torch thread).",
        "",
        "4 inputs + inverses (features min-max scaled to [-1, 1] V on the training set), biases +-1 V -> Dense(10) -> "
        f"Shockley diodes both ways (series bias {args.diode_bias} V) -> amplifiers (gain {args.gain}) -> Dense(6) (+ biases), "
        f"differential readout of 3 classes. Symmetric EP, beta {args.beta:g} S, MSE (target +-0.1 V), Adam lr {args.lr}, "
        f"batch {args.batch_size}, {args.epochs} epochs. Each seed: its own stratified 105/45 split and initial conductances. "
        "'Final' = after the last epoch (no early stopping; the best test accuracy during training is shown only for "
        "information, it is not a selected model).",
        "",
        *seed_table(runs, 105, 45),
        "",
        "![learning curve](iris.png)",
    ]
    write_report("iris", lines)
    learning_curve(runs, "Iris (EBANA network), symmetric EP", RESULTS / "iris.png")


if __name__ == "__main__":
    main()
