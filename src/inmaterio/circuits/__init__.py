"""Analog resistive networks: circuits of conductances, diodes, amplifiers and sources, trained with EP.

Build a model with the functional API, solve it in batches, train it with
Equilibrium Propagation::

    from inmaterio.circuits import Input, Bias, Dense, Diodes, Amplifier, Concatenate, Model, EPTrainConfig, fit
    x = Input(4, inverted=True)
    b = Bias([1.0, -1.0])
    h = Diodes(orientation="both", bias_v=(-0.3, -0.3))(Dense(10)(Concatenate()([x, b])))
    y = Dense(6)(Concatenate()([Amplifier(4.0)(h), b]))
    model = Model(x, y, seed=0)
    history = fit(model, x_train, y_train, EPTrainConfig(readout="differential"))

Layers: :mod:`.layers`; the compiled circuit: :mod:`.netlist`; solvers:
:mod:`.solve` (native batched Newton, ngspice); EP: :mod:`.ep`;
optimisers: :mod:`.optim`; training: :mod:`.fit`; mixed-signal models:
:mod:`.mixed`; parameter files: :mod:`.io`; ready-made tasks: :mod:`.examples`.
"""

from .elements import PiecewiseLinearDiode, ShockleyDiode, TwoTerminal
from .ep import EPResult, VARIANTS, ep_gradients, implicit_gradients, output_loss, readout
from .fit import EPTrainConfig, evaluate, fit
from .graph import Model
from .layers import Amplifier, Bias, Concatenate, Dense, Diodes, Input, LocallyConnected2D, Nodes
from .netlist import GROUND, Circuit, DiodeGroup
from .optim import OPTIMIZERS, Adam, Momentum, SGD, make_optimizer
from .solve import DCSolution, SolverOptions, kcl_currents, solve_dc

__all__ = [
    "GROUND", "OPTIMIZERS", "VARIANTS", "Adam", "Amplifier", "Bias", "Circuit", "Concatenate", "DCSolution", "Dense",
    "DiodeGroup", "Diodes", "EPResult", "EPTrainConfig", "Input", "LocallyConnected2D", "Model", "Momentum", "Nodes",
    "PiecewiseLinearDiode", "SGD", "ShockleyDiode", "SolverOptions", "TwoTerminal", "ep_gradients", "evaluate", "fit",
    "implicit_gradients", "kcl_currents", "make_optimizer", "output_loss", "readout", "solve_dc",
]
