"""DC solver for layered resistive networks with ideal diodes: exact block coordinate descent over layers.

The network (Scellier, "A fast algorithm to simulate nonlinear resistive
networks", ICML 2024, the "deep resistive network"): layer 0 is a set of
input voltage sources ``x`` (volts); layers ``1 .. L`` are free nodes, the
last one the output. Consecutive layers ``k-1`` and ``k`` are joined by
non-negative conductances ``W_k`` of shape ``(n_k, n_{k-1})`` (siemens; row
``i`` holds the conductances of node ``i`` of layer ``k``). Every node of
layer ``k`` also receives a current ``b_k`` (amperes, positive *into* the
node) from a current source, and may carry ideal diodes to voltage sources
that keep its voltage inside a box ``[lo, hi]`` (volts, ``±inf`` allowed):
a diode from a source at ``lo`` into the node, and one from the node to a
source at ``hi``.

Steady state. The node voltages minimise the co-content ("power" in the
paper; watts)

.. math::

    E(v) = \\tfrac12 \\sum_{k=1}^{L} \\sum_{i,j} W_{k,ij} (v_{k,i} - v_{k-1,j})^2
           - \\sum_{k=1}^{L} b_k \\cdot v_k + \\tfrac{\\beta}{2} \\lVert v_L - y \\rVert^2

subject to ``lo_k <= v_k <= hi_k`` (the ideal diodes), with ``v_0 = x``
fixed. The last term is EP's nudging of the outputs towards a target ``y``
with strength ``beta`` (siemens): physically a conductance ``beta`` from
every output node to a voltage source at ``y`` (``beta = 0``: the free
phase; ``beta < 0`` is allowed for symmetric EP as long as the output nodes
keep a positive total conductance). Its gradient ``beta (v_L - y)`` is
linear, so the output layer stays a quadratic block.

Stationarity: ``-dE/dv_{k,i} = sum_j W_{k,ij} (v_{k-1,j} - v_{k,i}) +
sum_l W_{k+1,li} (v_{k+1,l} - v_{k,i}) + b_{k,i} [- beta (v_{L,i} - y_i)]``
is the current ``I_{k,i}`` that the resistors, the current source and the
nudging load deliver into the node. The KKT conditions of the box-constrained
problem are then

* ``lo < v < hi`` (diodes off): ``I = 0`` (Kirchhoff's current law);
* ``v = lo`` (lower diode on): ``I <= 0`` — the network draws current out of
  the node, the diode delivers ``-I >= 0`` into it;
* ``v = hi`` (upper diode on): ``I >= 0`` — the diode sinks ``I``.

Block coordinate descent. Given its neighbouring layers, ``E`` is a separable
quadratic in the voltages of one layer, so the exact minimiser over that
layer (with its box) is, node by node,

.. math::

    v_{k,i} = \\mathrm{clip}\\Big(\\frac{\\sum_j W_{k,ij} v_{k-1,j} + \\sum_l W_{k+1,li} v_{k+1,l} + b_{k,i}
              [+ \\beta y_i]}{\\sum_j W_{k,ij} + \\sum_l W_{k+1,li} [+ \\beta]}, lo_{k,i}, hi_{k,i}\\Big)

(the bracketed terms for the output layer only). Layers of one parity do not
interact, so one *sweep* sets all odd layers at once, then all even ones:
each half-sweep is an exact minimisation over a block of variables, so ``E``
never increases, and for a strictly convex ``E`` (every free node has a
positive total conductance) the sweeps converge to the unique minimum. One
sweep costs two matrix products per conductance matrix per sample:
O(conductances x batch), against O(nodes^2) or worse for Newton with dense
solves (:func:`~inmaterio.circuits.solve.native.solve_dc`, kept for general
circuits).

Choices made here (the paper leaves them open or fixes them otherwise):
the bias is a current source per node rather than a conductance to a bias
voltage; the stopping rule is the largest voltage change in one sweep
(``tol_v``), and the KKT residual at the end is reported in amperes; the
input drive ``W_1 x + b_1`` is computed once per solve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from inmaterio.errors import ConfigError, SimulationError, VoltageError

__all__ = [
    "KKTResiduals",
    "LayeredNetwork",
    "LayeredSolution",
    "diode_boxes",
    "kkt_residuals",
    "layered_energy_w",
    "solve_layered",
]

DTYPE = torch.float64
_KINDS = ("split", "lower", "upper", "both", "none")


def diode_boxes(
    n: int, kind: str = "split", *, lower_v: float = 0.0, upper_v: float = 0.0, dtype: torch.dtype = DTYPE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Voltage boxes ``(lo (n,), hi (n,))`` (V) of one layer's diodes.

    Args:
        n: nodes of the layer.
        kind: ``"split"``: the first ``ceil(n/2)`` nodes are bounded below by
            ``lower_v`` (excitatory, a ReLU-like unit), the others above by
            ``upper_v`` (inhibitory); ``"lower"``/``"upper"``: every node bounded
            on that side; ``"both"``: ``[lower_v, upper_v]`` (a hard-tanh);
            ``"none"``: no diodes (``±inf``).
        lower_v, upper_v: the thresholds in volts.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"diode_boxes n must be a positive int, got {n!r}")
    if kind not in _KINDS:
        raise ConfigError(f"diode_boxes kind must be one of {_KINDS}, got {kind!r}")
    lo = torch.full((n,), -math.inf, dtype=dtype)
    hi = torch.full((n,), math.inf, dtype=dtype)
    half = (n + 1) // 2
    if kind in ("lower", "both"):
        lo[:] = lower_v
    if kind in ("upper", "both"):
        hi[:] = upper_v
    if kind == "split":
        lo[:half] = lower_v
        hi[half:] = upper_v
    if kind == "both" and lower_v > upper_v:
        raise ConfigError(f"diode_boxes kind 'both' needs lower_v <= upper_v, got {lower_v} V > {upper_v} V")
    return lo, hi


def _tensor(value, what: str, dtype: torch.dtype, error: type[Exception]) -> torch.Tensor:
    if isinstance(value, str) or value is None:
        raise error(f"{what} must be a tensor of real numbers, got {value!r}")
    try:
        t = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise error(f"{what} must be a tensor of real numbers, got {type(value).__name__}: {exc}") from None
    if t.is_complex() or t.dtype == torch.bool:
        raise error(f"{what} must hold real numbers, got dtype {t.dtype}")
    return t.to(dtype)


def _first_bad(mask: torch.Tensor) -> list[int]:
    return mask.nonzero()[0].tolist()


class LayeredNetwork:
    """A layered resistive network with per-node diode boxes; validated once, reused by every solve.

    Args:
        weights_s: ``L`` conductance matrices; ``weights_s[k-1]`` is ``W_k`` of shape
            ``(n_k, n_{k-1})`` in siemens (``>= 0``, finite); ``n_0`` is the number of inputs.
        biases_a: ``L`` current vectors ``(n_k,)`` in amperes injected into the nodes
            (None: no current sources).
        boxes_v: ``L`` pairs ``(lo (n_k,), hi (n_k,))`` in volts (``±inf`` allowed,
            ``lo <= hi``), or None for a layer (or the whole argument) without diodes.
        dtype: floating type of the solve (float64 by default).

    Attributes:
        weights_s, biases_a, lower_v, upper_v: tuples of tensors, one per layer ``1 .. L``.
        sizes: ``(n_0, n_1, ..., n_L)``.
        degree_s: tuple of ``(n_k,)``: total conductance at each node of layer ``k``
            (without the nudging load).

    Raises:
        ConfigError: naming the layer and node of a negative, NaN or infinite
            conductance, a non-finite bias, ``lo > hi``, a NaN bound, a shape
            mismatch, or a node without any conductance.
    """

    def __init__(self, weights_s: Sequence, biases_a: Sequence | None = None, boxes_v: Sequence | None = None, *, dtype=DTYPE):
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ConfigError(f"LayeredNetwork dtype must be a floating torch dtype, got {dtype!r}")
        if isinstance(weights_s, torch.Tensor) or not isinstance(weights_s, Sequence) or len(weights_s) == 0:
            raise ConfigError("LayeredNetwork weights_s must be a non-empty sequence of (n_k, n_{k-1}) tensors, one per layer")
        self.dtype = dtype
        n_layers = len(weights_s)
        weights = []
        sizes = []
        for k, w in enumerate(weights_s, start=1):
            w = _tensor(w, f"weights_s of layer {k}", dtype, ConfigError)
            if w.dim() != 2 or 0 in w.shape:
                raise ConfigError(
                    f"weights_s of layer {k} must be a non-empty matrix (n_{k}, n_{k - 1}), got shape {tuple(w.shape)}"
                )
            if k == 1:
                sizes.append(w.shape[1])
            elif w.shape[1] != sizes[-1]:
                raise ConfigError(
                    f"weights_s of layer {k} has shape {tuple(w.shape)}: its {w.shape[1]} columns must match the "
                    f"{sizes[-1]} nodes of layer {k - 1}"
                )
            bad = ~torch.isfinite(w) | (w < 0)
            if bad.any():
                i, j = _first_bad(bad)
                raise ConfigError(
                    f"conductance W_{k}[{i}, {j}] (node {i} of layer {k} to node {j} of layer {k - 1}) is "
                    f"{w[i, j].item():.6g} S: conductances must be finite and >= 0"
                )
            sizes.append(w.shape[0])
            weights.append(w)
        self.weights_s = tuple(weights)
        self.sizes = tuple(int(s) for s in sizes)
        device = weights[0].device
        if any(w.device != device for w in weights):
            raise ConfigError(f"weights_s must all be on one device, got {[str(w.device) for w in weights]}")

        if biases_a is None:
            biases_a = [None] * n_layers
        if isinstance(biases_a, torch.Tensor) or not isinstance(biases_a, Sequence) or len(biases_a) != n_layers:
            raise ConfigError(
                f"LayeredNetwork biases_a must be a sequence of {n_layers} (n_k,) tensors (or None), got {biases_a!r}"
            )
        biases = []
        for k, b in enumerate(biases_a, start=1):
            n = self.sizes[k]
            b = torch.zeros(n, dtype=dtype) if b is None else _tensor(b, f"biases_a of layer {k}", dtype, ConfigError)
            b = b.to(device)
            if tuple(b.shape) != (n,):
                raise ConfigError(f"biases_a of layer {k} must have shape ({n},), got {tuple(b.shape)}")
            if not torch.isfinite(b).all():
                (i,) = _first_bad(~torch.isfinite(b))
                raise ConfigError(f"bias current of node {i} of layer {k} is {b[i].item():.6g} A: must be finite")
            biases.append(b)
        self.biases_a = tuple(biases)

        if boxes_v is None:
            boxes_v = [None] * n_layers
        if isinstance(boxes_v, torch.Tensor) or not isinstance(boxes_v, Sequence) or len(boxes_v) != n_layers:
            raise ConfigError(
                f"LayeredNetwork boxes_v must be a sequence of {n_layers} (lo, hi) pairs (or None), got {boxes_v!r}"
            )
        lows, highs = [], []
        for k, box in enumerate(boxes_v, start=1):
            n = self.sizes[k]
            if box is None:
                lo = torch.full((n,), -math.inf, dtype=dtype, device=device)
                hi = torch.full((n,), math.inf, dtype=dtype, device=device)
            else:
                if isinstance(box, torch.Tensor) or not isinstance(box, Sequence) or len(box) != 2:
                    raise ConfigError(f"boxes_v of layer {k} must be a pair (lo, hi) of ({n},) tensors, got {type(box).__name__}")
                lo = _tensor(box[0], f"lower bounds of layer {k}", dtype, ConfigError).to(device)
                hi = _tensor(box[1], f"upper bounds of layer {k}", dtype, ConfigError).to(device)
                for what, t in (("lower", lo), ("upper", hi)):
                    if tuple(t.shape) != (n,):
                        raise ConfigError(f"{what} bounds of layer {k} must have shape ({n},), got {tuple(t.shape)}")
                    if torch.isnan(t).any():
                        (i,) = _first_bad(torch.isnan(t))
                        raise ConfigError(f"{what} bound of node {i} of layer {k} is NaN (use ±inf for no diode)")
                bad = (lo > hi) | (lo == math.inf) | (hi == -math.inf)
                if bad.any():
                    (i,) = _first_bad(bad)
                    raise ConfigError(
                        f"node {i} of layer {k} has the empty or unreachable box [{lo[i].item():.6g}, {hi[i].item():.6g}] V: need lo <= hi"
                    )
            lows.append(lo)
            highs.append(hi)
        self.lower_v = tuple(lows)
        self.upper_v = tuple(highs)

        degrees = []
        for k in range(1, n_layers + 1):
            d = self.weights_s[k - 1].sum(1)
            if k < n_layers:
                d = d + self.weights_s[k].sum(0)
            degrees.append(d)
        self.degree_s = tuple(degrees)
        for k, d in enumerate(degrees, start=1):
            if (d <= 0).any():
                (i,) = _first_bad(d <= 0)
                raise ConfigError(
                    f"node {i} of layer {k} has no conductance to any neighbour (total {d[i].item():.6g} S): its voltage is undefined"
                )

    @classmethod
    def unchecked(cls, weights_s: Sequence[torch.Tensor], biases_a: Sequence[torch.Tensor],
                  lower_v: Sequence[torch.Tensor], upper_v: Sequence[torch.Tensor]) -> LayeredNetwork:  # fmt: skip
        """A network from tensors already of one dtype and device, without validation.

        For callers that keep the invariants themselves (conductances finite and ``>= 0``, every node
        connected, ``lo <= hi``) and solve many times per second; a violated invariant shows up as NaN or
        infinite voltages, and building the network with the validating constructor then names the culprit.
        """
        net = object.__new__(cls)
        net.weights_s, net.biases_a = tuple(weights_s), tuple(biases_a)
        net.lower_v, net.upper_v = tuple(lower_v), tuple(upper_v)
        net.dtype = net.weights_s[0].dtype
        net.sizes = (net.weights_s[0].shape[1], *(w.shape[0] for w in net.weights_s))
        L = len(net.weights_s)
        net.degree_s = tuple(net.weights_s[k].sum(1) + (net.weights_s[k + 1].sum(0) if k + 1 < L else 0.0) for k in range(L))
        return net

    @property
    def n_layers(self) -> int:
        """``L``: the number of layers of free nodes (hidden layers and the output)."""
        return len(self.weights_s)

    @property
    def n_conductances(self) -> int:
        """Number of conductances (the cost of one sweep per sample is proportional to it)."""
        return sum(w.numel() for w in self.weights_s)

    def to(self, device: torch.device | str) -> LayeredNetwork:
        """A copy on ``device`` (not validated again)."""
        new = object.__new__(LayeredNetwork)
        new.__dict__.update(self.__dict__)
        for name in ("weights_s", "biases_a", "lower_v", "upper_v", "degree_s"):
            setattr(new, name, tuple(t.to(device) for t in getattr(self, name)))
        return new

    def __repr__(self) -> str:
        return f"LayeredNetwork(sizes={list(self.sizes)}, conductances={self.n_conductances})"


@dataclass(frozen=True)
class LayeredSolution:
    """Steady state of a batch of layered networks.

    Attributes:
        voltages_v: one ``(batch, n_k)`` tensor per layer ``k = 1 .. L`` (volts); the last is the output.
        sweeps: sweeps done (each sweep updates every layer once).
        max_change_v: largest voltage change of any node in the last sweep.
        max_residual_a: largest KKT residual (see :func:`kkt_residuals`) over nodes and samples, in amperes
            (NaN when the solve was asked not to compute it).
        converged: whether ``max_change_v <= tol_v``.
        energy_history_w: ``(sweeps + 1, batch)`` co-content before the first and after every sweep
            (only when asked for; watts).
        input_drive_a: ``(batch, n_1)``: ``W_1 x`` (A), reusable by a later solve with the same inputs
            and conductances (``input_drive_a=``).
    """

    voltages_v: tuple[torch.Tensor, ...]
    sweeps: int
    max_change_v: float
    max_residual_a: float
    converged: bool
    energy_history_w: torch.Tensor | None = None
    input_drive_a: torch.Tensor | None = None

    @property
    def output_v(self) -> torch.Tensor:
        """``(batch, n_L)`` output voltages."""
        return self.voltages_v[-1]


@dataclass(frozen=True)
class KKTResiduals:
    """Optimality conditions of a candidate steady state.

    Attributes:
        currents_a: per layer ``(batch, n_k)``: the current ``I`` the resistors, the bias source and the
            nudging load deliver into each node (amperes). At the steady state it is 0 at nodes off
            their bounds and minus the current of the conducting diode at clamped nodes.
        residual_a: per layer ``(batch, n_k)``: ``|I|`` at nodes strictly inside their box,
            ``max(I, 0)`` at a node on its lower bound (there ``I <= 0`` must hold), ``max(-I, 0)`` on its
            upper bound, 0 where ``lo = hi``.
        bound_violation_v: per layer ``(batch, n_k)``: how far each voltage lies outside its box (volts).
    """

    currents_a: tuple[torch.Tensor, ...]
    residual_a: tuple[torch.Tensor, ...]
    bound_violation_v: tuple[torch.Tensor, ...]

    @property
    def max_residual_a(self) -> float:
        return max(float(r.max()) for r in self.residual_a)

    @property
    def max_bound_violation_v(self) -> float:
        return max(float(r.max()) for r in self.bound_violation_v)


def _network(weights, biases, boxes, dtype) -> LayeredNetwork:
    if isinstance(weights, LayeredNetwork):
        if biases is not None or boxes is not None:
            raise ConfigError("give biases and boxes inside the LayeredNetwork, not beside it")
        return weights
    return LayeredNetwork(weights, biases, boxes, dtype=dtype)


def _inputs(x, net: LayeredNetwork, device) -> torch.Tensor:
    x = _tensor(x, "input voltages x", net.dtype, VoltageError).to(device)
    if x.dim() != 2 or x.shape[1] != net.sizes[0] or x.shape[0] == 0:
        raise VoltageError(f"input voltages x must have shape (batch >= 1, {net.sizes[0]}), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        s, f = _first_bad(~torch.isfinite(x))
        raise VoltageError(f"input voltage {f} of sample {s} is {x[s, f].item():.6g} V: must be finite")
    return x


def _nudge(beta, target, net: LayeredNetwork, batch: int, device) -> tuple[float, torch.Tensor | None]:
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not math.isfinite(beta):
        raise ConfigError(f"beta must be a finite number (siemens), got {beta!r}")
    beta = float(beta)
    if beta == 0.0:
        return 0.0, None
    if target is None:
        raise VoltageError(f"beta = {beta} S nudges the outputs, so a target (batch, {net.sizes[-1]}) in volts is needed")
    y = _tensor(target, "target", net.dtype, VoltageError).to(device)
    if tuple(y.shape) != (batch, net.sizes[-1]):
        raise VoltageError(f"target must have shape ({batch}, {net.sizes[-1]}), got {tuple(y.shape)}")
    if not torch.isfinite(y).all():
        s, f = _first_bad(~torch.isfinite(y))
        raise VoltageError(f"target {f} of sample {s} is {y[s, f].item():.6g} V: must be finite")
    d = net.degree_s[-1].to(device) + beta
    if (d <= 0).any():
        (i,) = _first_bad(d <= 0)
        raise ConfigError(
            f"beta = {beta} S leaves output node {i} with total conductance {d[i].item():.6g} S <= 0: "
            f"the nudged problem has no minimum (|beta| must stay below the output nodes' conductances)"
        )
    return beta, y


def _voltages(v, net: LayeredNetwork, batch: int, device, what: str) -> list[torch.Tensor]:
    if isinstance(v, torch.Tensor) or not isinstance(v, Sequence) or len(v) != net.n_layers:
        raise VoltageError(f"{what} must be a sequence of {net.n_layers} (batch, n_k) tensors, one per layer")
    out = []
    for k, t in enumerate(v, start=1):
        t = _tensor(t, f"{what} of layer {k}", net.dtype, VoltageError).to(device)
        if tuple(t.shape) != (batch, net.sizes[k]):
            raise VoltageError(f"{what} of layer {k} must have shape ({batch}, {net.sizes[k]}), got {tuple(t.shape)}")
        if not torch.isfinite(t).all():
            s, i = _first_bad(~torch.isfinite(t))
            raise VoltageError(f"{what} of node {i} of layer {k}, sample {s}, is {t[s, i].item():.6g} V: must be finite")
        out.append(t)
    return out


def _energy(x, net: LayeredNetwork, v: Sequence[torch.Tensor], beta: float, y) -> torch.Tensor:
    """Co-content ``(batch,)`` by the expanded squares (one matrix product per layer)."""
    e = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    prev = x
    for w, b, vk in zip(net.weights_s, net.biases_a, v):
        # sum_ij W_ij (v_i - u_j)^2 = sum_i v_i^2 (W 1)_i + sum_j u_j^2 (1^T W)_j - 2 v^T W u
        e = e + 0.5 * (vk.square() @ w.sum(1) + prev.square() @ w.sum(0) - 2.0 * ((vk @ w) * prev).sum(1)) - vk @ b
        prev = vk
    if beta != 0.0:
        e = e + 0.5 * beta * (v[-1] - y).square().sum(1)
    return e


def layered_energy_w(x, weights, biases=None, boxes=None, *, voltages_v, beta: float = 0.0, target=None, dtype=DTYPE):
    """Co-content ``E(v)`` (watts) of a candidate state, ``(batch,)`` (the function the solver minimises).

    Args:
        x: ``(batch, n_0)`` input voltages (V).
        weights, biases, boxes: as for :class:`LayeredNetwork` (or a ``LayeredNetwork`` as ``weights``).
        voltages_v: one ``(batch, n_k)`` tensor per layer ``1 .. L`` (V).
        beta, target: the nudging (S, V), as for :func:`solve_layered`.
    """
    net = _network(weights, biases, boxes, dtype)
    device = net.weights_s[0].device
    x = _inputs(x, net, device)
    beta, y = _nudge(beta, target, net, x.shape[0], device)
    v = _voltages(voltages_v, net, x.shape[0], device, "voltages_v")
    return _energy(x, net, v, beta, y)


def _currents(x, net: LayeredNetwork, v: Sequence[torch.Tensor], beta: float, y) -> list[torch.Tensor]:
    """Net current into every node (A): ``W_k v_{k-1} + W_{k+1}^T v_{k+1} - D_k v_k + b_k [- beta (v_L - y)]``."""
    out = []
    layers = [x, *v]
    for k in range(1, net.n_layers + 1):
        i = layers[k - 1] @ net.weights_s[k - 1].T - layers[k] * net.degree_s[k - 1] + net.biases_a[k - 1]
        if k < net.n_layers:
            i = i + layers[k + 1] @ net.weights_s[k]
        elif beta != 0.0:
            i = i - beta * (layers[k] - y)
        out.append(i)
    return out


def _residuals(net: LayeredNetwork, v, currents) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    res, viol = [], []
    for vk, i, lo, hi in zip(v, currents, net.lower_v, net.upper_v):
        at_lo, at_hi = vk <= lo, vk >= hi
        r = i.abs()
        r = torch.where(at_lo, torch.relu(i), r)
        r = torch.where(at_hi, torch.relu(-i), r)
        r = torch.where(at_lo & at_hi, torch.zeros_like(r), r)
        res.append(r)
        viol.append(torch.relu(lo - vk) + torch.relu(vk - hi))
    return res, viol


def kkt_residuals(
    x, weights, biases=None, boxes=None, *, voltages_v, beta: float = 0.0, target=None, dtype=DTYPE
) -> KKTResiduals:
    """KKT residuals of a candidate steady state (see the module docstring for the conditions and signs).

    A node counts as on a bound when its voltage equals it (or lies beyond it); the
    solver's clipping puts clamped nodes exactly on their bound.

    Args:
        x: ``(batch, n_0)`` input voltages (V).
        weights, biases, boxes: as for :class:`LayeredNetwork` (or a ``LayeredNetwork`` as ``weights``).
        voltages_v: one ``(batch, n_k)`` tensor per layer ``1 .. L`` (V).
        beta, target: the nudging (S, V), as for :func:`solve_layered`.

    Returns:
        the :class:`KKTResiduals` (currents in amperes, bound violations in volts).
    """
    net = _network(weights, biases, boxes, dtype)
    device = net.weights_s[0].device
    x = _inputs(x, net, device)
    beta, y = _nudge(beta, target, net, x.shape[0], device)
    v = _voltages(voltages_v, net, x.shape[0], device, "voltages_v")
    currents = _currents(x, net, v, beta, y)
    res, viol = _residuals(net, v, currents)
    return KKTResiduals(tuple(currents), tuple(res), tuple(viol))


def solve_layered(
    x,
    weights,
    biases=None,
    boxes=None,
    *,
    beta: float = 0.0,
    target=None,
    tol_v: float = 1e-10,
    max_sweeps: int = 10_000,
    v_init: Sequence[torch.Tensor] | None = None,
    check: bool = True,
    record_energy: bool = False,
    kkt: bool = True,
    input_drive_a: torch.Tensor | None = None,
    dtype: torch.dtype = DTYPE,
) -> LayeredSolution:
    """Steady state of a batch of layered networks with ideal diodes, by exact block coordinate descent.

    Args:
        x: ``(batch, n_0)`` input voltages (V).
        weights: ``L`` conductance matrices ``(n_k, n_{k-1})`` (S), or a :class:`LayeredNetwork`
            (then ``biases`` and ``boxes`` stay None; reuse one to skip the validation).
        biases: ``L`` bias currents ``(n_k,)`` (A, into the nodes), or None.
        boxes: ``L`` pairs ``(lo (n_k,), hi (n_k,))`` (V) or None per layer / overall (no diodes);
            see :func:`diode_boxes`.
        beta: nudging conductance (S) from every output node to a source at ``target``;
            0 for the free phase, negative for the second nudged phase of symmetric EP.
        target: ``(batch, n_L)`` target voltages (V), needed when ``beta != 0``.
        tol_v: stop when no node moves by more than this in one sweep (V); 0 runs exactly
            ``max_sweeps`` sweeps (the change is then measured in the last one only).
        max_sweeps: sweeps before giving up.
        v_init: one ``(batch, n_k)`` tensor per layer to start from (e.g. the free phase's
            voltages for a nudged phase); default 0 V clipped into each box.
        check: raise :class:`~inmaterio.errors.SimulationError` when not converged; with False,
            return the last iterate with ``converged=False``.
        record_energy: also return the co-content before and after every sweep.
        kkt: compute the KKT residual of the result (about one sweep's cost); with False,
            ``max_residual_a`` is NaN unless the solve failed.
        input_drive_a: ``(batch, n_1)`` the current ``W_1 x`` (A) the inputs drive into layer 1, from an
            earlier solution (:attr:`LayeredSolution.input_drive_a`) with the same ``x`` and conductances,
            to skip that product (the largest one of a solve for wide inputs).
        dtype: floating type when ``weights`` is not yet a ``LayeredNetwork``.

    Returns:
        the :class:`LayeredSolution`.

    Raises:
        ConfigError: invalid network (see :class:`LayeredNetwork`), ``beta``, tolerances.
        VoltageError: inputs, targets or initial voltages of a wrong shape or not finite.
        SimulationError: no convergence within ``max_sweeps`` (when ``check``).
    """
    net = _network(weights, biases, boxes, dtype)
    if not (isinstance(tol_v, int | float) and not isinstance(tol_v, bool) and tol_v >= 0 and math.isfinite(tol_v)):
        raise ConfigError(f"tol_v must be a finite number of volts >= 0, got {tol_v!r}")
    if isinstance(max_sweeps, bool) or not isinstance(max_sweeps, int) or max_sweeps < 1:
        raise ConfigError(f"max_sweeps must be an int >= 1, got {max_sweeps!r}")
    device = net.weights_s[0].device
    x = _inputs(x, net, device)
    batch = x.shape[0]
    beta, y = _nudge(beta, target, net, batch, device)
    L = net.n_layers
    W, lo, hi = net.weights_s, net.lower_v, net.upper_v

    if v_init is None:
        v = [torch.zeros(batch, n, dtype=net.dtype, device=device).clamp(lo[k], hi[k]) for k, n in enumerate(net.sizes[1:])]
    else:
        v = [t.clamp(lo[k], hi[k]) for k, t in enumerate(_voltages(v_init, net, batch, device, "v_init"))]

    # Per node: numerator constants and denominator. Layer 1's input drive W_1 x is fixed for the whole solve.
    if input_drive_a is None:
        drive = x @ W[0].T
    else:
        drive = _tensor(input_drive_a, "input_drive_a", net.dtype, VoltageError).to(device)
        if tuple(drive.shape) != (batch, net.sizes[1]):
            raise VoltageError(f"input_drive_a must have shape ({batch}, {net.sizes[1]}), got {tuple(drive.shape)}")
    const = [b.expand(batch, -1).clone() for b in net.biases_a]
    const[0] = const[0] + drive
    denom = list(net.degree_s)
    if beta != 0.0:
        const[-1] = const[-1] + beta * y
        denom[-1] = denom[-1] + beta
    inv_denom = [1.0 / d for d in denom]

    history = [_energy(x, net, v, beta, y)] if record_energy else None
    change = math.inf
    sweeps = 0
    while sweeps < max_sweeps:
        sweeps += 1
        track = tol_v > 0 or sweeps == max_sweeps
        change_t = torch.zeros((), dtype=net.dtype, device=device)
        for first in (1, 2):  # odd layers, then even layers (1-based layer index k; v[k-1] holds layer k)
            for k in range(first, L + 1, 2):
                num = const[k - 1]
                if k > 1:
                    num = num + v[k - 2] @ W[k - 1].T
                if k < L:
                    num = num + v[k] @ W[k]
                new = torch.clamp(num * inv_denom[k - 1], lo[k - 1], hi[k - 1])
                if track:
                    change_t = torch.maximum(change_t, (new - v[k - 1]).abs().max())
                v[k - 1] = new
        if history is not None:
            history.append(_energy(x, net, v, beta, y))
        if track:
            change = float(change_t)
            if change <= tol_v or math.isnan(change):
                break
    converged = change <= tol_v
    max_res = math.nan
    if kkt or (check and not converged):
        res, _ = _residuals(net, v, _currents(x, net, v, beta, y))
        max_res = max(float(r.max()) for r in res)
    if check and not converged:
        raise SimulationError(
            f"layered solve did not converge in {max_sweeps} sweeps: the last sweep moved a node by {change:.3g} V "
            f"(tol_v {tol_v:.3g} V; largest KKT residual {max_res:.3g} A); raise max_sweeps or tol_v"
        )
    energy = torch.stack(history) if history is not None else None
    return LayeredSolution(tuple(v), sweeps, change, max_res, converged, energy, drive)
