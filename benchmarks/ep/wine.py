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

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _learning import tabular_main  # noqa: E402

from inmaterio.data.tabular import load_wine_split  # noqa: E402

if __name__ == "__main__":
    tabular_main(
        __doc__, "wine", "Wine", load_wine_split, 13, 3, (124, 54), {"seeds": 5, "epochs": 60, "hidden": 10, "batch_size": 8}
    )
