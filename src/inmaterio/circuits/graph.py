"""`Model(inputs, outputs)`: a graph of circuit layers compiled into one batched :class:`Circuit`.

The model walks the layer calls from its outputs back to its inputs, names
the layers that have no name (``dense_1``, ``dense_2``, ... in the order of
the walk, per model), gives every circuit node an index (names ``layer[i]``,
or ``layer#k[i]`` for the k-th call of a shared layer), collects the
elements each call adds, and owns the learnable parameters. Every output
node carries a current source (zero in the free phase) through which
Equilibrium Propagation nudges it.

The model is a :class:`torch.nn.Module`. Each learnable parameter ``θ``
(a conductance in siemens, a bias in volts) with bounds ``[low, high]`` is an
``nn.Parameter`` in *normalised* coordinates ``u = (θ - low) / (high - low)``,
kept in ``[0, 1]`` by :meth:`Model.constrain` after every optimiser step, so
that torch optimisers and LR schedulers work on them unchanged and a
learning rate means the same for every parameter (a fraction of its bound
width). With ``w = high - low`` and ``dL/du = w dL/dθ``:

* ``torch.optim.SGD``: ``Δθ = -lr w² dL/dθ``;
* ``torch.optim.SGD(momentum=μ)``: ``m = μ m + w dL/dθ``, ``Δθ = -lr w m``;
* ``torch.optim.Adam``: a step of about ``lr w`` in ``θ``.

:meth:`Model.parameter_values` / :meth:`Model.set_parameter_values` read and
write the physical values ``θ = low + w u`` by name (``"layer.param"``).

For Equilibrium Propagation the model also works out the circuit's *energy
weights*: nodes joined by resistors or diodes form a region; a bidirectional
amplifier from region ``r`` to region ``s`` makes ``k_s = k_r c / A``
(current gain ``c``, voltage gain ``A``; source-fed regions have ``k = 1``).
Then the DC operating point minimises ``sum_r k_r E_r`` (``E_r`` the
co-content of region ``r``) and the gradient estimates scale accordingly
(see :mod:`inmaterio.circuits.ep`). Amplifier gains with no consistent set of
weights (a loop of amplifiers through one region) leave EP without an energy
function: :attr:`Model.energy_problem` then says why.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from torch import nn

from inmaterio.circuits.layers import BiasLayer, InputLayer, Layer, LayerCall, Nodes, as_volts
from inmaterio.circuits.netlist import DTYPE, Circuit, DiodeGroup, ground_last, real_tensor, with_ground
from inmaterio.circuits.solve.native import DCSolution, SolverOptions, solve_dc
from inmaterio.errors import ConfigError, SimulationError, VoltageError

__all__ = ["Model"]


def _is_list_of_arrays(x) -> bool:
    """Whether ``x`` is a list/tuple of tensors or arrays (one per input), not nested lists of numbers."""
    return isinstance(x, list | tuple) and len(x) > 0 and all(isinstance(d, torch.Tensor | np.ndarray) for d in x)


def _as_list(x: Nodes | Sequence[Nodes], what: str) -> list[Nodes]:
    items = [x] if isinstance(x, Nodes) else list(x)
    if not items:
        raise ConfigError(f"Model needs at least one {what}")
    for k, n in enumerate(items):
        if not isinstance(n, Nodes):
            raise ConfigError(f"Model {what} {k} must be Nodes (the output of a layer), got {type(n).__name__}")
    return items


def _layer_names(layers: Sequence[Layer]) -> dict[Layer, str]:
    """Every layer's name in a model: its own, or ``<kind>_<k>`` counted per kind in the model's order."""
    given = [layer.name for layer in layers if layer.name]
    if len(set(given)) != len(given):
        raise ConfigError(f"layer names must be unique in a model; repeated: {sorted({n for n in given if given.count(n) > 1})}")
    taken, counts, names = set(given), {}, {}
    for layer in layers:
        if layer.name:
            names[layer] = layer.name
            continue
        kind = type(layer).__name__.lower().removesuffix("layer") or "layer"
        while True:
            counts[kind] = counts.get(kind, 0) + 1
            candidate = f"{kind}_{counts[kind]}"
            if candidate not in taken:
                break
        taken.add(candidate)
        names[layer] = candidate
    return names


@dataclass(frozen=True)
class ResistorSegment:
    """A run of the circuit's resistors whose conductances are entries of one parameter."""

    key: str
    start: int
    flat_index: torch.Tensor


class Model(nn.Module):
    """A circuit model built with the functional API (a :class:`torch.nn.Module`).

    Args:
        inputs: the :func:`~inmaterio.circuits.layers.Input` nodes, in the
            order the data will be given.
        outputs: the nodes whose voltages are the model's output (concatenated
            in order); they must not be voltage sources.
        seed: seeds the initial parameters.

    Attributes:
        normalised: ``layer name -> {parameter name -> nn.Parameter}``, the
            learnable parameters in normalised coordinates (see the module docstring);
            :meth:`parameters` yields them for an optimiser.
        bounds: ``"layer.param" -> (low, high)`` in the parameter's unit.
        layer_names: ``layer -> name`` in this model.
        learnable_sources: whether some bias sources are learnable.
        n_outputs: number of output nodes.
    """

    def __init__(self, inputs: Nodes | Sequence[Nodes], outputs: Nodes | Sequence[Nodes], *, seed: int = 0) -> None:
        super().__init__()
        self.inputs = _as_list(inputs, "input")
        self.outputs = _as_list(outputs, "output")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise ConfigError(f"Model seed must be an int, got {seed!r}")
        self.seed = int(seed)
        input_layers = []
        for k, x in enumerate(self.inputs):
            if x.call is None or not isinstance(x.call.layer, InputLayer):
                raise ConfigError(f"Model input {k} must be made by Input(...), got {x!r}")
            input_layers.append(x.call.layer)
        self.input_layers: list[InputLayer] = input_layers
        self.calls = self._ordered_calls()
        self.layers: list[Layer] = list(dict.fromkeys(c.layer for c in self.calls))
        self.layer_names = _layer_names(self.layers)
        for layer in self.layers:
            if isinstance(layer, InputLayer) and layer not in self.input_layers:
                raise ConfigError(
                    f"the outputs depend on Input '{self.layer_names[layer]}', which is not among the model's inputs"
                )
        for k, layer in enumerate(self.input_layers):
            if layer not in self.layers:
                raise ConfigError(f"model input {k} (Input {layer.label}) is not connected to the outputs")
        self._allocate()
        self.bounds: dict[str, tuple[float, float]] = {}
        self.normalised = nn.ModuleDict()
        # key -> (the nn.Parameter, low, high, width); the parameters change in place (optimisers, load_state_dict, .to)
        self._plan: dict[str, tuple[nn.Parameter, torch.Tensor, torch.Tensor, float]] = {}
        generator = torch.Generator().manual_seed(self.seed)
        for layer in self.layers:
            initial = layer.init_parameters(generator)
            if not initial:
                continue
            name = self.layer_names[layer]
            group = nn.ParameterDict()
            for pname, value in initial.items():
                lo, hi = (float(b) for b in layer.parameter_bounds()[pname])
                key = f"{name}.{pname}"
                self.bounds[key] = (lo, hi)
                group[pname] = param = nn.Parameter((value.to(DTYPE) - lo) / (hi - lo))
                self._plan[key] = (param, torch.tensor(lo, dtype=DTYPE), torch.tensor(hi, dtype=DTYPE), hi - lo)
            try:
                self.normalised[name] = group
            except KeyError:
                raise ConfigError(f"layer name {name!r} is reserved by torch.nn.ModuleDict; choose another") from None
        self.learnable_sources = any(isinstance(call.layer, BiasLayer) and call.layer.learnable for call, _ in self.source_calls)
        self._energy_weights()

    # ----------------------------------------------------------------- build
    def _ordered_calls(self) -> list[LayerCall]:
        order: list[LayerCall] = []
        seen: set[int] = set()
        stack: list[tuple[Nodes, bool]] = [(n, False) for n in reversed(self.outputs)]
        while stack:
            nodes, expanded = stack.pop()
            if nodes.call is None:  # a concatenation
                if not expanded:
                    stack.extend((p, False) for p in reversed(nodes.parts))
                continue
            call = nodes.call
            if id(call) in seen:
                continue
            if expanded:
                seen.add(id(call))
                order.append(call)
            else:
                stack.append((nodes, True))
                stack.extend((p, False) for p in reversed(call.inputs) if not (p.call and id(p.call) in seen))
        return order

    def _allocate(self) -> None:
        ids: dict[int, torch.Tensor] = {}
        names: list[str] = []
        resistors, segments, groups, amps, gains, cgains = [], [], [], [], [], []
        sources: list[tuple[LayerCall, torch.Tensor]] = []
        n_res = 0

        def node_ids(nodes: Nodes) -> torch.Tensor:
            if nodes.call is None:
                return torch.cat([node_ids(p) for p in nodes.parts])
            return ids[id(nodes.call)]

        for call in self.calls:
            layer = call.layer
            in_ids = [node_ids(x) for x in call.inputs]
            if layer.new_nodes:
                k = layer.calls.index(call)
                name = self.layer_names[layer]
                tag = name if len(layer.calls) == 1 else f"{name}#{k}"
                start = len(names)
                names.extend(f"{tag}[{i}]" for i in range(call.output.size))
                out = torch.arange(start, start + call.output.size)
            else:
                out = in_ids[0]
            ids[id(call)] = out
            if layer.makes_sources:
                sources.append((call, out))
            emitted = layer.emit(in_ids, out)
            if emitted.resistors is not None:
                pname, flat = emitted.resistor_param  # type: ignore[misc]
                segments.append(ResistorSegment(self.key(layer, pname), n_res, flat))
                resistors.append(emitted.resistors)
                n_res += len(emitted.resistors)
            for model, anode, cathode, bias in emitted.diodes:
                groups.append(DiodeGroup(model, anode, cathode, bias))
            if emitted.amplifiers is not None:
                amps.append(emitted.amplifiers)
                gains.append(emitted.gain)
                cgains.append(emitted.current_gain)

        self.node_names = tuple(names)
        self._node_ids = node_ids
        self.source_calls = sources
        self.output_ids = torch.cat([node_ids(o) for o in self.outputs])
        source_ids = torch.cat([ids for _, ids in sources]) if sources else torch.zeros(0, dtype=torch.long)
        is_source = torch.zeros(len(names), dtype=torch.bool)
        is_source[source_ids] = True
        if is_source[self.output_ids].any():
            k = int(is_source[self.output_ids].nonzero()[0])
            raise ConfigError(
                f"model output node '{names[int(self.output_ids[k])]}' is a voltage source; outputs must be circuit nodes"
            )
        self.segments = segments
        self._template = Circuit(
            self.node_names,
            resistor_nodes=torch.cat(resistors) if resistors else torch.zeros(0, 2, dtype=torch.long),
            conductance_s=torch.full((n_res,), 1e-6, dtype=DTYPE),
            source_nodes=source_ids,
            source_v=torch.zeros(len(source_ids), dtype=DTYPE),
            diodes=tuple(groups),
            amplifier_nodes=torch.cat(amps) if amps else torch.zeros(0, 2, dtype=torch.long),
            gain=torch.cat(gains) if gains else torch.zeros(0, dtype=DTYPE),
            current_gain=torch.cat(cgains) if cgains else torch.zeros(0, dtype=DTYPE),
            current_nodes=self.output_ids,
            current_a=torch.zeros(len(self.output_ids), dtype=DTYPE),
        )

    def _energy_weights(self) -> None:
        """Weights ``k`` of each node's region (see the module docstring)."""
        c = self._template
        n = c.n_nodes
        free = torch.ones(n, dtype=torch.bool)
        free[c.source_nodes] = False
        pairs = torch.cat([c.resistor_nodes] + [torch.stack([g.anode, g.cathode], 1) for g in c.diodes])
        ok = (pairs >= 0).all(1)
        ok[ok.clone()] = free[pairs[ok]].all(1)
        e = pairs[ok].numpy()
        graph = coo_matrix((np.ones(len(e)), (e[:, 0], e[:, 1])), shape=(n, n))
        _, region = connected_components(graph, directed=False)
        weight: dict[int, float] = {}
        self.energy_problem: str | None = None
        amp_in, amp_out = c.amplifier_nodes[:, 0].tolist(), c.amplifier_nodes[:, 1].tolist()
        ratio = (c.current_gain / c.gain).tolist()
        fed_regions = {int(region[o]) for o in amp_out}
        for _ in range(len(amp_in) + 1):  # relax until every fed region has its weight
            changed = False
            for k, (i, o) in enumerate(zip(amp_in, amp_out)):
                r_in = int(region[i]) if free[i] else None
                if r_in is not None and r_in in fed_regions and r_in not in weight:
                    continue  # its input region's weight is not known yet
                k_out = (weight.get(r_in, 1.0) if r_in is not None else 1.0) * ratio[k]
                r = int(region[o])
                if r not in weight:
                    weight[r] = k_out
                    changed = True
                elif not math.isclose(weight[r], k_out, rel_tol=1e-9) and self.energy_problem is None:
                    self.energy_problem = (
                        f"amplifiers into the region of node '{c.node_names[o]}' imply energy weights {weight[r]:.6g} "
                        f"and {k_out:.6g}: no energy function, so EP gradients are not exact"
                    )
            if not changed:
                break
        if fed_regions - set(weight) and self.energy_problem is None:
            self.energy_problem = "amplifiers form a loop through their regions: no energy function, EP is not exact"
        node_weight = torch.ones(n, dtype=DTYPE)
        for i in range(n):
            if free[i]:
                node_weight[i] = weight.get(int(region[i]), 1.0)
        self.node_weight = node_weight
        # an element's weight is its free end's (both ends known: weight 1, its energy is constant)
        free_weight = torch.where(free, node_weight, torch.zeros((), dtype=DTYPE))
        free_weight = torch.cat([free_weight, torch.zeros(1, dtype=DTYPE)])  # ground (index -1) is not free

        def element_weight(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            wa, wb = free_weight[a], free_weight[b]
            return torch.where(wa > 0, wa, torch.where(wb > 0, wb, torch.ones((), dtype=DTYPE)))

        self.resistor_weight = element_weight(c.resistor_nodes[:, 0], c.resistor_nodes[:, 1])
        self.diode_weight = [element_weight(g.anode, g.cathode) for g in c.diodes]
        self.output_weight = node_weight[self.output_ids]

    @property
    def n_outputs(self) -> int:
        """Number of output nodes."""
        return len(self.output_ids)

    # ------------------------------------------------------------ parameters
    def key(self, layer: Layer, parameter: str) -> str:
        """The name ``"layer.param"`` of a layer's parameter in this model."""
        return f"{self.layer_names[layer]}.{parameter}"

    def _parameter(self, key: str) -> nn.Parameter:
        return self._plan[key][0]

    def normalised_parameters(self) -> dict[str, nn.Parameter]:
        """``"layer.param" -> nn.Parameter`` in normalised coordinates ``u`` (what an optimiser updates)."""
        return {key: self._parameter(key) for key in self.bounds}

    def parameter_values(self) -> dict[str, torch.Tensor]:
        """``"layer.param" -> θ = low + (high - low) u`` (float64, physical units, detached from autograd).

        Computed with ``torch.lerp``, exact at both ends: ``u = 0`` gives ``low``, ``u = 1`` gives ``high``.
        """
        with torch.no_grad():
            return {key: torch.lerp(lo, hi, u) for key, (u, lo, hi, _) in self._plan.items()}

    def set_parameter_values(self, values: dict[str, torch.Tensor]) -> None:
        """Set parameters from physical values (checked: known name, shape, real and finite, inside bounds).

        Nothing changes on error. Values map to normalised coordinates to float64 rounding.
        """
        checked = {}
        for key, value in values.items():
            if key not in self.bounds:
                raise ConfigError(f"unknown parameter {key!r}; the model has {sorted(self.bounds)}")
            param = self._parameter(key)
            v = real_tensor(value, f"parameter {key!r}").to(DTYPE)
            if v.shape != param.shape:
                raise ConfigError(f"parameter {key!r} must have shape {tuple(param.shape)}, got {tuple(v.shape)}")
            if not torch.isfinite(v).all():
                idx = tuple((~torch.isfinite(v)).nonzero()[0].tolist())
                raise ConfigError(f"parameter {key!r}{list(idx)} is {v[idx].item()}: values must be finite")
            lo, hi = self.bounds[key]
            bad = (v < lo) | (v > hi)
            if bad.any():
                idx = tuple(bad.nonzero()[0].tolist())
                raise ConfigError(f"parameter {key!r}{list(idx)} = {v[idx].item():.4g} outside its bounds [{lo:.4g}, {hi:.4g}]")
            checked[key] = ((v - lo) / (hi - lo)).clamp(0.0, 1.0)
        with torch.no_grad():
            for key, u in checked.items():
                self._parameter(key).copy_(u)

    def constrain(self) -> None:
        """Clamp every normalised parameter into ``[0, 1]`` (its bounds), in place; call after each optimiser step."""
        with torch.no_grad():
            for u, _, _, _ in self._plan.values():
                u.clamp_(0.0, 1.0)

    def add_gradients(self, gradients: dict[str, torch.Tensor]) -> None:
        """Add gradients ``dL/dθ`` (physical units, by name) to the ``.grad`` of the normalised parameters.

        ``dL/du = (high - low) dL/dθ``; like ``backward()``, the gradients add to
        what ``.grad`` holds (``optimizer.zero_grad()`` clears it).

        Raises:
            SimulationError: a non-finite gradient (no ``.grad`` is changed).
        """
        unknown = set(gradients) - set(self.bounds)
        if unknown:
            raise ConfigError(f"gradients for unknown parameters {sorted(unknown)}; the model has {sorted(self.bounds)}")
        scaled = {}
        for key, g in gradients.items():
            u, _, _, width = self._plan[key]
            scaled[key] = g_u = g.to(u.device, DTYPE) * width
            if not torch.isfinite(g_u).all():
                raise SimulationError(f"the gradient of {key!r} is not finite; parameters left unchanged")
        for key, g_u in scaled.items():
            u = self._plan[key][0]
            u.grad = g_u if u.grad is None else u.grad + g_u

    def conductances(self, values: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``(R,)`` conductances of the circuit's resistors (S), gathered from the parameter values
        (default :meth:`parameter_values`; pass ``values`` to differentiate through them)."""
        values = self.parameter_values() if values is None else values
        parts = [values[s.key].reshape(-1)[s.flat_index] for s in self.segments]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=DTYPE)

    def scatter_resistor_values(self, per_resistor: torch.Tensor) -> dict[str, torch.Tensor]:
        """Sum per-resistor values ``(R,)`` into the conductance parameters they come from (shared layers add up)."""
        out = {}
        for s in self.segments:
            shape = self._parameter(s.key).shape
            flat = torch.zeros(math.prod(shape), dtype=DTYPE, device=per_resistor.device)
            flat.index_add_(0, s.flat_index.to(per_resistor.device), per_resistor[s.start : s.start + len(s.flat_index)])
            out[s.key] = out.get(s.key, 0) + flat.reshape(shape)
        return out

    def describe(self) -> dict[str, Any]:
        """The model's structure as plain data: layers (type, name, settings), parameter shapes and bounds, seed.

        Two models built the same way describe themselves the same way (the
        identity of a training run, the header of a parameter file).
        """
        layers = [
            json.loads(json.dumps({"type": type(layer).__name__, "name": self.layer_names[layer], **layer.config()}, default=str))
            for layer in self.layers
        ]
        parameters = {key: {"shape": list(self._parameter(key).shape), "bounds": list(b)} for key, b in self.bounds.items()}
        return {
            "layers": layers,
            "parameters": parameters,
            "inputs": [self.layer_names[x] for x in self.input_layers],
            "n_outputs": self.n_outputs,
            "circuit": self._template.describe(),
            "seed": self.seed,
        }

    # ----------------------------------------------------------------- solve
    def input_list(self, x) -> list[torch.Tensor]:
        """The data of every input as a list of float64 tensors (volts): ``x`` is one array (one input) or a list.

        Raises:
            VoltageError: a wrong number of data arrays, or data that are not real numbers.
        """
        names = [self.layer_names[layer] for layer in self.input_layers]
        if isinstance(x, torch.Tensor | np.ndarray) or len(names) == 1 and not _is_list_of_arrays(x):
            data = [x]
        elif isinstance(x, list | tuple):
            data = list(x)
        else:
            raise VoltageError(
                f"the model has {len(names)} inputs {names}: give a list of {len(names)} data arrays, got {type(x).__name__}"
            )
        if len(data) != len(names):
            raise VoltageError(f"the model has {len(names)} inputs {names}, got {len(data)} data arrays")
        return [as_volts(d, f"Input '{self.layer_names[layer]}' data") for layer, d in zip(self.input_layers, data)]

    def source_voltages(self, x, values: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``(batch, S)`` voltages of every source: the inputs (and inverted copies) and the biases.

        ``values``: parameter values to use for learnable biases (default :meth:`parameter_values`).
        """
        data = self.input_list(x)
        inputs = {id(layer): layer.voltages(d) for layer, d in zip(self.input_layers, data)}
        batch = {v.shape[0] for v in inputs.values()}
        if len(batch) != 1:
            raise VoltageError(f"every input needs the same batch size, got {[len(v) for v in inputs.values()]}")
        b = batch.pop()
        if values is None and self.learnable_sources:
            values = self.parameter_values()
        parts = []
        for call, _ in self.source_calls:
            layer = call.layer
            if isinstance(layer, InputLayer):
                parts.append(inputs[id(layer)])
            elif isinstance(layer, BiasLayer):
                v = values[self.key(layer, "voltage_v")] if layer.learnable else layer.initial_v
                parts.append(v.expand(b, -1))
        return torch.cat(parts, 1)

    def circuit(self, x, currents_a: torch.Tensor | None = None) -> Circuit:
        """The batch of circuits for data ``x`` with output currents ``currents_a (batch, n_outputs)`` A."""
        sv = self.source_voltages(x)
        cur = torch.zeros(sv.shape[0], len(self.output_ids), dtype=DTYPE) if currents_a is None else currents_a.to(DTYPE)
        return self._template.with_values(source_v=sv, current_a=cur, conductance_s=self.conductances())

    def solve(self, x, currents_a=None, *, initial_v=None, options: SolverOptions | None = None, device=None) -> DCSolution:
        """DC operating point for data ``x`` (``(batch, features)``, or a list for several inputs)."""
        return solve_dc(self.circuit(x, currents_a), initial_v=initial_v, options=options, device=device)

    def output_voltages(self, solution: DCSolution) -> torch.Tensor:
        """``(batch, n_outputs)`` voltages of the output nodes."""
        return solution.voltages_v[:, self.output_ids.to(solution.voltages_v.device)]

    def node_voltages(self, solution: DCSolution, nodes: Nodes) -> torch.Tensor:
        """``(batch, nodes.size)`` voltages of any node handle of this model."""
        try:
            ids = self._node_ids(nodes)
        except KeyError:
            raise ConfigError(f"{nodes!r} is not part of this model") from None
        return solution.voltages_v[:, ids.to(solution.voltages_v.device)]

    def predict(self, x, *, batch_size: int = 1024, options: SolverOptions | None = None, device=None) -> torch.Tensor:
        """``(batch, n_outputs)`` output voltages of the free circuits, solved ``batch_size`` at a time."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"predict batch_size must be an int >= 1, got {batch_size!r}")
        data = self.input_list(x)
        self.source_voltages(data)  # checks every sample, so an error names its index in x (not in a batch)
        n = len(data[0])
        outs = []
        for s in range(0, n, batch_size):
            sol = self.solve([d[s : s + batch_size] for d in data], options=options, device=device)
            outs.append(self.output_voltages(sol).cpu())
        return torch.cat(outs)

    # -------------------------------------------------------------- readouts
    def resistor_currents(self, solution: DCSolution) -> torch.Tensor:
        """``(batch, R)`` current through each resistor, from its first to its second node (A)."""
        v = with_ground(solution.voltages_v)
        rn = ground_last(self._template.resistor_nodes, v.shape[1] - 1).to(v.device)
        return self.conductances().to(v.device) * (v[:, rn[:, 0]] - v[:, rn[:, 1]])

    def power_w(self, solution: DCSolution) -> torch.Tensor:
        """``(batch,)`` power dissipated in the resistors and diodes (W)."""
        v = with_ground(solution.voltages_v)
        rn = ground_last(self._template.resistor_nodes, v.shape[1] - 1).to(v.device)
        g = self.conductances().to(v.device)
        p = (g * (v[:, rn[:, 0]] - v[:, rn[:, 1]]) ** 2).sum(1)
        for grp in self._template.diodes:
            u = (
                v[:, ground_last(grp.anode, v.shape[1] - 1).to(v.device)]
                - v[:, ground_last(grp.cathode, v.shape[1] - 1).to(v.device)]
            )
            p = p + (u * grp.model.current(u - grp.bias_v.to(v.device))).sum(1)
        return p

    def forward(self, x) -> torch.Tensor:
        """``(batch, n_outputs)`` output voltages of the free circuits (:meth:`predict`; not differentiable)."""
        return self.predict(x)

    def summary(self) -> str:
        """A table of the layers, their nodes and parameters."""
        lines = [f"{'layer':<18} {'type':<20} {'nodes':>7} {'parameters':>11}"]
        for layer in self.layers:
            nodes = sum(c.output.size for c in layer.calls) if layer.new_nodes else 0
            params = sum(int(np.prod(s)) for s in layer.parameter_shapes().values())
            lines.append(f"{self.layer_names[layer]:<18} {type(layer).__name__:<20} {nodes:>7} {params:>11}")
        lines.append(f"circuit: {self._template.describe()}")
        return "\n".join(lines)
