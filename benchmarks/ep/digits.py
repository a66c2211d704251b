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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _learning import tabular_main  # noqa: E402

from inmaterio.data.tabular import load_digits_split  # noqa: E402

if __name__ == "__main__":
    tabular_main(
        __doc__,
        "digits",
        "scikit-learn digits",
        load_digits_split,
        64,
        10,
        (1257, 540),
        {"seeds": 3, "epochs": 15, "hidden": 40, "batch_size": 16},
    )
