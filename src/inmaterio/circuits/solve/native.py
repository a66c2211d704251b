"""Native batched DC solver: modified nodal analysis and Newton's method with SPICE's junction limiting.

All circuits of a batch share one topology (a :class:`~inmaterio.circuits.netlist.Circuit`)
and are solved together: one batched ``torch.linalg.solve`` per Newton
iteration, on CPU or GPU, in float64.

The unknowns are the voltages of the *free* nodes (every node not fixed by a
voltage source). The linear part (resistors, sources, injected currents) is
stamped once per call; each iteration adds the companion model of every
diode linearised at its operating voltage ``v_k`` (conductance ``g = i'(v_k)``
and current ``i(v_k) - g v_k``), applies the amplifier rows (an amplifier's
output row becomes ``V_out - gain * V_in = 0`` and the current it delivers,
times ``current_gain``, is drawn from its input row), solves, and moves each
diode's operating voltage to the new one through the element's limiter (for
Shockley diodes SPICE's ``pnjlim``). A circuit has converged when no limiter
acted and every free node moved less than ``reltol * max|V| + vntol``;
converged circuits leave the batch. The result is then checked against
Kirchhoff's current law at every free node.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from inmaterio.circuits.netlist import DTYPE, Circuit, ground_last, with_ground
from inmaterio.circuits.solve import small
from inmaterio.errors import SimulationError

__all__ = ["DCSolution", "SolverOptions", "kcl_currents", "solve_dc"]


@dataclass(frozen=True)
class SolverOptions:
    """Tolerances of the Newton iteration.

    Attributes:
        reltol: relative change of the node voltages at convergence.
        vntol_v: absolute change of the node voltages at convergence (V).
        max_iterations: Newton iterations before the solve fails.
        kcl_rtol: the KCL residual at every free node must stay below
            ``kcl_rtol`` times the largest current through any element
            (plus ``kcl_atol_a``), or the solve fails.
        kcl_atol_a: absolute KCL tolerance in amperes.
    """

    reltol: float = 1e-10
    vntol_v: float = 1e-12
    max_iterations: int = 200
    kcl_rtol: float = 1e-8
    kcl_atol_a: float = 1e-18


@dataclass(frozen=True)
class DCSolution:
    """Operating point of a batch of circuits.

    Attributes:
        voltages_v: ``(batch, n_nodes)`` node voltages.
        source_current_a: ``(batch, S)`` current each voltage source delivers into its node
            (None when the solve was asked not to compute it).
        amplifier_current_a: ``(batch, A)`` current each amplifier delivers into its output node
            (None when source currents were not asked for and the compiled path solved it;
            :func:`kcl_currents` gives them).
        iterations: ``(batch,)`` Newton iterations each circuit took.
        kcl_residual_a: ``(batch,)`` largest ``|KCL residual|`` over the free nodes.
        jacobian_lu: the LU factorisation ``(LU (batch, U, U), pivots)`` of the
            last Newton Jacobian over the unknowns, kept for a nudged phase to
            reuse (see ``reuse`` of :func:`solve_dc`); None when not kept.
    """

    voltages_v: torch.Tensor
    source_current_a: torch.Tensor | None
    amplifier_current_a: torch.Tensor | None
    iterations: torch.Tensor
    kcl_residual_a: torch.Tensor
    jacobian_lu: tuple[torch.Tensor, torch.Tensor] | None = None


class _Stamps:
    """Index bookkeeping of one topology: which nodes are unknowns, and where each element stamps.

    The unknowns are the free nodes that are not amplifier outputs (an
    amplifier output is eliminated: ``V_out = gain * V_in``).
    """

    def __init__(self, circuit: Circuit, device: torch.device) -> None:
        n = circuit.n_nodes
        self.n = n
        self.device = device
        is_known = torch.zeros(n + 1, dtype=torch.bool)
        is_known[circuit.source_nodes] = True
        is_known[n] = True  # ground: known (0 V)
        self.free = (~is_known[:n]).nonzero().flatten()
        self.F = self.free.numel()
        pos = torch.full((n + 1,), -1, dtype=torch.long)
        pos[self.free] = torch.arange(self.F)
        self.pos = pos

        r = self.ext(circuit.resistor_nodes)
        pa, pb = pos[r[:, 0]], pos[r[:, 1]]  # (R,) each; empty for a circuit without resistors
        self.r_a, self.r_b = r[:, 0], r[:, 1]
        # free-free stamps: (flat index into F x F, resistor, sign)
        fa, fb = pa >= 0, pb >= 0
        both = fa & fb
        rid = torch.arange(len(r))
        self.ff_index = torch.cat(
            [pa[fa] * self.F + pa[fa], pb[fb] * self.F + pb[fb], pa[both] * self.F + pb[both], pb[both] * self.F + pa[both]]
        )
        self.ff_resistor = torch.cat([rid[fa], rid[fb], rid[both], rid[both]])
        self.ff_sign = torch.cat(
            [torch.ones(int(fa.sum()) + int(fb.sum()), dtype=DTYPE), -torch.ones(2 * int(both.sum()), dtype=DTYPE)]
        )
        # free-known couplings: rhs[pos free end] += g * V(known end)
        a_known_b_free = ~fa & fb
        b_known_a_free = fa & ~fb
        self.fk_row = torch.cat([pb[a_known_b_free], pa[b_known_a_free]])
        self.fk_col = torch.cat([r[a_known_b_free, 0], r[b_known_a_free, 1]])
        self.fk_resistor = torch.cat([rid[a_known_b_free], rid[b_known_a_free]])

        # amplifiers: folding order (downstream first) and elimination of their outputs
        self.amp_in_ext = self.ext(circuit.amplifier_nodes[:, 0])
        self.amp_out_pos = pos[self.ext(circuit.amplifier_nodes[:, 1])]
        self.amp_in_pos = pos[self.amp_in_ext]
        depth = circuit.amplifier_depths()
        self.amp_levels = [
            torch.tensor([k for k, dk in enumerate(depth) if dk == d], dtype=torch.long) for d in sorted(set(depth), reverse=True)
        ]
        keep = torch.ones(self.F, dtype=torch.bool)
        keep[self.amp_out_pos] = False
        self.keep = keep.nonzero().flatten()
        self.n_unknowns = self.keep.numel()
        # position among the unknowns (-1 for known nodes and amplifier outputs)
        pos_red = torch.full((n + 1,), -1, dtype=torch.long)
        pos_red[self.free[self.keep]] = torch.arange(self.n_unknowns)
        self.pos_red = pos_red
        amp_out_nodes = set(circuit.amplifier_nodes[:, 1].tolist())
        self.diodes_on_amplifier_outputs = any(
            bool(set(g.anode.tolist()) & amp_out_nodes or set(g.cathode.tolist()) & amp_out_nodes) for g in circuit.diodes
        )
        # sparsity pattern of the resistor Laplacian (CSR), values filled per call by index_add
        rows = torch.cat([r[:, 0], r[:, 1], r[:, 0], r[:, 1]])
        cols = torch.cat([r[:, 0], r[:, 1], r[:, 1], r[:, 0]])
        pairs, self.lap_inverse = torch.unique(rows * (n + 1) + cols, return_inverse=True)
        self.lap_sign = torch.cat([torch.ones(2 * len(r), dtype=DTYPE), -torch.ones(2 * len(r), dtype=DTYPE)])
        self.lap_col = pairs % (n + 1)
        self.lap_crow = torch.cat([torch.zeros(1, dtype=torch.long), torch.bincount(pairs // (n + 1), minlength=n + 1).cumsum(0)])
        # rows of the free nodes in the resistor Laplacian, dense (F, n + 1): flat index, resistor, sign
        fa_, fb_ = pa >= 0, pb >= 0
        width = n + 1
        self.rows_index = torch.cat(
            [pa[fa_] * width + r[fa_, 0], pa[fa_] * width + r[fa_, 1], pb[fb_] * width + r[fb_, 1], pb[fb_] * width + r[fb_, 0]]
        )
        self.rows_resistor = torch.cat([rid[fa_], rid[fa_], rid[fb_], rid[fb_]])
        self.rows_sign = torch.cat(
            [torch.ones(int(fa_.sum())), -torch.ones(int(fa_.sum())), torch.ones(int(fb_.sum())), -torch.ones(int(fb_.sum()))]
        ).to(DTYPE)
        self.dense_rows = self.F * width <= _DENSE_ROWS_MAX
        for name in (
            "rows_index",
            "rows_resistor",
            "rows_sign",
            "lap_inverse",
            "lap_sign",
            "lap_col",
            "lap_crow",
            "free",
            "pos",
            "r_a",
            "r_b",
            "ff_index",
            "ff_resistor",
            "ff_sign",
            "fk_row",
            "fk_col",
            "fk_resistor",
            "amp_in_ext",
            "amp_out_pos",
            "amp_in_pos",
            "keep",
            "pos_red",
        ):
            setattr(self, name, getattr(self, name).to(device))
        self.amp_levels = [k.to(device) for k in self.amp_levels]
        self.diode_ext = [(self.ext(g.anode).to(device), self.ext(g.cathode).to(device)) for g in circuit.diodes]

    def ext(self, idx: torch.Tensor) -> torch.Tensor:
        """Node indices with ground mapped to the extended index n."""
        return ground_last(idx, self.n)

    def free_rows(self, g: torch.Tensor) -> torch.Tensor:
        """Dense ``(F, n + 1)`` rows of the free nodes in the resistor Laplacian, for shared conductances ``g (R,)``."""
        rows = torch.zeros(self.F * (self.n + 1), dtype=g.dtype, device=g.device)
        rows.index_add_(0, self.rows_index, g[self.rows_resistor] * self.rows_sign)
        return rows.view(self.F, self.n + 1)

    def laplacian(self, g: torch.Tensor) -> torch.Tensor:
        """Sparse CSR ``(n + 1, n + 1)`` Laplacian of the resistors for shared conductances ``g (R,)``."""
        values = torch.zeros(len(self.lap_col), dtype=g.dtype, device=g.device)
        values.index_add_(0, self.lap_inverse, torch.cat([g, g, g, g]) * self.lap_sign)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
            return torch.sparse_csr_tensor(self.lap_crow, self.lap_col, values, (self.n + 1, self.n + 1), check_invariants=False)


#: Largest free-rows matrix (F x (n + 1) entries) kept dense; larger circuits use the sparse Laplacian.
_DENSE_ROWS_MAX = 20_000_000

#: Chord steps (reusing a factorisation) before Newton takes over.
_CHORD_ITERATIONS = 6

_STAMP_CACHE: dict[tuple, tuple[tuple, _Stamps]] = {}


def _stamps(circuit: Circuit, device: torch.device) -> _Stamps:
    """The topology's :class:`_Stamps`, cached while the circuit's index tensors live (models reuse them)."""
    owners = (
        circuit.resistor_nodes,
        circuit.source_nodes,
        circuit.amplifier_nodes,
        circuit.current_nodes,
        *(t for g in circuit.diodes for t in (g.anode, g.cathode)),
    )
    key = (tuple(id(t) for t in owners), str(device))
    hit = _STAMP_CACHE.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], owners)):
        return hit[1]
    st = _Stamps(circuit, device)
    if len(_STAMP_CACHE) > 16:
        _STAMP_CACHE.clear()
    _STAMP_CACHE[key] = (owners, st)
    return st


def _batch(values: torch.Tensor, b: int) -> torch.Tensor:
    return values.expand(b, -1) if values.dim() == 1 else values


def kcl_currents(
    circuit: Circuit, voltages_v: torch.Tensor, *, resistor_net: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Net current leaving every node through the elements, with the amplifiers' share moved to their inputs.

    Args:
        circuit: the circuit.
        voltages_v: ``(batch, n_nodes)`` node voltages.
        resistor_net: ``(batch, n_nodes + 1)`` the resistors' part, if already known
            (the solver computes it for the free nodes only).

    Returns:
        ``net (batch, n_nodes + 1)``: current leaving each node (index n: ground)
        through resistors and diodes, minus the injected current, plus the
        current each amplifier draws from its input; amplifier outputs hold 0
        (the amplifier balances them). ``amp (batch, A)``: current each
        amplifier delivers into its output node. At a solution ``net`` is zero
        at every free node and equals the delivered current at every source.
    """
    b, n = voltages_v.shape
    dev = voltages_v.device
    v = with_ground(voltages_v)
    ext = lambda i: ground_last(i, n).to(dev)  # noqa: E731
    differentiable = voltages_v.requires_grad or circuit.conductance_s.requires_grad
    if resistor_net is not None:
        net = resistor_net
    elif len(circuit.resistor_nodes) and circuit.conductance_s.dim() == 1 and not differentiable:
        lap = _stamps(circuit, dev).laplacian(circuit.conductance_s.to(dev, voltages_v.dtype))
        net = (lap @ v.T).T.contiguous()
    else:
        net = torch.zeros(b, n + 1, dtype=voltages_v.dtype, device=dev)
        if len(circuit.resistor_nodes):
            a, c = ext(circuit.resistor_nodes[:, 0]), ext(circuit.resistor_nodes[:, 1])
            i = _batch(circuit.conductance_s.to(dev), b) * (v[:, a] - v[:, c])
            net = net.index_add(1, a, i).index_add(1, c, -i)
    for group in circuit.diodes:
        a, c = ext(group.anode), ext(group.cathode)
        i = group.model.current(v[:, a] - v[:, c] - group.bias_v.to(dev))
        net = net.index_add(1, a, i).index_add(1, c, -i)
    if len(circuit.current_nodes):
        net = net.index_add(1, ext(circuit.current_nodes), -_batch(circuit.current_a.to(dev), b))
    amp = torch.zeros(b, len(circuit.amplifier_nodes), dtype=voltages_v.dtype, device=dev)
    if len(circuit.amplifier_nodes):
        cg = _batch(circuit.current_gain.to(dev), b)
        amp_in, amp_out = ext(circuit.amplifier_nodes[:, 0]), ext(circuit.amplifier_nodes[:, 1])
        st = _stamps(circuit, dev)
        if differentiable:
            net = net.clone()
            amp = amp.clone()
        for ks in st.amp_levels:  # downstream first: an amplifier's output current includes those it feeds
            i_k = net[:, amp_out[ks]]
            amp = amp.index_copy(1, ks, i_k)
            net = net.index_add(1, amp_in[ks], cg[:, ks] * i_k).index_fill(1, amp_out[ks], 0.0)
    return net, amp


def _linear_system(circuit: Circuit, st: _Stamps, b: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """``J_lin (b or 1, F, F)``, ``rhs_lin (b, F)`` of the resistive part, known voltages ``(b, n + 1)``,
    and the dense free-node rows of the Laplacian ``(F, n + 1)`` when they are used (else None)."""
    dev, n, F = st.device, st.n, st.F
    known = torch.zeros(b, n + 1, dtype=DTYPE, device=dev)
    if len(circuit.source_nodes):
        known[:, circuit.source_nodes.to(dev)] = _batch(circuit.source_v.to(dev), b)
    g = circuit.conductance_s.to(dev)
    gb = 1 if g.dim() == 1 else b
    g = g.reshape(gb, -1)
    if gb == 1 and st.dense_rows:
        hit = getattr(st, "shared_rows", None)  # kept while the conductances are the same, unchanged tensor (EP's phases)
        owner = circuit.conductance_s
        if hit is None or hit[0] is not owner or hit[1] != owner._version:
            rows = st.free_rows(g[0])
            hit = (owner, owner._version, rows, rows[:, st.free].unsqueeze(0).contiguous())
            st.shared_rows = hit
        rows = hit[2]
        rhs = -(known @ rows.T)  # -G_fk V_k (V is 0 at free nodes)
        if len(circuit.current_nodes):
            p = st.pos[st.ext(circuit.current_nodes.to(dev))]
            keep = p >= 0
            rhs.index_add_(1, p[keep], _batch(circuit.current_a.to(dev), b)[:, keep])
        return hit[3], rhs, known, rows
    J = torch.zeros(gb, F * F, dtype=DTYPE, device=dev)
    J.index_add_(1, st.ff_index, g[:, st.ff_resistor] * st.ff_sign)
    J = J.view(gb, F, F)
    if gb == 1 and len(st.fk_row):
        rhs = -(st.laplacian(g[0]) @ known.T).T[:, st.free].contiguous()  # -G_fk V_k (V is 0 at free nodes)
    else:
        rhs = torch.zeros(b, F, dtype=DTYPE, device=dev)
        if len(st.fk_row):
            rhs.index_add_(1, st.fk_row, _batch(g[:, st.fk_resistor], b) * known[:, st.fk_col])
    if len(circuit.current_nodes):
        p = st.pos[st.ext(circuit.current_nodes.to(dev))]
        keep = p >= 0
        rhs.index_add_(1, p[keep], _batch(circuit.current_a.to(dev), b)[:, keep])
    return J, rhs, known, None


def _stamp_diodes(circuit, st, J, rhs, known, vd_groups, active, pos):
    """Add every diode's companion model (linearised at ``vd_groups``) to ``J (b, F, F)`` and ``rhs (b, F)``.

    ``pos`` maps nodes to rows of the system (``st.pos``, or ``st.pos_red`` for the reduced one).
    """
    b, F = rhs.shape
    Jf = J.view(b, F * F)
    kn = known[active]
    for group, vd, (a, c) in zip(circuit.diodes, vd_groups, st.diode_ext):
        pa, pc = pos[a], pos[c]
        g = group.model.conductance(vd)
        j = group.model.current(vd) - g * vd - g * group.bias_v.to(st.device)
        ka, kc = kn[:, a], kn[:, c]
        fa, fc = pa >= 0, pc >= 0
        both = fa & fc
        Jf.index_add_(1, pa[fa] * F + pa[fa], g[:, fa])
        Jf.index_add_(1, pc[fc] * F + pc[fc], g[:, fc])
        Jf.index_add_(1, pa[both] * F + pc[both], -g[:, both])
        Jf.index_add_(1, pc[both] * F + pa[both], -g[:, both])
        # anode row: -(j) + g V_c(known);  cathode row: +j + g V_a(known)
        rhs.index_add_(1, pa[fa], (-j + g * kc * (~fc))[:, fa])
        rhs.index_add_(1, pc[fc], (j + g * ka * (~fa))[:, fc])


def _eliminate_amplifiers(circuit, st, J, rhs, known, active):
    """Fold each amplifier output's row into its input's row and substitute ``V_out = gain V_in``.

    Returns the reduced system over the unknowns ``st.keep``. Two parts: the
    matrix's (which a shared matrix can reuse, :func:`_reduced_shared_system`) and the rhs's.
    """
    if not len(circuit.amplifier_nodes):
        return J, rhs
    shared = J.shape[0] == 1
    J_red, columns = _eliminate_amplifiers_matrix(circuit, st, J, known.shape[0], active, shared)
    return J_red, _eliminate_amplifiers_rhs(circuit, st, rhs, known, active, shared, columns)


def _amplifier_gains(circuit, st, b: int, active, shared: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(gain, current_gain)`` of the active samples, ``(m, A)``; ``(1, A)`` for a matrix shared by the batch."""
    gain = _batch(circuit.gain.to(st.device), b)[active]
    cg = _batch(circuit.current_gain.to(st.device), b)[active]
    return (gain[:1], cg[:1]) if shared else (gain, cg)


def _eliminate_amplifiers_matrix(circuit, st, J, b: int, active, shared: bool) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
    """The matrix part of :func:`_eliminate_amplifiers` (``J`` is changed in place): the reduced ``J`` and, per
    level of amplifiers, the columns of the outputs of amplifiers fed by known nodes (they move to the rhs)."""
    gain, cg = _amplifier_gains(circuit, st, b, active, shared)
    columns = []
    for ks in st.amp_levels:  # downstream first
        pin, pout = st.amp_in_pos[ks], st.amp_out_pos[ks]
        free_in = pin >= 0
        if free_in.any():
            kk = ks[free_in]
            J.index_add_(1, pin[free_in], cg[:, kk].unsqueeze(-1) * J[:, pout[free_in], :])
            J.index_add_(2, pin[free_in], gain[:, kk].unsqueeze(1) * J[:, :, pout[free_in]])
        columns.append(J[:, :, pout[~free_in]].clone() if (~free_in).any() else None)
    keep = st.keep
    return J[:, keep][:, :, keep], columns


def _eliminate_amplifiers_rhs(circuit, st, rhs, known, active, shared: bool, columns) -> torch.Tensor:
    """The rhs part of :func:`_eliminate_amplifiers` (``rhs`` is changed in place), given the matrix part's columns."""
    gain, cg = _amplifier_gains(circuit, st, known.shape[0], active, shared)
    kn = known[active]
    for ks, cols in zip(st.amp_levels, columns):
        pin, pout = st.amp_in_pos[ks], st.amp_out_pos[ks]
        free_in = pin >= 0
        if free_in.any():
            kk = ks[free_in]
            rhs.index_add_(1, pin[free_in], cg[:, kk].expand(len(rhs), -1) * rhs[:, pout[free_in]])
        if cols is not None:
            kk = ks[~free_in]
            v_out = gain[:, kk] * kn[:, st.amp_in_ext[kk]]  # (m, k)
            rhs -= (cols @ v_out.unsqueeze(-1)).squeeze(-1)
    return rhs[:, st.keep]


def _reduced_shared_system(circuit, st, J_lin, rhs_lin, known, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_eliminate_amplifiers` of a matrix shared by the batch, its matrix part kept while the circuit's
    conductance and gain tensors are the same, unchanged objects (EP's free and nudged phases)."""
    if not len(circuit.amplifier_nodes):
        return J_lin, rhs_lin
    owners = (circuit.conductance_s, circuit.gain, circuit.current_gain)
    versions = tuple(t._version for t in owners)
    active = torch.arange(b, device=st.device)
    hit = getattr(st, "reduced_matrix", None)
    if hit is None or hit[1] != versions or not all(a is c for a, c in zip(hit[0], owners)):
        hit = (owners, versions, *_eliminate_amplifiers_matrix(circuit, st, J_lin.clone(), b, active, True))
        st.reduced_matrix = hit
    return hit[2], _eliminate_amplifiers_rhs(circuit, st, rhs_lin.clone(), known, active, True, hit[3])


def _expand_amplifiers(circuit, st, v_free, known, active):
    """Fill the amplifier outputs of ``v_free (m, F)`` from their inputs (upstream first)."""
    if not len(circuit.amplifier_nodes):
        return v_free
    b = known.shape[0]
    gain = _batch(circuit.gain.to(st.device), b)[active]
    kn = known[active]
    for ks in reversed(st.amp_levels):
        pin, pout = st.amp_in_pos[ks], st.amp_out_pos[ks]
        vin = torch.where(pin >= 0, v_free[:, pin.clamp(min=0)], kn[:, st.amp_in_ext[ks]])
        v_free[:, pout] = gain[:, ks] * vin
    return v_free


def solve_dc(
    circuit: Circuit,
    *,
    batch_size: int | None = None,
    initial_v: torch.Tensor | None = None,
    options: SolverOptions | None = None,
    device: torch.device | str | None = None,
    check_kcl: bool = True,
    reuse: DCSolution | None = None,
    source_currents: bool = True,
) -> DCSolution:
    """DC operating point of a batch of circuits.

    Args:
        circuit: the circuits (values of shape ``(k,)`` shared, ``(batch, k)`` per circuit).
        batch_size: number of circuits when every value is shared (default 1).
        initial_v: ``(batch, n_nodes)`` voltages to start Newton from (e.g. the
            free phase's solution when solving a nudged phase); default 0 V
            across every diode.
        options: tolerances (:class:`SolverOptions`).
        device: where to solve (default: where the circuit's tensors are, CPU).
        check_kcl: verify Kirchhoff's current law at the solution.
        reuse: a solution of the same circuits (e.g. EP's free phase) whose
            Jacobian factorisation is reused: the first iterations are chord
            steps (no new factorisation), then Newton takes over if needed.
            Needs ``initial_v`` (usually that solution's voltages).
        source_currents: compute the current of every voltage source (one
            pass over all resistors); without it ``source_current_a`` is None.

    Returns:
        the :class:`DCSolution`.

    Raises:
        SimulationError: a singular circuit (names the sample), no convergence
            within ``max_iterations`` (names the samples and the node that
            moved most), or a KCL residual above tolerance.
    """
    opts = options or SolverOptions()
    per_circuit = circuit.batch_size
    b = per_circuit or batch_size or 1
    if per_circuit is not None and batch_size is not None and batch_size != per_circuit:
        raise SimulationError(f"batch_size {batch_size} disagrees with the circuit's per-circuit values ({per_circuit})")
    dev = torch.device(device) if device is not None else circuit.conductance_s.device
    st = _stamps(circuit, dev)
    n, F, U = st.n, st.F, st.n_unknowns
    if initial_v is not None and tuple(initial_v.shape) != (b, n):
        raise SimulationError(f"initial_v must have shape ({b}, {n}), got {tuple(initial_v.shape)}")
    if reuse is not None and (reuse.jacobian_lu is None or tuple(reuse.jacobian_lu[0].shape) != (b, U, U) or initial_v is None):
        raise SimulationError("reuse needs a solution of the same circuits with its Jacobian kept, and initial_v")
    system = _compiled_system(circuit, st, dev)
    if system is not None:
        return _solve_compiled(circuit, system, b, initial_v, reuse, opts, check_kcl, source_currents)
    J_lin, rhs_lin, known, rows = _linear_system(circuit, st, b)

    def diode_v(v_ext: torch.Tensor) -> list[torch.Tensor]:
        """Operating voltage of every diode (after its series bias) from extended node voltages."""
        return [v_ext[:, a] - v_ext[:, c] - g.bias_v.to(dev) for g, (a, c) in zip(circuit.diodes, st.diode_ext)]

    if initial_v is not None:
        start = known.clone()
        start[:, st.free] = initial_v.to(dev, DTYPE)[:, st.free]
        vd = diode_v(start)
    else:
        vd = [torch.zeros(b, len(g), dtype=DTYPE, device=dev) for g in circuit.diodes]

    v_free = torch.zeros(b, F, dtype=DTYPE, device=dev)
    iterations = torch.zeros(b, dtype=torch.long, device=dev)
    active = torch.arange(b, device=dev)
    previous = torch.full((b, U), float("nan"), dtype=DTYPE, device=dev)
    last_change = torch.zeros(b, U, dtype=DTYPE, device=dev)
    keep_lu = True
    lu_store = torch.zeros(b, U, U, dtype=DTYPE, device=dev)
    piv_store = torch.zeros(b, U, dtype=torch.int32, device=dev)  # LAPACK pivots (the compiled path: int64)
    chord = None
    if reuse is not None:
        chord = reuse.jacobian_lu
        keep_lu = False
    if initial_v is not None:
        previous = initial_v.to(dev, DTYPE)[:, st.free[st.keep]].clone()
    shared = J_lin.shape[0] == 1
    # fast path: with shared values and no diode on an amplifier output, the amplifiers are eliminated once
    reduce_once = shared and circuit.gain.dim() == 1 and circuit.current_gain.dim() == 1 and not st.diodes_on_amplifier_outputs
    if reduce_once:
        J_lin, rhs_lin = _reduced_shared_system(circuit, st, J_lin, rhs_lin, known, b)
    if chord is not None and chord[1].dtype == torch.int64:
        chord = None  # factorised by the compiled path: plain Newton from initial_v instead
    if U == 0:  # every node is fixed by a source or an amplifier output: nothing to iterate
        v_free = _expand_amplifiers(circuit, st, v_free, known, torch.arange(b, device=dev))
    else:
        for it in range(1, opts.max_iterations + 1):
            m = active.numel()
            everyone = m == b
            if chord is not None and it <= _CHORD_ITERATIONS and reduce_once:
                # chord step with the reused factorisation: V <- V - J*^-1 r(V), r the KCL residual at V
                v_u = previous[active]
                residual_u = v_u @ J_lin[0].T - (rhs_lin if everyone else rhs_lin[active])
                for group, v_d, (a, c) in zip(circuit.diodes, vd, st.diode_ext):
                    i_d = group.model.current(v_d if everyone else v_d[active])
                    pa, pc = st.pos_red[a], st.pos_red[c]
                    residual_u.index_add_(1, pa[pa >= 0], i_d[:, pa >= 0])
                    residual_u.index_add_(1, pc[pc >= 0], -i_d[:, pc >= 0])
                lu_c, piv_c = chord if everyone else (chord[0][active], chord[1][active])
                solution = v_u - torch.linalg.lu_solve(lu_c, piv_c, residual_u.unsqueeze(-1)).squeeze(-1)
                info = torch.zeros(m, dtype=torch.int32, device=dev)
            else:
                J = (J_lin.expand(m, *J_lin.shape[1:]) if shared else J_lin[active]).clone()
                rhs = rhs_lin[active].clone()
                _stamp_diodes(circuit, st, J, rhs, known, [v[active] for v in vd], active, st.pos_red if reduce_once else st.pos)
                if not reduce_once:
                    J, rhs = _eliminate_amplifiers(circuit, st, J, rhs, known, active)
                if chord is not None and it <= _CHORD_ITERATIONS:
                    v_u = previous[active]
                    residual_u = (J @ v_u.unsqueeze(-1)).squeeze(-1) - rhs
                    solution = v_u - torch.linalg.lu_solve(chord[0][active], chord[1][active], residual_u.unsqueeze(-1)).squeeze(
                        -1
                    )
                    info = torch.zeros(m, dtype=torch.int32, device=dev)
                else:
                    lu, pivots, info = torch.linalg.lu_factor_ex(J)
                    solution = torch.linalg.lu_solve(lu, pivots, rhs.unsqueeze(-1)).squeeze(-1)
            if (info != 0).any() or not torch.isfinite(solution).all():
                bad = active[(info != 0) | ~torch.isfinite(solution).all(1)]
                raise SimulationError(
                    f"singular circuit matrix for sample(s) {bad[:5].tolist()} at Newton iteration {it}: "
                    f"{_singular_reason(circuit, int(bad[0]))} ({circuit.describe()})"
                )
            full = torch.zeros(m, F, dtype=DTYPE, device=dev)
            full[:, st.keep] = solution
            full = _expand_amplifiers(circuit, st, full, known, active)
            v_free[active] = full
            iterations[active] = it
            v_ext = known[active].clone()
            v_ext[:, st.free] = full
            vd_new = diode_v(v_ext)
            limited = torch.zeros(m, dtype=torch.bool, device=dev)
            for g, (group, old, new) in enumerate(zip(circuit.diodes, vd, vd_new)):
                lim = group.model.limit(new, old[active])
                limited |= (lim != new).any(1)
                vd[g][active] = lim
            change = (solution - previous[active]).abs()
            last_change[active] = torch.nan_to_num(change, nan=float("inf"))
            tol = opts.reltol * solution.abs().amax(1, keepdim=True) + opts.vntol_v
            done = (change <= tol).all(1) & ~limited
            if keep_lu and done.any():
                lu_store[active[done]], piv_store[active[done]] = lu[done], pivots[done]
            previous[active] = solution
            active = active[~done]
            if active.numel() == 0:
                break
        else:
            worst = last_change[active].amax(0).argmax()
            node = int(st.free[st.keep[worst]])
            raise SimulationError(
                f"DC solution did not converge within {opts.max_iterations} Newton iterations for sample(s) "
                f"{active[:5].tolist()} ({active.numel()} in all); largest last change "
                f"{last_change[active].max().item():.3g} V at node {node} '{circuit.node_names[node]}'"
            )

    voltages = known[:, :n].clone()
    voltages[:, st.free] = v_free
    return _finish(
        circuit, st, voltages, iterations, (lu_store, piv_store) if keep_lu else None, rows, opts, check_kcl, source_currents
    )


def _finish(circuit, st, voltages, iterations, jacobian_lu, rows, opts, check_kcl, source_currents) -> DCSolution:
    """Kirchhoff's current law at the solution ``voltages (b, n)`` (checked if ``check_kcl``) and, if asked for,
    the source currents: the :class:`DCSolution`. ``rows``: the dense free-node rows of the Laplacian, or None."""
    b, n = voltages.shape
    dev, U = voltages.device, st.n_unknowns
    resistor_net = None
    v_ext = with_ground(voltages)
    if rows is not None and not source_currents:
        resistor_net = torch.zeros(b, n + 1, dtype=DTYPE, device=dev)
        resistor_net[:, st.free] = v_ext @ rows.T
    net, amp = kcl_currents(circuit, voltages, resistor_net=resistor_net)
    free_net = net[:, st.free[st.keep]]
    residual = free_net.abs().amax(1) if U else torch.zeros(b, dtype=DTYPE, device=dev)
    if check_kcl and U:
        scale = _current_scale(circuit, voltages, rows)
        bad = residual > opts.kcl_rtol * scale + opts.kcl_atol_a
        if bad.any():
            s = int(bad.nonzero()[0])
            node = int(st.free[st.keep[free_net[s].abs().argmax()]])
            raise SimulationError(
                f"Kirchhoff's current law fails at node {node} '{circuit.node_names[node]}' of sample {s}: "
                f"residual {residual[s].item():.3g} A against currents up to {scale[s].item():.3g} A"
            )
    src = None
    if source_currents:
        src = net[:, circuit.source_nodes.to(dev)] if len(circuit.source_nodes) else torch.zeros(b, 0, dtype=DTYPE, device=dev)
    return DCSolution(voltages, src, amp, iterations, residual, jacobian_lu)


class _CompiledSystem:
    """What the compiled small-circuit path (:func:`.small.solve_small`) needs of one topology and one set of
    shared values (conductances, amplifier gains, diode biases), built once and kept on the topology's
    :class:`_Stamps` while those values stay the same.

    Attributes:
        j0: ``(U, U)`` linear part of the reduced Jacobian (S); block: the size of its diagonal leading block.
        m_s, m_c: ``(S, U)``, ``(C, U)``: the reduced right-hand side is ``source_v @ m_s + current_a @ m_c`` (A).
        rows: ``(F, n + 1)`` the dense free-node rows of the resistor Laplacian (S), for the source currents.
        the rest: index and value arrays of :func:`.small.solve_small` (nodes, diodes, amplifiers upstream first).
    """

    def __init__(self, circuit: Circuit, st: _Stamps, table: tuple[np.ndarray, np.ndarray]) -> None:
        n, F = st.n, st.F
        S = len(circuit.source_nodes)
        self.st = st
        self.rows = st.free_rows(circuit.conductance_s.detach())
        j_lin = self.rows[:, st.free].unsqueeze(0).contiguous()
        j_red, columns = _eliminate_amplifiers_matrix(circuit, st, j_lin, 1, torch.arange(1), True)
        # the reduced rhs is linear in the free rows' rhs (F) and in the known voltages: its two maps
        free_map = _eliminate_amplifiers_rhs(
            circuit, st, torch.eye(F, dtype=DTYPE), torch.zeros(F, n + 1, dtype=DTYPE), torch.arange(F), True, columns
        )
        basis = torch.zeros(S, n + 1, dtype=DTYPE)
        basis[torch.arange(S), circuit.source_nodes] = 1.0
        known_map = _eliminate_amplifiers_rhs(circuit, st, torch.zeros(S, F, dtype=DTYPE), basis, torch.arange(S), True, columns)
        # rhs over the free nodes: -G_fk V_k (the rows at the sources) + the injected currents
        inject = torch.zeros(len(circuit.current_nodes), F, dtype=DTYPE)
        p = st.pos[st.ext(circuit.current_nodes)]
        inject[torch.arange(len(p))[p >= 0], p[p >= 0]] = 1.0
        self.j0 = _owned(j_red[0])
        self.m_s = _owned(known_map - self.rows[:, circuit.source_nodes].T @ free_map)
        self.m_c = _owned(inject @ free_map)
        self.unknown_node = _owned(st.free[st.keep])
        self.source_node = _owned(circuit.source_nodes)
        order = torch.cat(list(reversed(st.amp_levels))) if st.amp_levels else torch.zeros(0, dtype=torch.long)
        self.amp_in = _owned(st.amp_in_ext[order])
        self.amp_out = _owned(st.ext(circuit.amplifier_nodes[:, 1])[order])
        self.amp_gain = _owned(circuit.gain[order])
        empty = torch.zeros(0, dtype=torch.long)
        na = torch.cat([a for a, _ in st.diode_ext]) if circuit.diodes else empty
        nc = torch.cat([c for _, c in st.diode_ext]) if circuit.diodes else empty
        self.na, self.nc = _owned(na), _owned(nc)
        self.pa, self.pc = _owned(st.pos_red[na]), _owned(st.pos_red[nc])
        bias = [g.bias_v.detach() for g in circuit.diodes]
        self.bias = _owned(torch.cat(bias) if bias else torch.zeros(0, dtype=DTYPE))
        self.kinds, self.params = table
        self.block = small.diagonal_block(self.j0, self.pa, self.pc)
        self.models = tuple(g.model for g in circuit.diodes)
        #: the shared values it was built from, and up to 4 tensors (with their versions) known to hold them
        self.values: tuple[torch.Tensor, ...] = ()
        self.seen: list[tuple[tuple[torch.Tensor, ...], tuple[int, ...]]] = []


def _owned(values: torch.Tensor) -> np.ndarray:
    """A numpy copy of ``values`` that owns its memory: a tensor's storage can move (to shared memory when the
    tensor is sent to another process), which would leave a kept view (``Tensor.numpy()``) pointing at freed memory."""
    return values.detach().contiguous().numpy().copy()


def _shared_values(circuit: Circuit) -> tuple[torch.Tensor, ...]:
    """The values a :class:`_CompiledSystem` is built from (besides the topology)."""
    return (circuit.conductance_s, circuit.gain, circuit.current_gain, *(g.bias_v for g in circuit.diodes))


def _compiled_system(circuit: Circuit, st: _Stamps, dev: torch.device) -> _CompiledSystem | None:
    """The :class:`_CompiledSystem` of ``circuit``, or None where the compiled path does not apply (not on CPU, too
    many unknowns, per-circuit conductances or gains, a diode on an amplifier output, an element numba lacks).

    Kept on ``st`` while the shared values are the same tensors, unchanged (EP's free and nudged phases), or
    equal ones (a model's circuit rebuilt with the same parameters); rebuilt otherwise.
    """
    if dev.type != "cpu" or not 0 < st.n_unknowns <= small.MAX_UNKNOWNS or not st.dense_rows or st.diodes_on_amplifier_outputs:
        return None
    if circuit.conductance_s.dim() != 1 or circuit.gain.dim() != 1 or circuit.current_gain.dim() != 1:
        return None
    models = tuple(g.model for g in circuit.diodes)
    hit: _CompiledSystem | None = getattr(st, "compiled_system", None)
    if hit is None or not all(a is m or a == m for a, m in zip(hit.models, models)):
        table = small.element_table([g.model for g in circuit.diodes for _ in range(len(g))])
        if table is None:
            return None
        hit = None
    owners = _shared_values(circuit)
    if hit is not None and len(hit.values) == len(owners):
        for seen, versions in hit.seen:
            if all(a is o and v == o._version for a, o, v in zip(seen, owners, versions)):
                return hit
        if all(torch.equal(v, o) for v, o in zip(hit.values, owners)):
            hit.seen = [(owners, tuple(o._version for o in owners)), *hit.seen[:3]]
            return hit
    hit = _CompiledSystem(circuit, st, table if hit is None else (hit.kinds, hit.params))
    hit.models = models
    hit.seen = [(owners, tuple(o._version for o in owners))]
    hit.values = tuple(o.detach().clone() for o in owners)
    st.compiled_system = hit
    return hit


def _per_circuit(values: torch.Tensor, b: int) -> np.ndarray:
    """``(b, k)`` C-contiguous float64 numpy view (or copy) of shared ``(k,)`` or per-circuit ``(b, k)`` values."""
    values = values.detach()
    return (values.expand(b, -1) if values.dim() == 1 else values).to(DTYPE).contiguous().numpy()


def _solve_compiled(circuit, system, b, initial_v, reuse, opts, check_kcl, source_currents) -> DCSolution:
    """:func:`solve_dc` of small circuits in one compiled call (:func:`.small.solve_small`): Newton (or chord
    steps reusing ``reuse``'s factorisation) per sample; keeps each sample's last LU factorisation (pivots
    int64, 0-based) unless chord steps were asked for."""
    st = system.st
    n, U = st.n, st.n_unknowns
    chord = reuse.jacobian_lu if reuse is not None else None
    if chord is not None and chord[1].dtype != torch.int64:
        chord = None  # factorised by the torch path: plain Newton from initial_v instead
    keep_lu = reuse is None
    if chord is not None:
        chord_lu, chord_piv, n_chord = chord[0].numpy(), chord[1].numpy(), _CHORD_ITERATIONS
    else:
        chord_lu, chord_piv, n_chord = _NO_LU, _NO_PIVOTS, 0
    lu = torch.empty(b, U, U, dtype=DTYPE) if keep_lu else None
    pivots = torch.empty(b, U, dtype=torch.int64) if keep_lu else None
    v0 = initial_v.detach().to(DTYPE).contiguous().numpy() if initial_v is not None else _NO_START
    voltages, iterations, status, last_change, residual, scale = small.solve_small(
        system.j0,
        system.block,
        system.m_s,
        system.m_c,
        _per_circuit(circuit.source_v, b),
        _per_circuit(circuit.current_a, b),
        n,
        system.unknown_node,
        system.source_node,
        system.amp_in,
        system.amp_out,
        system.amp_gain,
        system.pa,
        system.pc,
        system.na,
        system.nc,
        system.bias,
        system.kinds,
        system.params,
        v0,
        initial_v is not None,
        opts.reltol,
        opts.vntol_v,
        opts.max_iterations,
        chord_lu,
        chord_piv,
        n_chord,
        keep_lu,
        lu.numpy() if keep_lu else _NO_LU,
        pivots.numpy() if keep_lu else _NO_PIVOTS,
    )
    if status.any():
        singular = np.flatnonzero(status == small.SINGULAR)
        if singular.size:
            raise SimulationError(
                f"singular circuit matrix for sample(s) {singular[:5].tolist()}: "
                f"{_singular_reason(circuit, int(singular[0]))} ({circuit.describe()})"
            )
        failed = np.flatnonzero(status != small.CONVERGED)
        worst = int(np.abs(last_change[failed]).max(0).argmax())
        node = int(system.unknown_node[worst])
        raise SimulationError(
            f"DC solution did not converge within {opts.max_iterations} Newton iterations for sample(s) "
            f"{failed[:5].tolist()} ({failed.size} in all); largest last change "
            f"{np.abs(last_change[failed]).max():.3g} V at node {node} '{circuit.node_names[node]}'"
        )
    voltages, iterations = torch.from_numpy(voltages), torch.from_numpy(iterations)
    jacobian_lu = (lu, pivots) if keep_lu else None
    if source_currents:
        return _finish(circuit, st, voltages, iterations, jacobian_lu, system.rows, opts, check_kcl, source_currents)
    # the compiled path checked Kirchhoff's current law itself (source and amplifier currents were not asked for)
    if check_kcl and (residual > opts.kcl_rtol * scale + opts.kcl_atol_a).any():
        _raise_on_kcl(circuit, torch.from_numpy(residual), torch.from_numpy(scale), opts)
    residual = torch.from_numpy(residual)
    amp = None if len(circuit.amplifier_nodes) else torch.zeros(b, 0, dtype=DTYPE)
    return DCSolution(voltages, None, amp, iterations, residual, jacobian_lu)


_NO_LU = np.zeros((1, 1, 1))
_NO_PIVOTS = np.zeros((1, 1), dtype=np.int64)
_NO_START = np.zeros((1, 1))


def _singular_reason(circuit: Circuit, sample: int) -> str:
    """Why a sample's matrix is singular, as far as the topology tells: nodes cut off by zero conductances."""
    floating = circuit.floating_nodes(sample)
    if floating:
        names = ", ".join(f"'{circuit.node_names[i]}'" for i in floating[:5])
        return (f"node(s) {names} have no DC path to ground or a source in sample {sample} "
                f"(their resistors to the rest of the circuit have conductance 0 S)")  # fmt: skip
    return "a node without a DC path, or a loop of amplifiers / sources"


def _raise_on_kcl(circuit: Circuit, residual: torch.Tensor, scale: torch.Tensor, opts: SolverOptions) -> None:
    bad = residual > opts.kcl_rtol * scale + opts.kcl_atol_a
    if bad.any():
        s = int(bad.nonzero()[0])
        raise SimulationError(
            f"Kirchhoff's current law fails in sample {s}: residual {residual[s].item():.3g} A against currents up to "
            f"{scale[s].item():.3g} A ({circuit.describe()})"
        )


def _current_scale(circuit: Circuit, voltages: torch.Tensor, rows: torch.Tensor | None) -> torch.Tensor:
    """``(batch,)`` a scale of the currents: the largest ``sum_j |G_ij| |V_j|`` over nodes, diode and source currents.

    ``rows``: the dense free-node rows of the Laplacian when the solver has them (then only free nodes count).
    """
    b, n = voltages.shape
    dev = voltages.device
    v = with_ground(voltages)
    largest = torch.zeros(b, dtype=voltages.dtype, device=dev)
    if len(circuit.resistor_nodes):
        g = circuit.conductance_s.to(dev)
        if rows is not None:
            largest = (v.abs() @ rows.abs().T).amax(1)
        elif g.dim() == 1:
            st = _stamps(circuit, dev)
            lap = st.laplacian(g)
            absl = lap.abs()  # |G_ij|
            largest = (absl @ v.abs().T).T.amax(1)
        else:
            r = ground_last(circuit.resistor_nodes, n).to(dev)
            largest = (g * (v[:, r[:, 0]] - v[:, r[:, 1]])).abs().amax(1)
    for group in circuit.diodes:
        a, c = ground_last(group.anode, n).to(dev), ground_last(group.cathode, n).to(dev)
        largest = torch.maximum(largest, group.model.current(v[:, a] - v[:, c] - group.bias_v.to(dev)).abs().amax(1))
    if len(circuit.current_nodes):
        largest = torch.maximum(largest, _batch(circuit.current_a.to(dev), b).abs().amax(1))
    return largest
