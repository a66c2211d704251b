"""A flat circuit: nodes, and the elements between them, for a batch of circuits with one topology.

:class:`Circuit` is what the solvers take (the native batched solver and
ngspice); the functional API (:mod:`inmaterio.circuits.graph`) compiles a
model into one. Units are SI: volts, amperes, siemens. Node indices run
``0 .. n_nodes - 1``; :data:`GROUND` (-1) is the reference node (0 V).

Elements (index tensors are ``torch.long``; values are float64, either
shared by the whole batch (shape ``(k,)``) or per circuit (``(batch, k)``)):

* resistors ``resistor_nodes (R, 2)`` with ``conductance_s``;
* grounded voltage sources ``source_nodes (S,)`` with ``source_v``: each
  fixes one node's voltage (inputs, their inverted copies, biases);
* diode groups: one :class:`~inmaterio.circuits.elements.TwoTerminal` model
  per group, ``anode``/``cathode (D,)`` and a series bias ``bias_v (D,)``:
  the element sees ``V(anode) - V(cathode) - bias_v``;
* bidirectional amplifiers ``amplifier_nodes (A, 2)`` (input, output): the
  output is held at ``gain * V(input)`` by a voltage source to ground, and
  the current ``I`` it delivers is drawn back from the input node times
  ``current_gain`` (so a load on the output is felt at the input);
* current sources ``current_nodes (C,)`` injecting ``current_a`` into a node
  (EP's nudging currents).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from inmaterio.circuits.elements import TwoTerminal
from inmaterio.errors import ConfigError

__all__ = ["GROUND", "Circuit", "DiodeGroup", "ground_last", "real_tensor", "with_ground"]

GROUND = -1
DTYPE = torch.float64


def ground_last(index: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """Node indices with :data:`GROUND` mapped to ``n_nodes``: the extra, last column of :func:`with_ground`."""
    return torch.where(index == GROUND, n_nodes, index)


def with_ground(voltages_v: torch.Tensor) -> torch.Tensor:
    """``(batch, n_nodes)`` voltages -> ``(batch, n_nodes + 1)`` with ground (0 V) as the last column."""
    return torch.cat([voltages_v, voltages_v.new_zeros(voltages_v.shape[0], 1)], 1)


def real_tensor(x, what: str, error: type[Exception] = ConfigError) -> torch.Tensor:
    """``x`` (tensor, array, number, nested lists) as a tensor of real numbers.

    Tensors and arrays keep their dtype; Python numbers become float64 (never
    float32). Strings, objects and complex numbers raise ``error`` naming ``what``.
    """
    if isinstance(x, str | bytes):
        raise error(f"{what} must be real numbers, got the string {x[:40]!r}")
    try:
        t = torch.as_tensor(x) if isinstance(x, torch.Tensor | np.ndarray) else torch.as_tensor(x, dtype=DTYPE)
    except (TypeError, ValueError, RuntimeError) as err:
        try:
            complex_ = torch.as_tensor(x).is_complex()
        except (TypeError, ValueError, RuntimeError):
            complex_ = False
        if complex_:
            raise error(f"{what} must be real numbers, got complex values") from None
        raise error(f"{what} must be real numbers, got {type(x).__name__} ({' '.join(str(err).split())[:120]})") from None
    if t.is_complex() or t.dtype == torch.bool:
        raise error(f"{what} must be real numbers, got {'complex values' if t.is_complex() else 'booleans'} (dtype {t.dtype})")
    return t


def _long(x, what: str, shape_tail: tuple[int, ...]) -> torch.Tensor:
    if (
        isinstance(x, torch.Tensor)
        and x.dtype == torch.long
        and x.dim() == 1 + len(shape_tail)
        and tuple(x.shape[1:]) == shape_tail
    ):
        return x  # kept as is: solvers cache their bookkeeping per index tensor
    t = real_tensor(x, what)
    if t.dtype == torch.bool or t.dtype.is_floating_point and not (t == t.round()).all():
        raise ConfigError(f"{what} must be integer node indices, got dtype {t.dtype}")
    t = t.to(torch.long)
    if t.dim() == 1 + len(shape_tail) and tuple(t.shape[1:]) == shape_tail:
        return t
    if t.numel() % max(1, int(np.prod(shape_tail))):
        raise ConfigError(f"{what} must have shape (k, {', '.join(map(str, shape_tail))}), got {tuple(t.shape)}")
    return t.reshape(-1, *shape_tail)


def _values(x, what: str, count: int) -> torch.Tensor:
    t = real_tensor(x, what).to(DTYPE)
    if t.dim() == 0:
        t = t.expand(count)
    if t.dim() not in (1, 2) or t.shape[-1] != count:
        raise ConfigError(f"{what} must have shape ({count},) or (batch, {count}), got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        bad = (~torch.isfinite(t)).nonzero()[0].tolist()
        raise ConfigError(f"{what} has a non-finite value {t[tuple(bad)].item()} at index {bad}")
    return t


@dataclass(frozen=True)
class DiodeGroup:
    """Diodes sharing one element model: ``anode``, ``cathode``, ``bias_v`` of shape ``(D,)``."""

    model: TwoTerminal
    anode: torch.Tensor
    cathode: torch.Tensor
    bias_v: torch.Tensor

    def __post_init__(self) -> None:
        object.__setattr__(self, "anode", _long(self.anode, "diode anode", ()))
        object.__setattr__(self, "cathode", _long(self.cathode, "diode cathode", ()))
        object.__setattr__(self, "bias_v", _values(self.bias_v, "diode bias_v", self.anode.numel()))
        if self.cathode.shape != self.anode.shape:
            raise ConfigError(f"diode cathode has {self.cathode.numel()} entries, anode {self.anode.numel()}")
        if self.bias_v.dim() != 1:
            raise ConfigError("diode bias_v must be shared by the batch: shape (D,)")

    def __len__(self) -> int:
        return self.anode.numel()


def _empty_long(*shape: int) -> torch.Tensor:
    return torch.zeros(*shape, dtype=torch.long)


def _empty_values() -> torch.Tensor:
    return torch.zeros(0, dtype=DTYPE)


@dataclass(frozen=True)
class Circuit:
    """A batch of circuits with one topology (see the module docstring for the fields and units)."""

    node_names: tuple[str, ...]
    resistor_nodes: torch.Tensor = field(default_factory=lambda: _empty_long(0, 2))
    conductance_s: torch.Tensor = field(default_factory=_empty_values)
    source_nodes: torch.Tensor = field(default_factory=lambda: _empty_long(0))
    source_v: torch.Tensor = field(default_factory=_empty_values)
    diodes: tuple[DiodeGroup, ...] = ()
    amplifier_nodes: torch.Tensor = field(default_factory=lambda: _empty_long(0, 2))
    gain: torch.Tensor = field(default_factory=_empty_values)
    current_gain: torch.Tensor = field(default_factory=_empty_values)
    current_nodes: torch.Tensor = field(default_factory=lambda: _empty_long(0))
    current_a: torch.Tensor = field(default_factory=_empty_values)

    def __post_init__(self) -> None:
        names = tuple(str(n) for n in self.node_names)
        object.__setattr__(self, "node_names", names)
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(f"node names must be unique; repeated: {dup[:5]}")
        object.__setattr__(self, "resistor_nodes", _long(self.resistor_nodes, "resistor_nodes", (2,)))
        object.__setattr__(self, "source_nodes", _long(self.source_nodes, "source_nodes", ()))
        object.__setattr__(self, "amplifier_nodes", _long(self.amplifier_nodes, "amplifier_nodes", (2,)))
        object.__setattr__(self, "current_nodes", _long(self.current_nodes, "current_nodes", ()))
        object.__setattr__(self, "conductance_s", _values(self.conductance_s, "conductance_s", len(self.resistor_nodes)))
        object.__setattr__(self, "source_v", _values(self.source_v, "source_v", len(self.source_nodes)))
        object.__setattr__(self, "gain", _values(self.gain, "amplifier gain", len(self.amplifier_nodes)))
        object.__setattr__(self, "current_gain", _values(self.current_gain, "amplifier current_gain", len(self.amplifier_nodes)))
        object.__setattr__(self, "current_a", _values(self.current_a, "current_a", len(self.current_nodes)))
        object.__setattr__(self, "diodes", tuple(self.diodes))
        self._check_topology()

    # ------------------------------------------------------------------ checks
    def _node_label(self, i: int) -> str:
        return "ground" if i == GROUND else f"node {i} '{self.node_names[i]}'"

    def _check_indices(self, what: str, idx: torch.Tensor) -> None:
        n = self.n_nodes
        bad = (idx < GROUND) | (idx >= n)
        if bad.any():
            value = idx[bad][0].item()
            raise ConfigError(f"{what} refers to node {value}, outside [-1 (ground), {n - 1}]")

    def _check_topology(self) -> None:
        n = self.n_nodes
        for what, idx in (
            [
                ("resistor_nodes", self.resistor_nodes),
                ("source_nodes", self.source_nodes),
                ("amplifier_nodes", self.amplifier_nodes),
                ("current_nodes", self.current_nodes),
            ]
            + [(f"diode group {g} anode", d.anode) for g, d in enumerate(self.diodes)]
            + [(f"diode group {g} cathode", d.cathode) for g, d in enumerate(self.diodes)]
        ):
            self._check_indices(what, idx)
        if (self.conductance_s < 0).any():
            where = (self.conductance_s < 0).nonzero()[0]
            value = self.conductance_s[tuple(where)].item()
            raise ConfigError(f"resistor {int(where[-1])} conductance {value} S is negative (must be >= 0)")
        driven = torch.cat([self.source_nodes, self.amplifier_nodes[:, 1]])
        if (driven == GROUND).any():
            raise ConfigError("a voltage source or amplifier output is connected to ground")
        if driven.unique().numel() != driven.numel():
            counts = torch.bincount(driven, minlength=n)
            node = int(counts.argmax())
            raise ConfigError(f"{self._node_label(node)} is driven by more than one voltage source or amplifier output")
        self.amplifier_order()  # raises on loops of amplifiers
        # every node must reach ground or a driven node through resistors or diodes
        touched = np.zeros(n + 1, dtype=bool)
        touched[ground_last(self._edges(), n).numpy().flatten()] = True
        if not touched[:n].all():
            i = int(np.flatnonzero(~touched[:n])[0])
            raise ConfigError(f"{self._node_label(i)} is disconnected: no element is attached to it")
        floating = self.floating_nodes()
        if floating:
            raise ConfigError(
                f"{self._node_label(floating[0])} floats: no path of resistors or diodes to ground or to a "
                f"voltage source ({len(floating)} such nodes)"
            )

    def _edges(self, sample: int | None = None) -> torch.Tensor:
        """``(E, 2)`` node pairs joined by a resistor (of non-zero conductance in ``sample``, if given), a diode,
        or a voltage source / amplifier output to ground."""
        resistors = self.resistor_nodes
        if sample is not None and len(resistors):
            g = self.conductance_s if self.conductance_s.dim() == 1 else self.conductance_s[sample]
            resistors = resistors[g > 0]
        driven = torch.cat([self.source_nodes, self.amplifier_nodes[:, 1]])
        return torch.cat([resistors] + [torch.stack([d.anode, d.cathode], 1) for d in self.diodes]
                         + [torch.stack([driven, torch.full_like(driven, GROUND)], 1)])  # fmt: skip

    def floating_nodes(self, sample: int | None = None) -> list[int]:
        """Nodes without a path of resistors or diodes to ground or a driven node.

        With ``sample``, resistors of zero conductance in that sample count as open
        (such a circuit passes the topology check but has a singular matrix).
        """
        n = self.n_nodes
        edges = ground_last(self._edges(sample), n).numpy()
        graph = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n + 1, n + 1))
        _, labels = connected_components(graph, directed=False)
        return np.flatnonzero(labels[:n] != labels[n]).tolist()

    # -------------------------------------------------------------- properties
    @property
    def n_nodes(self) -> int:
        return len(self.node_names)

    @property
    def batch_size(self) -> int | None:
        """The batch size fixed by per-circuit values, or None if every value is shared."""
        sizes = {
            t.shape[0] for t in (self.conductance_s, self.source_v, self.gain, self.current_gain, self.current_a) if t.dim() == 2
        }
        if len(sizes) > 1:
            raise ConfigError(f"per-circuit values disagree on the batch size: {sorted(sizes)}")
        return sizes.pop() if sizes else None

    def node_index(self, name: str) -> int:
        try:
            return self.node_names.index(name)
        except ValueError:
            raise ConfigError(f"no node named {name!r}; nodes are {list(self.node_names[:10])}...") from None

    def amplifier_depths(self) -> list[int]:
        """For every amplifier, how many amplifiers lie upstream of it (its input is another's output, and so on)."""
        out_of = {int(o): k for k, o in enumerate(self.amplifier_nodes[:, 1].tolist())}
        depths = []
        for k, (i, _) in enumerate(self.amplifier_nodes.tolist()):
            seen, j, d = {k}, out_of.get(int(i)), 0
            while j is not None:
                if j in seen:
                    raise ConfigError(f"amplifiers form a loop through amplifier {k}")
                seen.add(j)
                d += 1
                j = out_of.get(int(self.amplifier_nodes[j, 0]))
            depths.append(d)
        return depths

    def amplifier_order(self) -> list[int]:
        """Amplifiers ordered downstream first (an amplifier driven by another's output comes before it)."""
        depths = self.amplifier_depths()
        return sorted(range(len(depths)), key=lambda k: -depths[k])

    def with_values(self, **values) -> Circuit:
        """A copy with value tensors replaced (``source_v``, ``current_a``, ``conductance_s``, ``gain``, ``current_gain``).

        The topology is shared with this circuit and not checked again; the
        new values are (shape, finiteness, sign of conductances).
        """
        counts = {
            "conductance_s": len(self.resistor_nodes),
            "source_v": len(self.source_nodes),
            "gain": len(self.amplifier_nodes),
            "current_gain": len(self.amplifier_nodes),
            "current_a": len(self.current_nodes),
        }
        unknown = set(values) - set(counts)
        if unknown:
            raise ConfigError(f"with_values can replace {sorted(counts)}, not {sorted(unknown)}")
        new = copy.copy(self)
        for name, value in values.items():
            object.__setattr__(new, name, _values(value, name, counts[name]))
        if "conductance_s" in values and (new.conductance_s < 0).any():
            where = (new.conductance_s < 0).nonzero()[0]
            raise ConfigError(
                f"resistor {int(where[-1])} conductance {new.conductance_s[tuple(where)].item()} S is negative (must be >= 0)"
            )
        new.batch_size  # noqa: B018 - raises if per-circuit values disagree
        return new

    def describe(self) -> str:
        d = sum(len(g) for g in self.diodes)
        return (
            f"{self.n_nodes} nodes, {len(self.resistor_nodes)} resistors, {len(self.source_nodes)} voltage sources, "
            f"{d} diodes, {len(self.amplifier_nodes)} amplifiers, {len(self.current_nodes)} current sources"
        )
