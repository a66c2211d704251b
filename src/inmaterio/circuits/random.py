"""Random circuits for testing the solvers (native against ngspice, Kirchhoff's law, speed).

:func:`random_circuit` draws a connected network of resistors, grounded
voltage sources, diodes with series biases, bidirectional amplifiers and
current sources, deterministically from a seed. Every rule below keeps the
circuit well posed and physically tame, so that two correct solvers must agree:

* **Connected**: a random spanning tree of resistors over the non-amplifier
  nodes and ground, plus about ``n / 2`` extra resistors between random pairs
  (so every node reaches ground through resistors). Conductances are
  log-uniform in ``[1e-7, 1e-3]`` S.
* **Sources**: 1 to 4 grounded voltage sources (never more than half of the
  nodes) with voltages uniform in ``[-2, 2]`` V; per circuit ``(batch, S)``
  when ``batch_size > 1``.
* **Amplifiers** (``with_amplifiers``, 1 to ``n // 6``, none below 6
  nodes): gain uniform in ``[1, 5]``, ``current_gain = 1 / gain``. Each
  input is any node that is not an amplifier output (no chains, no loops, so
  outputs stay within ``5 * 2`` V); each output is a fresh node driving its
  own load: a resistor to a private fresh node, which has a resistor to
  ground (and perhaps a diode to the output or to ground), and perhaps a
  resistor from the output to ground. The load reaches the rest of the
  circuit only through the amplifier: with ``current_gain = 1 / gain`` an
  amplifier is an *active* two-port (it delivers ``gain**2`` times the power
  it draws), and a resistive path from its output back to its input side
  makes a feedback loop whose circuit may have several operating points or
  none that Newton's method finds, where two solvers may rightly disagree.
* **Diodes** (``diode_model``): about ``n / 2`` diodes between random pairs
  of nodes (ground included), random orientation, series bias uniform in
  ``[-0.5, 0.5]`` V. The diodes form a forest and each tree of diodes
  touches at most one node of fixed voltage (ground, a source or an amplifier
  output): every path between two fixed voltages then passes through a
  resistor, which bounds the diode currents (no diode is forward biased by
  volts, where the two solvers' exponentials would part).
* **Current sources** (``with_current_sources``): 1 or 2 on free nodes,
  uniform in ``[-1e-6, 1e-6]`` A; per circuit when ``batch_size > 1``.
"""

from __future__ import annotations

import numpy as np
import torch

from inmaterio.circuits.elements import PiecewiseLinearDiode, ShockleyDiode, TwoTerminal
from inmaterio.circuits.netlist import DTYPE, GROUND, Circuit, DiodeGroup
from inmaterio.errors import ConfigError

__all__ = ["random_circuit"]

_DIODE_KINDS = ("both", "shockley", "piecewise", "none")


def _pwl(rng: np.random.Generator) -> PiecewiseLinearDiode:
    return PiecewiseLinearDiode(
        on_conductance_s=float(10 ** rng.uniform(-5, -3)), off_conductance_s=1e-12, knee_v=float(rng.uniform(0.0, 0.7))
    )


def random_circuit(
    seed: int,
    n_nodes: int,
    *,
    batch_size: int = 1,
    diode_model: str | TwoTerminal | None = "both",
    with_amplifiers: bool = True,
    with_current_sources: bool = True,
) -> Circuit:
    """A random, connected, well-posed circuit (see the module docstring for the rules).

    Args:
        seed: the seed; the same arguments give the same circuit.
        n_nodes: number of nodes (>= 2; ground is extra).
        batch_size: circuits in the batch; above 1 the source voltages and
            injected currents are drawn per circuit (shapes ``(batch, k)``).
        diode_model: ``"both"`` (a Shockley group and a piecewise-linear
            group), ``"shockley"``, ``"piecewise"``, ``"none"`` / ``None`` (no
            diodes), or a :class:`TwoTerminal` used for every diode.
        with_amplifiers: add bidirectional amplifiers (from 5 nodes on).
        with_current_sources: add current sources.

    Returns:
        the :class:`Circuit`, with node names ``"in0"``... (sources),
        ``"h3"``... (free nodes) and ``"amp0"``... (amplifier outputs).
    """
    if n_nodes < 2:
        raise ConfigError(f"random_circuit needs n_nodes >= 2, got {n_nodes}")
    if batch_size < 1:
        raise ConfigError(f"random_circuit batch_size must be >= 1, got {batch_size}")
    if diode_model is None:
        diode_model = "none"
    if isinstance(diode_model, str) and diode_model not in _DIODE_KINDS:
        raise ConfigError(f"random_circuit diode_model must be one of {_DIODE_KINDS} or a TwoTerminal, got {diode_model!r}")
    rng = np.random.default_rng(seed)
    n_amp = int(rng.integers(1, n_nodes // 6 + 1)) if with_amplifiers and n_nodes >= 6 else 0
    n_base = n_nodes - 2 * n_amp  # amplifier k: output n_base + 2k, private load node n_base + 2k + 1
    n_src = int(rng.integers(1, min(4, max(1, n_base // 2)) + 1))
    ground = n_nodes  # vertex index standing for ground while building
    order = rng.permutation(n_base)
    sources = np.sort(order[:n_src])
    outputs = [n_base + 2 * k for k in range(n_amp)]
    fixed = set(sources.tolist()) | {ground} | set(outputs)

    def node(v: int) -> int:
        return GROUND if v == ground else v

    # ------------------------------------------------------------------ resistors
    edges: list[tuple[int, int]] = []
    vertices = [ground] + rng.permutation(n_base).tolist()
    for k in range(1, len(vertices)):
        edges.append((vertices[k], vertices[int(rng.integers(0, k))]))
    for _ in range(n_base // 2):
        a, c = rng.choice(n_base + 1, size=2, replace=False).tolist()
        edges.append((ground if a == n_base else a, ground if c == n_base else c))
    amp_nodes = []
    for out in outputs:
        amp_nodes.append((int(rng.integers(0, n_base)), out))
        edges += [(out, out + 1), (out + 1, ground)]
        if rng.random() < 0.5:
            edges.append((out, ground))
    edges = [(a, c) for a, c in edges if a != c]
    resistor_nodes = torch.tensor([[node(a), node(c)] for a, c in edges], dtype=torch.long).reshape(-1, 2)
    conductance = torch.tensor(10.0 ** rng.uniform(-7, -3, size=len(edges)), dtype=DTYPE)

    # ------------------------------------------------------------------ diodes
    groups: list[DiodeGroup] = []
    if diode_model != "none":
        parent = list(range(n_nodes + 1))
        has_fixed = [v in fixed for v in range(n_nodes + 1)]  # vertex n_nodes is ground

        def find(x: int) -> int:
            while parent[x] != x:
                parent[x] = parent[parent[x]]
                x = parent[x]
            return x

        pairs = []

        def try_add(a: int, c: int) -> None:
            ra, rc = find(a), find(c)
            if ra == rc or (has_fixed[ra] and has_fixed[rc]):
                return
            parent[ra] = rc
            has_fixed[rc] = has_fixed[rc] or has_fixed[ra]
            pairs.append((a, c) if rng.random() < 0.5 else (c, a))

        candidates = list(range(n_base)) + [ground]
        for _ in range(4 * n_base):
            if len(pairs) >= max(1, n_base // 2):
                break
            a, c = rng.choice(len(candidates), size=2, replace=False).tolist()
            try_add(candidates[a], candidates[c])
        for out in outputs:  # a non-linear load: a diode from the private node to the output or to ground
            if rng.random() < 0.5:
                try_add(out + 1, out if rng.random() < 0.5 else ground)
        if isinstance(diode_model, TwoTerminal):
            models = [diode_model]
        elif diode_model == "shockley":
            models = [ShockleyDiode()]
        elif diode_model == "piecewise":
            models = [_pwl(rng)]
        else:
            models = [ShockleyDiode(), _pwl(rng)]
        assign = rng.integers(0, len(models), size=len(pairs))
        for m, model in enumerate(models):
            chosen = [p for p, k in zip(pairs, assign) if k == m]
            if not chosen:
                continue
            groups.append(
                DiodeGroup(
                    model,
                    torch.tensor([node(a) for a, _ in chosen], dtype=torch.long),
                    torch.tensor([node(c) for _, c in chosen], dtype=torch.long),
                    torch.tensor(rng.uniform(-0.5, 0.5, size=len(chosen)), dtype=DTYPE),
                )
            )

    # ------------------------------------------------------------------ sources
    shape = (batch_size, n_src) if batch_size > 1 else (n_src,)
    source_v = torch.tensor(rng.uniform(-2.0, 2.0, size=shape), dtype=DTYPE)
    free = [v for v in range(n_nodes) if v not in fixed]
    current_nodes: list[int] = []
    if with_current_sources and free:
        current_nodes = rng.choice(free, size=min(len(free), int(rng.integers(1, 3))), replace=False).tolist()
    cshape = (batch_size, len(current_nodes)) if batch_size > 1 else (len(current_nodes),)
    current_a = torch.tensor(rng.uniform(-1e-6, 1e-6, size=cshape), dtype=DTYPE)
    gain = torch.tensor(rng.uniform(1.0, 5.0, size=n_amp), dtype=DTYPE)

    names = []
    for v in range(n_nodes):
        if v >= n_base:
            names.append(f"amp{(v - n_base) // 2}" if (v - n_base) % 2 == 0 else f"load{(v - n_base) // 2}")
        elif v in set(sources.tolist()):
            names.append(f"in{v}")
        else:
            names.append(f"h{v}")
    return Circuit(
        node_names=tuple(names),
        resistor_nodes=resistor_nodes,
        conductance_s=conductance,
        source_nodes=torch.tensor(sources, dtype=torch.long),
        source_v=source_v,
        diodes=tuple(groups),
        amplifier_nodes=torch.tensor(amp_nodes, dtype=torch.long).reshape(-1, 2),
        gain=gain,
        current_gain=1.0 / gain,
        current_nodes=torch.tensor(current_nodes, dtype=torch.long),
        current_a=current_a,
    )
