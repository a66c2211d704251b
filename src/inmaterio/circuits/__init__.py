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

A :class:`Model` is a ``torch.nn.Module`` whose parameters are the
conductances and learnable biases in normalised coordinates (``[0, 1]``
across their bounds), so ``torch.optim`` optimisers and LR schedulers train
it: :func:`ep_gradients` fills ``.grad``, ``optimizer.step()`` moves, and
``model.constrain()`` keeps the bounds.

Layers: :mod:`.layers`; the model and its parameters: :mod:`.graph`; the
compiled circuit: :mod:`.netlist`; solvers: :mod:`.solve` (native batched
Newton, the layered ideal-diode solver, ngspice); EP: :mod:`.ep`; deep resistive
networks with ideal diodes (EP and exact gradients on the layered solver):
:mod:`.drn` and :mod:`.drn_training`; training: :mod:`.fit`; mixed-signal
models: :mod:`.mixed`; parameter files: :mod:`.io`; ready-made tasks:
:mod:`.examples`.
"""

from inmaterio.circuits.drn import DeepResistiveNetwork, SolveSettings, drn_ep_gradients, drn_implicit_gradients
from inmaterio.circuits.drn_training import DRNTrainConfig, fit_drn
from inmaterio.circuits.elements import PiecewiseLinearDiode, ShockleyDiode, TwoTerminal
from inmaterio.circuits.ep import VARIANTS, EPResult, ep_gradients, implicit_gradients, output_loss, readout
from inmaterio.circuits.fit import FIT_KIND, EPTrainConfig, evaluate, fit
from inmaterio.circuits.graph import Model
from inmaterio.circuits.layers import Amplifier, Bias, Concatenate, Dense, Diodes, Input, LocallyConnected2D, Nodes
from inmaterio.circuits.netlist import GROUND, Circuit, DiodeGroup
from inmaterio.circuits.solve import DCSolution, SolverOptions, kcl_currents, solve_dc

__all__ = [
    "FIT_KIND",
    "GROUND",
    "VARIANTS",
    "Amplifier",
    "Bias",
    "Circuit",
    "Concatenate",
    "DCSolution",
    "DRNTrainConfig",
    "DeepResistiveNetwork",
    "Dense",
    "DiodeGroup",
    "Diodes",
    "EPResult",
    "EPTrainConfig",
    "Input",
    "LocallyConnected2D",
    "Model",
    "Nodes",
    "PiecewiseLinearDiode",
    "ShockleyDiode",
    "SolveSettings",
    "SolverOptions",
    "TwoTerminal",
    "drn_ep_gradients",
    "drn_implicit_gradients",
    "ep_gradients",
    "evaluate",
    "fit",
    "fit_drn",
    "implicit_gradients",
    "kcl_currents",
    "output_loss",
    "readout",
    "solve_dc",
]
