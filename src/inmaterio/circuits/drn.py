r"""Deep resistive networks (DRNs): layered conductances and ideal diodes, trained with EP or exact gradients.

The circuit is the layered network of :mod:`inmaterio.circuits.solve.layered` in the form of Scellier's
"deep resistive network" (ICML 2024):

- **inputs**: each feature ``x_j`` (normally in ``[0, 1]``) drives two voltage sources, ``+g x_j`` and
  ``-g x_j`` volts, ``g`` the *input gain*, so a non-negative conductance can pass either sign;
- **hidden layers**: nodes with ideal diodes at 0 V, the first half of each layer bounded below
  (``v >= 0``, excitatory, a ReLU) and the second half bounded above (``v <= 0``, inhibitory);
- **outputs**: linear nodes (no diodes), read as class scores;
- **parameters**: conductances ``W_k >= 0`` of shape ``(n_k, n_{k-1})`` between consecutive layers and a
  current source ``b_k`` (learned, either sign) at every hidden and output node.

Units are normalised: conductances, currents and voltages are plain numbers (siemens, amperes, volts up to
one common scale; multiplying every conductance and current by ``c`` leaves the voltages unchanged).

Loss: ``C = 1/2 ||v_L - y||^2`` with ``y`` the one-hot target (volts), averaged over the batch. The EP
nudging of :func:`~inmaterio.circuits.solve.layered.solve_layered` (``beta/2 ||v_L - y||^2``, a
conductance ``beta`` to a source at ``y``) is ``beta`` times this cost, so with
``dE/dW_{k,ij} = 1/2 (v_{k,i} - v_{k-1,j})^2`` and ``dE/db_k = -v_k``:

- :func:`drn_ep_gradients` estimates ``dC/dtheta`` from nudged steady states: symmetric
  ``(dE/dtheta(v^{+beta}) - dE/dtheta(v^{-beta})) / (2 beta)`` (error O(beta^2)), or one-sided from
  ``v^0`` and ``v^{+beta}`` (or ``v^{-beta}``; error O(beta)), or one-sided with a random sign per batch;
- :func:`drn_implicit_gradients` gives it exactly (implicit differentiation at the free steady state):
  with the diodes that conduct held fixed, ``H_FF lambda_F = dC/dv_F`` on the free nodes ``F`` (``H`` the
  network's conductance matrix; clamped nodes have ``lambda = 0``), then
  ``dC/dW_{k,ij} = -(v_{k,i} - v_{k-1,j}) (lambda_{k,i} - lambda_{k-1,j})`` and ``dC/db_k = lambda_k``.
  The adjoint system is solved by the same odd/even block sweeps as the steady state.

Both fill ``.grad`` of the model's parameters, so ``torch.optim`` steps them; :meth:`DeepResistiveNetwork.constrain`
then clips the conductances at 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from inmaterio.circuits.solve.layered import LayeredNetwork, LayeredSolution, diode_boxes, solve_layered
from inmaterio.errors import ConfigError, SimulationError, VoltageError

__all__ = [
    "DRN_VARIANTS",
    "DRNStep",
    "DeepResistiveNetwork",
    "SolveSettings",
    "drn_ep_gradients",
    "drn_implicit_gradients",
    "drn_loss",
]

DRN_VARIANTS = ("symmetric", "positive", "negative", "random_sign")
"""EP estimators: centred at +-beta, one-sided at +beta or -beta, one-sided with a random sign per batch."""

Variant = Literal["symmetric", "positive", "negative", "random_sign"]


@dataclass(frozen=True)
class SolveSettings:
    """How a steady state is computed.

    Attributes:
        sweeps: a fixed number of odd/even sweeps (no convergence test; the nudged phases start from the free
            state), or None to sweep until no node moves by more than ``tol_v``.
        tol_v: convergence tolerance (V) when ``sweeps`` is None.
        max_sweeps: the most sweeps when ``sweeps`` is None (then not converging is an error).
    """

    sweeps: int | None = None
    tol_v: float = 1e-9
    max_sweeps: int = 100_000

    def __post_init__(self) -> None:
        if self.sweeps is not None and (isinstance(self.sweeps, bool) or not isinstance(self.sweeps, int) or self.sweeps < 1):
            raise ConfigError(f"sweeps must be an int >= 1 or None (to tol_v), got {self.sweeps!r}")
        if not (isinstance(self.tol_v, int | float) and 0 < self.tol_v < math.inf):
            raise ConfigError(f"tol_v must be a finite number of volts > 0, got {self.tol_v!r}")
        if isinstance(self.max_sweeps, bool) or not isinstance(self.max_sweeps, int) or self.max_sweeps < 1:
            raise ConfigError(f"max_sweeps must be an int >= 1, got {self.max_sweeps!r}")

    def solve(
        self, x, net: LayeredNetwork, *, beta: float = 0.0, target=None, start: LayeredSolution | None = None
    ) -> LayeredSolution:
        """:func:`solve_layered` with these settings; ``start``: a solution with the same inputs and network to begin
        from (its voltages and input drive are reused)."""
        more = {} if start is None else {"v_init": start.voltages_v, "input_drive_a": start.input_drive_a}
        if self.sweeps is not None:
            return solve_layered(
                x, net, beta=beta, target=target, tol_v=0.0, max_sweeps=self.sweeps, check=False, kkt=False, **more
            )
        solution = solve_layered(x, net, beta=beta, target=target, tol_v=self.tol_v, max_sweeps=self.max_sweeps, check=False,
                                 kkt=False, **more)  # fmt: skip
        if not solution.converged and math.isfinite(solution.max_change_v):  # non-finite states are named by check_state
            raise SimulationError(f"the steady state did not converge in {self.max_sweeps} sweeps (last change "
                                  f"{solution.max_change_v:.3g} V, tol_v {self.tol_v:.3g} V); raise max_sweeps or tol_v")  # fmt: skip
        return solution


class DeepResistiveNetwork(nn.Module):
    """A DRN as a ``torch.nn.Module``: conductances and bias currents are its parameters.

    Args:
        sizes: ``(n_features, n_1, ..., n_L)``: features (each becomes two input sources), hidden layer
            sizes, outputs (at least one hidden layer).
        input_gain: volts per unit of a feature (the sources are ``+-input_gain * x``), > 0.
        seed: the initial conductances: each ``uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))`` clipped at 0
            (``fan_in = n_{k-1}``, so about half start at 0); bias currents start at 0.
        init_gain: multiplies the initial conductances (> 0).
        dtype: floating type of parameters and solves.

    Attributes:
        weights: ``nn.ParameterList`` of ``W_k`` ``(n_k, n_{k-1})`` (S, normalised).
        biases: ``nn.ParameterList`` of ``b_k`` ``(n_k,)`` (A, normalised, into the nodes).
        lower_v, upper_v: buffers per layer ``(n_k,)``: the diode boxes (``+-inf`` at the outputs).
    """

    def __init__(self, sizes: Sequence[int], input_gain: float = 1.0, *, seed: int = 0, init_gain: float = 1.0,
                 dtype: torch.dtype = torch.float64) -> None:  # fmt: skip
        super().__init__()
        if isinstance(sizes, str) or not isinstance(sizes, Sequence) or len(sizes) < 3:
            raise ConfigError(f"sizes must list features, at least one hidden layer and the outputs, got {sizes!r}")
        for k, n in enumerate(sizes):
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise ConfigError(f"sizes[{k}] must be an int >= 1, got {n!r}")
        for name, value in (("input_gain", input_gain), ("init_gain", init_gain)):
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
                raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ConfigError(f"dtype must be a floating torch dtype, got {dtype!r}")
        self.sizes = tuple(int(n) for n in sizes)
        self.input_gain = float(input_gain)
        g = torch.Generator().manual_seed(seed)
        fan = [2 * self.sizes[0], *self.sizes[1:]]
        weights, biases = [], []
        for k in range(1, len(fan)):
            bound = init_gain / math.sqrt(fan[k - 1])
            w = (2 * torch.rand(fan[k], fan[k - 1], generator=g, dtype=torch.float64) - 1) * bound
            weights.append(nn.Parameter(w.clamp_min(0).to(dtype)))
            biases.append(nn.Parameter(torch.zeros(fan[k], dtype=dtype)))
        self.weights = nn.ParameterList(weights)
        self.biases = nn.ParameterList(biases)
        for k, n in enumerate(fan[1:], start=1):
            lo, hi = diode_boxes(n, "split", dtype=dtype) if k < len(fan) - 1 else diode_boxes(n, "none", dtype=dtype)
            self.register_buffer(f"lower_{k}", lo)
            self.register_buffer(f"upper_{k}", hi)

    @property
    def n_layers(self) -> int:
        """``L``: hidden layers plus the output layer."""
        return len(self.weights)

    @property
    def dtype(self) -> torch.dtype:
        return self.weights[0].dtype

    def boxes(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The diode boxes ``(lo, hi)`` of layers ``1 .. L`` (V)."""
        return [(getattr(self, f"lower_{k}"), getattr(self, f"upper_{k}")) for k in range(1, self.n_layers + 1)]

    def network(self, *, validate: bool = True) -> LayeredNetwork:
        """The circuit with the present parameters.

        ``validate``: check every conductance and bias (a negative or non-finite one is named); with False the
        tensors are used as they are (training loops check the solution instead, see :meth:`check_state`).
        """
        with torch.no_grad():
            weights, biases = [w.detach() for w in self.weights], [b.detach() for b in self.biases]
            if not validate:
                lows, highs = zip(*self.boxes())
                return LayeredNetwork.unchecked(weights, biases, lows, highs)
            return LayeredNetwork(weights, biases, self.boxes(), dtype=self.dtype)

    def check_state(self, solution: LayeredSolution) -> None:
        """Raise if a steady state is not finite, naming the parameter at fault when there is one.

        Raises:
            ConfigError: a negative or non-finite conductance or bias (from the validating :meth:`network`).
            SimulationError: non-finite voltages with valid parameters.
        """
        if all(bool(torch.isfinite(v).all()) for v in solution.voltages_v):
            return
        self.network(validate=True)
        raise SimulationError("the steady state has non-finite voltages although every conductance and bias is finite; "
                              "check the inputs and the nudging strength")  # fmt: skip

    def inputs_v(self, x) -> torch.Tensor:
        """``(batch, 2 n_features)`` source voltages ``input_gain * [x, -x]`` (V) for features ``x`` ``(batch, n_features)``."""
        x = torch.as_tensor(x)
        if x.dim() != 2 or x.shape[1] != self.sizes[0] or x.shape[0] == 0:
            raise VoltageError(f"features x must have shape (batch >= 1, {self.sizes[0]}), got {tuple(x.shape)}")
        if x.is_complex() or x.dtype == torch.bool:
            raise VoltageError(f"features x must be real numbers, got dtype {x.dtype}")
        x = x.to(self.dtype)
        if not torch.isfinite(x).all():
            s, j = (~torch.isfinite(x)).nonzero()[0].tolist()
            raise VoltageError(f"feature {j} of sample {s} is {x[s, j].item()}: features must be finite")
        return self.input_gain * torch.cat([x, -x], dim=1)

    def solve(self, x, settings: SolveSettings = SolveSettings()) -> LayeredSolution:
        """The free steady state for features ``x`` ``(batch, n_features)``."""
        solution = settings.solve(self.inputs_v(x), self.network(validate=False))
        self.check_state(solution)
        return solution

    def forward(self, x, settings: SolveSettings = SolveSettings()) -> torch.Tensor:
        """``(batch, n_L)`` output voltages of the free steady state (no autograd graph)."""
        return self.solve(x, settings).output_v

    def constrain(self) -> None:
        """Clip every conductance at 0 (in place); call after each optimiser step."""
        with torch.no_grad():
            for w in self.weights:
                w.clamp_(min=0.0)


@dataclass(frozen=True)
class DRNStep:
    """What one gradient computation saw.

    Attributes:
        loss: mean ``1/2 ||v_L - y||^2`` over the batch at the free steady state.
        correct: samples whose largest output is their class.
        free: the free steady state.
    """

    loss: float
    correct: int
    free: LayeredSolution


def _targets(model: DeepResistiveNetwork, labels, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.as_tensor(labels)
    n_out = model.sizes[-1]
    if labels.dim() != 1 or labels.shape[0] != batch or labels.dtype in (torch.bool,) or labels.is_floating_point():
        raise VoltageError(f"labels must be {batch} integer class indices (one per sample), got shape {tuple(labels.shape)}, "
                           f"dtype {labels.dtype}")  # fmt: skip
    if batch and (int(labels.min()) < 0 or int(labels.max()) >= n_out):
        raise VoltageError(
            f"labels must lie in [0, {n_out - 1}] for {n_out} outputs, got {int(labels.min())}..{int(labels.max())}"
        )
    labels = labels.long()
    return labels, torch.nn.functional.one_hot(labels, n_out).to(model.dtype)


def drn_loss(output_v: torch.Tensor, labels) -> torch.Tensor:
    """Per-sample ``1/2 ||v_L - onehot(label)||^2`` ``(batch,)`` for output voltages ``(batch, n_out)``."""
    y = torch.nn.functional.one_hot(torch.as_tensor(labels).long(), output_v.shape[1]).to(output_v.dtype)
    return 0.5 * (output_v - y).square().sum(1)


def _layers(u: torch.Tensor, state: LayeredSolution) -> list[torch.Tensor]:
    return [u, *state.voltages_v]


def _energy_gradient_difference(u, s: LayeredSolution, t: LayeredSolution, scale: float):
    """``scale * (dE/dtheta(s) - dE/dtheta(t))`` summed over the batch, per layer: (dW_k, db_k).

    ``1/2 [(a_s - c_s)^2 - (a_t - c_t)^2]_ij`` (``a`` the node of layer ``k``, ``c`` of layer ``k - 1``) is
    ``1/2 (da sa)_i + 1/2 (dc sc)_j - 1/2 (da_i sc_j + sa_i dc_j)`` with ``d`` the difference and ``s`` the sum
    of the two states, formed first (no cancellation of large squares); the batch sum of all four terms is one
    matrix product of inner size ``2 batch + 2``.
    """
    out = []
    ls, lt = _layers(u, s), _layers(u, t)
    for k in range(1, len(ls)):
        a_s, a_t, c_s, c_t = ls[k], lt[k], ls[k - 1], lt[k - 1]
        da, sa = a_s - a_t, a_s + a_t
        ones_a, ones_c = torch.ones(1, da.shape[1], dtype=da.dtype), torch.ones(1, c_s.shape[1], dtype=da.dtype)
        if k == 1:  # the inputs are the same in both states: dc = 0, sc = 2u
            left = torch.cat([da, 0.5 * (da * sa).sum(0, keepdim=True)]) * scale
            right = torch.cat([-c_s, ones_c])
        else:
            dc, sc = c_s - c_t, c_s + c_t
            left = torch.cat([da, sa, (da * sa).sum(0, keepdim=True), ones_a]) * (0.5 * scale)
            right = torch.cat([-sc, -dc, ones_c, (dc * sc).sum(0, keepdim=True)])
        out.append((left.T @ right, -scale * da.sum(0)))
    return out


def _fill(model: DeepResistiveNetwork, grads) -> None:
    for w, b, (gw, gb) in zip(model.weights, model.biases, grads):
        for p, g in ((w, gw), (b, gb)):
            p.grad = g.to(p.dtype) if p.grad is None else p.grad + g.to(p.dtype)


def _check_beta(beta) -> float:
    if isinstance(beta, bool) or not isinstance(beta, int | float) or not 0 < beta < math.inf:
        raise ConfigError(f"beta must be a finite number > 0 (the nudging conductance), got {beta!r}")
    return float(beta)


def drn_ep_gradients(
    model: DeepResistiveNetwork,
    x,
    labels,
    *,
    beta: float,
    variant: Variant = "symmetric",
    settings: SolveSettings = SolveSettings(),
    generator: torch.Generator | None = None,
) -> DRNStep:
    """EP estimate of ``dC/dtheta`` (batch mean), added to the parameters' ``.grad``.

    Args:
        model: the network.
        x: ``(batch, n_features)`` features.
        labels: ``(batch,)`` class indices (targets are one-hot output voltages).
        beta: nudging strength (> 0; the symmetric variant uses ``+beta`` and ``-beta``).
        variant: one of :data:`DRN_VARIANTS`.
        settings: how each steady state is solved (the nudged ones start from the free one).
        generator: draws the sign of ``random_sign`` (one per call).

    Returns:
        the :class:`DRNStep` (free-phase loss and correct count).

    Raises:
        ConfigError: bad ``beta`` or ``variant``, or ``-beta`` leaving an output node without a positive conductance.
    """
    beta = _check_beta(beta)
    if variant not in DRN_VARIANTS:
        raise ConfigError(f"variant must be one of {DRN_VARIANTS}, got {variant!r}")
    net, u = model.network(validate=False), model.inputs_v(x)
    labels, y = _targets(model, labels, u.shape[0])
    free = settings.solve(u, net)
    model.check_state(free)
    if variant == "random_sign":
        sign = 1.0 if torch.randint(0, 2, (), generator=generator).item() else -1.0
        variant = "positive" if sign > 0 else "negative"
    n = u.shape[0]
    if variant == "symmetric":
        plus = settings.solve(u, net, beta=beta, target=y, start=free)
        minus = settings.solve(u, net, beta=-beta, target=y, start=free)
        grads = _energy_gradient_difference(u, plus, minus, 1.0 / (2 * beta * n))
    elif variant == "positive":
        plus = settings.solve(u, net, beta=beta, target=y, start=free)
        grads = _energy_gradient_difference(u, plus, free, 1.0 / (beta * n))
    else:
        minus = settings.solve(u, net, beta=-beta, target=y, start=free)
        grads = _energy_gradient_difference(u, free, minus, 1.0 / (beta * n))
    _fill(model, grads)
    return _step(free, labels)


def _step(free: LayeredSolution, labels: torch.Tensor) -> DRNStep:
    out = free.output_v
    return DRNStep(float(drn_loss(out, labels).mean()), int((out.argmax(1) == labels).sum()), free)


def _adjoint(net: LayeredNetwork, free: LayeredSolution, g_out: torch.Tensor, settings: SolveSettings) -> list[torch.Tensor]:
    """``lambda`` per layer: ``H_FF lambda_F = g`` on free nodes (``g`` only at the outputs), 0 at clamped ones.

    Block sweeps like the steady state's; ``settings.sweeps`` fixed sweeps, or to ``tol_v`` relative to
    ``max |lambda|`` when None.
    """
    L = net.n_layers
    W = net.weights_s
    free_mask = [((v > lo) & (v < hi)).to(v.dtype) for v, lo, hi in zip(free.voltages_v, net.lower_v, net.upper_v)]
    scale = [m / d for m, d in zip(free_mask, net.degree_s)]
    lam = [torch.zeros_like(v) for v in free.voltages_v]
    limit = settings.sweeps if settings.sweeps is not None else settings.max_sweeps
    change = math.inf
    for _ in range(limit):
        change_t = torch.zeros((), dtype=g_out.dtype)
        for first in (1, 2):
            for k in range(first, L + 1, 2):
                num = g_out if k == L else torch.zeros_like(lam[k - 1])
                if k > 1:
                    num = num + lam[k - 2] @ W[k - 1].T
                if k < L:
                    num = num + lam[k] @ W[k]
                new = num * scale[k - 1]
                change_t = torch.maximum(change_t, (new - lam[k - 1]).abs().max())
                lam[k - 1] = new
        if settings.sweeps is None:
            size = max(float(t.abs().max()) for t in lam)
            change = float(change_t)
            if change <= settings.tol_v * max(size, 1e-300):
                break
    else:
        if settings.sweeps is None:
            raise SimulationError(f"the adjoint solve did not converge in {limit} sweeps (last relative change "
                                  f"{change / max(size, 1e-300):.3g}, tol {settings.tol_v:.3g}); raise max_sweeps")  # fmt: skip
    return lam


def drn_implicit_gradients(model: DeepResistiveNetwork, x, labels, *, settings: SolveSettings = SolveSettings()) -> DRNStep:
    """Exact ``dC/dtheta`` (batch mean) at the free steady state, added to the parameters' ``.grad``.

    Implicit differentiation with the conducting diodes held fixed (the gradient wherever the set of
    conducting diodes does not change under a small parameter change). Same arguments as
    :func:`drn_ep_gradients` without the nudging.
    """
    net, u = model.network(validate=False), model.inputs_v(x)
    labels, y = _targets(model, labels, u.shape[0])
    free = settings.solve(u, net)
    model.check_state(free)
    n = u.shape[0]
    lam = _adjoint(net, free, (free.output_v - y) / n, settings)
    grads = []
    layers = _layers(u, free)
    for k in range(1, len(layers)):
        a, c, la = layers[k], layers[k - 1], lam[k - 1]
        ones_a, ones_c = torch.ones(1, a.shape[1], dtype=a.dtype), torch.ones(1, c.shape[1], dtype=a.dtype)
        # -(a_i - c_j)(la_i - lc_j) summed over the batch; the inputs have lc = 0
        if k == 1:
            left, right = torch.cat([la, -(a * la).sum(0, keepdim=True)]), torch.cat([c, ones_c])
        else:
            lc = lam[k - 2]
            left = torch.cat([la, a, -(a * la).sum(0, keepdim=True), ones_a])
            right = torch.cat([c, lc, ones_c, -(c * lc).sum(0, keepdim=True)])
        grads.append((left.T @ right, la.sum(0)))
    _fill(model, grads)
    return _step(free, labels)
