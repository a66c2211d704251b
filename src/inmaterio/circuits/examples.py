"""Ready-made EP experiments: the diode network, its data and a training recipe that works, by name.

:data:`EXAMPLES` maps ``xor``, ``iris``, ``wine`` and ``digits`` to an
:class:`Example`: a data loader (volts, stratified splits), a network builder
and an :class:`~inmaterio.circuits.fit.EPTrainConfig` measured to learn the
task (see ``benchmarks/ep/results/`` for the accuracies over seeds). The
network is EBANA's: inputs and their inverted copies plus bias sources
(+1 V, -1 V), a Dense crossbar to hidden nodes that each carry two Shockley
diodes to ground (series bias ``diode_bias_v``; -0.3 V makes them conduct
near +-0.1 V, inside the nodes' range), bidirectional amplifiers, and a Dense
crossbar (with the biases) to two output nodes per class read differentially.
``inmaterio ep train NAME`` runs one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from inmaterio.circuits.elements import ShockleyDiode
from inmaterio.circuits.fit import EPTrainConfig
from inmaterio.circuits.graph import Model
from inmaterio.circuits.layers import Amplifier, Bias, Concatenate, Dense, Diodes, Input
from inmaterio.errors import ConfigError

__all__ = ["EXAMPLES", "Example", "ExampleData", "diode_network", "get_example"]


def diode_network(
    n_inputs: int,
    hidden: int,
    n_classes: int,
    *,
    seed: int = 0,
    diode_bias_v: float = -0.3,
    gain: float = 4.0,
    init_s: tuple[float, float] | None = None,
) -> Model:
    """Inputs + inverses + biases -> Dense(hidden) -> diodes both ways -> amplifiers -> Dense(2 n_classes) (+ biases).

    Args:
        n_inputs: features per sample (volts in [-10, 10]).
        hidden: hidden nodes.
        n_classes: classes; the outputs are ``2 n_classes`` nodes, score ``k = V[2k] - V[2k+1]``.
        seed: initial conductances.
        diode_bias_v: series bias of every diode (V).
        gain: amplifier voltage gain (current gain ``1 / gain``).
        init_s: initial conductance range of both crossbars (default the layers' default).
    """
    x = Input(n_inputs, inverted=True, name="x")
    b = Bias([1.0, -1.0], name="b")
    h = Dense(hidden, name="h", init_s=init_s)(Concatenate()([x, b]))
    h = Diodes(ShockleyDiode(), orientation="both", bias_v=(diode_bias_v, diode_bias_v), name="d")(h)
    h = Amplifier(gain, name="amp")(h)
    y = Dense(2 * n_classes, name="y", init_s=init_s)(Concatenate()([h, b]))
    return Model(x, y, seed=seed)


@dataclass(frozen=True)
class ExampleData:
    """Training and test sets: ``x (n, features)`` volts, ``y (n,)`` class indices."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


def _xor(seed: int) -> ExampleData:
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 1, 1, 0])
    return ExampleData(x, y, x, y)


def _tabular(loader_name: str) -> Callable[[int], ExampleData]:
    def load(seed: int) -> ExampleData:
        from inmaterio.data import tabular

        split = getattr(tabular, loader_name)(seed)
        as_t = lambda a, dt: torch.as_tensor(a, dtype=dt)  # noqa: E731
        return ExampleData(
            as_t(split.x_train, torch.float64),
            as_t(split.y_train, torch.long),
            as_t(split.x_test, torch.float64),
            as_t(split.y_test, torch.long),
        )

    return load


@dataclass(frozen=True)
class Example:
    """One task: ``load(seed) -> ExampleData``, ``build(seed) -> Model`` and the training recipe."""

    description: str
    load: Callable[[int], ExampleData]
    build: Callable[[int], Model]
    config: EPTrainConfig


_RECIPE = {"beta": 1e-7, "variant": "symmetric", "optimizer": "adam", "loss": "mse", "readout": "differential", "target_v": 0.1}

#: Every example by name.
EXAMPLES: dict[str, Example] = {
    "xor": Example(
        "XOR, 2 inputs, 6 hidden diode nodes, 4 outputs (one batch of the 4 points)",
        _xor,
        lambda s: diode_network(2, 6, 2, seed=s),
        EPTrainConfig(epochs=150, batch_size=4, lr=0.02, **_RECIPE),
    ),
    "iris": Example(
        "Iris (EBANA's network: 4 inputs + inverses + bias, 10 hidden diode nodes, 6 outputs), 105/45 split",
        _tabular("load_iris_split"),
        lambda s: diode_network(4, 10, 3, seed=s),
        EPTrainConfig(epochs=200, batch_size=8, lr=0.003, **_RECIPE),
    ),
    "wine": Example(
        "Wine (13 inputs + inverses, 10 hidden diode nodes, 6 outputs), 124/54 split",
        _tabular("load_wine_split"),
        lambda s: diode_network(13, 10, 3, seed=s),
        EPTrainConfig(epochs=60, batch_size=8, lr=0.01, **_RECIPE),
    ),
    "digits": Example(
        "scikit-learn 8x8 digits (64 inputs + inverses, 40 hidden diode nodes, 20 outputs), 1257/540 split",
        _tabular("load_digits_split"),
        lambda s: diode_network(64, 40, 10, seed=s),
        EPTrainConfig(epochs=15, batch_size=16, lr=0.01, **_RECIPE),
    ),
}


def get_example(name: str) -> Example:
    """The example called ``name``; a clear error lists the others."""
    try:
        return EXAMPLES[name]
    except KeyError:
        raise ConfigError(f"unknown example {name!r}; choose one of {sorted(EXAMPLES)}") from None
