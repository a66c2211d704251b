r"""Equilibrium Propagation: gradients of a loss from the free and nudged operating points.

The free phase solves the circuit with its inputs. A nudged phase injects at
every output node ``o`` the current

.. math::  I_o = -\frac{\beta}{k_o} \frac{\partial L}{\partial V_o}\Big|_{\text{free}}

(``k_o`` the energy weight of the output's region, 1 without amplifiers;
see :mod:`inmaterio.circuits.graph`) and solves again, warm-started from the
free solution. With ``E`` the weighted co-content of the circuit, a
parameter's gradient is the change of ``∂E/∂θ`` between two phases over the
change of ``β``:

* conductance ``g`` across a voltage drop ``ΔV``: ``∂E/∂g = k ΔV² / 2``;
* source voltage ``V_s``: ``∂E/∂V_s`` = the (weighted) current the source delivers.

Variants (:data:`VARIANTS`): ``one-sided`` (free and ``+β``; bias ``O(β)``),
``symmetric`` (``+β`` and ``-β``; bias ``O(β²)``), ``random-sign`` (free and
``±β`` with a random sign per batch, which cancels the ``O(β)`` bias on
average). :func:`implicit_gradients` gives the exact gradient (implicit
differentiation of the free equilibrium) to check them against.

Losses are per sample: ``loss_fn(outputs (batch, n_outputs) V, target) -> (batch,)``;
:func:`output_loss` builds them from the shared losses of
:mod:`inmaterio.training.losses`. The reported gradients are averages over
the batch, in the parameters' physical units; :func:`ep_gradients` also adds
them, converted to the model's normalised coordinates, to the ``.grad`` of
its parameters (as ``backward()`` would), so that any ``torch.optim``
optimiser takes the step::

    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    optimizer.zero_grad()
    ep_gradients(model, x, y, loss_fn, beta=1e-7)
    optimizer.step()
    model.constrain()
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from inmaterio.circuits.graph import Model
from inmaterio.circuits.netlist import DTYPE, GROUND, ground_last, with_ground
from inmaterio.circuits.solve.native import DCSolution, SolverOptions, _stamps, kcl_currents, solve_dc
from inmaterio.errors import ConfigError, SimulationError
from inmaterio.training.losses import cross_entropy, mse

__all__ = ["EPResult", "VARIANTS", "check_targets", "ep_gradients", "implicit_gradients", "output_loss", "readout"]

VARIANTS = ("one-sided", "symmetric", "random-sign")
READOUTS = ("direct", "differential")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def readout(outputs_v: torch.Tensor, kind: str) -> torch.Tensor:
    """Class scores from output voltages ``(batch, n_outputs)``.

    ``direct``: the voltages themselves. ``differential``: pairs of nodes,
    score ``k = V[2k] - V[2k+1]`` (so ``n_outputs / 2`` classes).
    """
    if kind == "direct":
        return outputs_v
    if kind == "differential":
        if outputs_v.shape[-1] % 2:
            raise ConfigError(f"differential readout needs an even number of outputs, got {outputs_v.shape[-1]}")
        return outputs_v[..., 0::2] - outputs_v[..., 1::2]
    raise ConfigError(f"readout must be one of {READOUTS}, got {kind!r}")


def output_loss(name: str, *, readout_kind: str = "direct", scale_per_v: float = 1.0, target_v: float = 1.0) -> LossFn:
    """A per-sample loss of the output voltages, from :mod:`inmaterio.training.losses`.

    Args:
        name: ``"mse"``: mean over classes of ``(score - t)²`` with ``t = +target_v``
            for the true class and ``-target_v`` for the others (targets are class
            indices), or float targets ``(batch, classes)`` in volts used as they
            are. ``"cross_entropy"``: softmax cross-entropy of ``scale_per_v * score``.
        readout_kind: ``"direct"`` or ``"differential"`` (see :func:`readout`).
        scale_per_v: logits per volt for cross-entropy.
        target_v: target score magnitude (V) for MSE with class targets.
    """
    if name not in ("mse", "cross_entropy"):
        raise ConfigError(f"circuit loss must be 'mse' or 'cross_entropy', got {name!r}")
    readout(torch.zeros(1, 2), readout_kind)  # validates the name

    def loss(outputs_v: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        score = readout(outputs_v, readout_kind)
        t = torch.as_tensor(target)
        check_targets(t, name, score.shape[1])
        if len(t) != len(score):
            raise ConfigError(f"target has {len(t)} entries for a batch of {len(score)} samples")
        if name == "cross_entropy":
            return cross_entropy(scale_per_v * score.unsqueeze(1), t.long().reshape(-1, 1))
        if not t.dtype.is_floating_point:
            t = torch.full_like(score, -target_v).scatter_(1, t.long().reshape(-1, 1), target_v)
        return mse(score, t.to(score.dtype))

    loss.__name__ = f"{name}_{readout_kind}"
    return loss


def check_targets(target: torch.Tensor, loss: str, n_classes: int, what: str = "target") -> None:
    """Refuse targets the loss cannot use, naming the first bad sample.

    Class indices: integers of shape ``(batch,)`` in ``[0, n_classes - 1]``
    (either loss). Target scores (MSE only): finite floats of shape ``(batch, n_classes)`` in volts.

    Raises:
        ConfigError: the dtype, shape or value that is wrong, and what is allowed.
    """
    if target.is_complex() or target.dtype == torch.bool:
        raise ConfigError(f"{what} must be integer class indices or real target scores, got dtype {target.dtype}")
    if target.dtype.is_floating_point:
        if loss == "cross_entropy":
            raise ConfigError(
                f"{what}: cross_entropy needs integer class indices in [0, {n_classes - 1}], got dtype {target.dtype}"
            )
        if target.dim() != 2 or target.shape[1] != n_classes:
            raise ConfigError(
                f"{what}: target scores must have shape (batch, {n_classes}) in volts (or give class indices), got {tuple(target.shape)}"
            )
        if not torch.isfinite(target).all():
            s, c = (~torch.isfinite(target)).nonzero()[0].tolist()
            raise ConfigError(f"{what} of sample {s}, class {c} is {target[s, c].item()}: target scores must be finite")
        return
    if target.dim() != 1:
        raise ConfigError(f"{what}: class indices must have shape (batch,), got {tuple(target.shape)}")
    bad = (target < 0) | (target >= n_classes)
    if bad.any():
        s = int(bad.nonzero()[0])
        raise ConfigError(f"{what} of sample {s} is class {target[s].item()}, outside [0, {n_classes - 1}]")


def _loss_and_grad(loss_fn: LossFn, outputs: torch.Tensor, target) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample losses ``(batch,)`` and ``dL_i/dV_i (batch, n_outputs)``."""
    v = outputs.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        per_sample = loss_fn(v, target)
        if per_sample.shape != (len(v),):
            raise ConfigError(f"the loss must return one value per sample, shape ({len(v)},), got {tuple(per_sample.shape)}")
        (grad,) = torch.autograd.grad(per_sample.sum(), v)
    if not torch.isfinite(per_sample).all():
        s = int((~torch.isfinite(per_sample)).nonzero()[0])
        raise SimulationError(f"the loss of sample {s} is {per_sample[s].item()}")
    return per_sample.detach(), grad


@dataclass(frozen=True)
class EPResult:
    """What one EP step measured.

    Attributes:
        gradients: parameter name -> batch-mean gradient estimate ``dL/dθ`` (physical units, same shape as the parameter).
        loss: ``(batch,)`` per-sample loss at the free equilibrium.
        outputs_v: ``(batch, n_outputs)`` free output voltages.
        input_gradients: per model input, ``(batch, features)`` estimate of ``dL_i/dx_i`` (per sample, not
            averaged); empty unless asked for.
        free: the free phase's solution.
    """

    gradients: dict[str, torch.Tensor]
    loss: torch.Tensor
    outputs_v: torch.Tensor
    input_gradients: list[torch.Tensor]
    free: DCSolution


def _conductance_derivative_sum(model: Model, s1: DCSolution, s2: DCSolution) -> torch.Tensor:
    """``(R,)``: sum over the batch of ``∂E/∂g (phase 1) - ∂E/∂g (phase 2)`` for every resistor.

    ``k/2 (ΔV1² - ΔV2²) = k/2 (δ_a - δ_b)(σ_a - σ_b)`` with ``δ = V1 - V2`` and
    ``σ = V1 + V2``; the batch sums of the cross terms are two matrix products
    over the nodes the resistors join (no ``(batch, R)`` tensor, and no
    cancellation between two large squares).
    """
    c = model._template
    n = c.n_nodes
    v1, v2 = with_ground(s1.voltages_v), with_ground(s2.voltages_v)
    delta, sigma = v1 - v2, v1 + v2
    r = ground_last(c.resistor_nodes, n).to(v1.device)
    if not len(r):
        return torch.zeros(0, dtype=DTYPE, device=v1.device)
    rows, a = torch.unique(r[:, 0], return_inverse=True)
    cols, b = torch.unique(r[:, 1], return_inverse=True)
    diag = (delta * sigma).sum(0)
    cross = delta[:, rows].T @ sigma[:, cols] + sigma[:, rows].T @ delta[:, cols]  # (|rows|, |cols|)
    total = diag[r[:, 0]] + diag[r[:, 1]] - cross[a, b]
    return 0.5 * model.resistor_weight.to(v1.device) * total


def _source_derivatives(model: Model, sol: DCSolution, circuit) -> torch.Tensor:
    """``(batch, S)``: ``∂E/∂V_s``, the energy-weighted current each source delivers into the circuit (of that phase)."""
    c = model._template
    n = c.n_nodes
    v = with_ground(sol.voltages_v)
    dev = v.device
    src = c.source_nodes.to(dev)
    if len(c.resistor_nodes):
        lap = _stamps(c, dev).laplacian(model.resistor_weight.to(dev) * model.conductances().to(dev))
        out = (lap @ v.T).T.contiguous()  # weighted currents leaving every node (used at the sources only)
    else:
        out = torch.zeros(v.shape[0], n + 1, dtype=DTYPE, device=dev)
    for grp, kd in zip(c.diodes, model.diode_weight):
        a, k = ground_last(grp.anode, n).to(dev), ground_last(grp.cathode, n).to(dev)
        i_d = kd.to(dev) * grp.model.current(v[:, a] - v[:, k] - grp.bias_v.to(dev))
        out.index_add_(1, a, i_d)
        out.index_add_(1, k, -i_d)
    if len(c.amplifier_nodes):
        # an amplifier fed by a source draws current_gain * I from it (weight 1: sources are in the base region)
        ain = ground_last(c.amplifier_nodes[:, 0], n).to(dev)
        amp = sol.amplifier_current_a if sol.amplifier_current_a is not None else kcl_currents(circuit, sol.voltages_v)[1]
        out.index_add_(1, ain, c.current_gain.to(dev) * amp)
    return out[:, src]


def ep_gradients(
    model: Model,
    x,
    target,
    loss_fn: LossFn,
    *,
    beta: float,
    variant: str = "symmetric",
    generator: torch.Generator | None = None,
    options: SolverOptions | None = None,
    device=None,
    allow_inexact: bool = False,
    input_gradients: bool = False,
) -> EPResult:
    """One Equilibrium Propagation estimate of the loss gradient, for a batch.

    Args:
        model: the circuit model.
        x: ``(batch, features)`` input data in volts (a list for several inputs).
        target: targets for ``loss_fn``.
        loss_fn: per-sample loss of the output voltages (:func:`output_loss`).
        beta: nudging strength (> 0): the output currents are ``-beta/k dL/dV``
            (amperes per unit of ``dL/dV``; siemens for an MSE in V²).
        variant: one of :data:`VARIANTS`.
        generator: draws the sign of ``random-sign``.
        allow_inexact: run even when the model's amplifiers admit no energy function.
        input_gradients: also estimate ``dL_i/dx_i`` for every input (from the
            input sources' currents; needed by mixed-signal training).

    Returns:
        the :class:`EPResult`; its gradients are also added to the ``.grad`` of
        the model's (normalised) parameters (:meth:`~inmaterio.circuits.graph.Model.add_gradients`).

    Raises:
        ConfigError: a bad variant or beta, or no energy function.
        SimulationError: a solve that fails, a non-finite loss or gradient (``.grad`` is then left unchanged).
    """
    if variant not in VARIANTS:
        raise ConfigError(f"EP variant must be one of {VARIANTS}, got {variant!r}")
    if isinstance(beta, bool) or not (isinstance(beta, int | float) and beta > 0 and torch.isfinite(torch.tensor(float(beta)))):
        raise ConfigError(f"EP beta must be a finite number > 0, got {beta!r}")
    if model.energy_problem and not allow_inexact:
        raise ConfigError(f"EP needs an energy function: {model.energy_problem} (pass allow_inexact=True to run anyway)")
    circuit = model.circuit(x)
    free = solve_dc(circuit, options=options, device=device, source_currents=False)
    outputs = model.output_voltages(free)
    loss, dl_dv = _loss_and_grad(loss_fn, outputs, target)
    unit = -dl_dv / model.output_weight.to(dl_dv.device)  # current per unit beta

    def nudged(b: float) -> DCSolution:
        return solve_dc(
            circuit.with_values(current_a=b * unit),
            initial_v=free.voltages_v,
            reuse=free,
            options=options,
            device=device,
            source_currents=False,
        )

    if variant == "one-sided":
        phases = [(beta, nudged(beta)), (0.0, free)]
    elif variant == "symmetric":
        phases = [(beta, nudged(beta)), (-beta, nudged(-beta))]
    else:
        sign = 1.0 if torch.rand((), generator=generator) < 0.5 else -1.0
        phases = [(sign * beta, nudged(sign * beta)), (0.0, free)]
    (b1, s1), (b2, s2) = phases
    d_g = _conductance_derivative_sum(model, s1, s2) / ((b1 - b2) * len(outputs))  # batch mean, (R,)
    gradients = model.scatter_resistor_values(d_g)
    by_input: dict[int, torch.Tensor] = {}
    if input_gradients or model.learnable_sources:
        c1, c2 = (circuit.with_values(current_a=bb * unit) for bb in (b1, b2))
        per_source = (_source_derivatives(model, s1, c1) - _source_derivatives(model, s2, c2)) / (b1 - b2)  # (batch, S)
        start = 0
        for call, ids in model.source_calls:
            layer = call.layer
            block = per_source[:, start : start + len(ids)]
            start += len(ids)
            key = model.key(layer, "voltage_v")
            if key in model.bounds:
                gradients[key] = block.mean(0)
            if input_gradients and layer in model.input_layers:
                n = layer.n_features
                by_input[id(layer)] = block[:, :n] - block[:, n:] if layer.inverted else block
    ordered = [by_input[id(layer)] for layer in model.input_layers] if input_gradients else []
    for key in model.bounds.keys() - gradients.keys():  # parameters EP does not reach (e.g. a bias when none is learnable)
        gradients[key] = torch.zeros(model.normalised_parameters()[key].shape, dtype=DTYPE)
    result = EPResult({k: gradients[k] for k in model.bounds}, loss, outputs, ordered, free)
    model.add_gradients(result.gradients)
    return result


def implicit_gradients(
    model: Model, x, target, loss_fn: LossFn, *, options: SolverOptions | None = None
) -> dict[str, torch.Tensor]:
    """Exact batch-mean gradients of the loss at the free equilibrium, by implicit differentiation.

    Solves the free phase, then differentiates the Kirchhoff residual
    ``r(V, θ) = 0`` (``dV/dθ = -(∂r/∂V)^{-1} ∂r/∂θ``) with autograd. Meant for
    checking EP on small circuits (it forms the full Jacobian).
    """
    circuit = model.circuit(x)
    sol = solve_dc(circuit, options=options)
    b, n = sol.voltages_v.shape
    c = model._template
    free = torch.ones(n, dtype=torch.bool)
    free[c.source_nodes] = False
    free_idx = free.nonzero().flatten()
    amp_out = c.amplifier_nodes[:, 1]
    is_out = torch.zeros(n, dtype=torch.bool)
    is_out[amp_out] = True
    params = {k: v.requires_grad_(True) for k, v in model.parameter_values().items()}

    def residual(v_free: torch.Tensor) -> torch.Tensor:
        sv = model.source_voltages(x, params)
        circ = c.with_values(
            source_v=sv, conductance_s=model.conductances(params), current_a=torch.zeros(b, len(model.output_ids), dtype=DTYPE)
        )
        v = torch.zeros(b, n, dtype=DTYPE).index_copy(1, c.source_nodes, sv).index_copy(1, free_idx, v_free)
        net, _ = kcl_currents(circ, v)
        r = net[:, :n].clone()
        if len(amp_out):
            vin = torch.where(
                c.amplifier_nodes[:, 0] == GROUND, torch.zeros((), dtype=DTYPE), v[:, c.amplifier_nodes[:, 0].clamp(min=0)]
            )
            r[:, amp_out] = v[:, amp_out] - c.gain * vin
        return r[:, free_idx]

    v0 = sol.voltages_v[:, free_idx].detach()
    jac = torch.autograd.functional.jacobian(residual, v0)  # (b, F, b, F)
    blocks = torch.stack([jac[i, :, i, :] for i in range(b)])  # (b, F, F)
    out_pos = torch.searchsorted(free_idx, model.output_ids)
    _, dl_dv = _loss_and_grad(loss_fn, sol.voltages_v[:, model.output_ids], target)
    rhs = torch.zeros(b, len(free_idx), dtype=DTYPE)
    rhs[:, out_pos] = dl_dv
    lam = torch.linalg.solve(blocks.transpose(1, 2), rhs)  # J^T λ = dL/dV
    with torch.enable_grad():
        r = residual(v0)
        grads = torch.autograd.grad(r, list(params.values()), grad_outputs=-lam / b, allow_unused=True)
    return {k: (g if g is not None else torch.zeros_like(p)).detach() for (k, p), g in zip(params.items(), grads)}
