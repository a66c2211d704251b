"""Newton's method for many small circuits at once, compiled with numba (one sample after the other).

The native solver (:mod:`.native`) reduces a batch of circuits to
``J(v) V = rhs(v)`` over the unknown node voltages, with a linear part
``J0 (U, U)`` shared by every sample and, per sample, the companion models
of the diodes. For small systems (a few dozen unknowns, e.g. EBANA's Iris
network) the torch path spends its time in launching batched tensor
operations rather than in arithmetic; this module runs the same iteration
(the same stamps, limiters and convergence test) per sample in compiled
code, and returns the same things: voltages, iteration counts and the last
LU factorisation (for the chord steps of a nudged phase). One call does a
whole solve: the native solver precomputes, once per topology and set of
shared values, the reduced ``J0`` and the linear maps from the source
voltages and injected currents to the right-hand side, so that per call
only the per-circuit values cross from torch. It runs on one
thread: a thread pool stalls for milliseconds per call whenever another
process holds a core, which costs more than these solves take.

Only the built-in elements are compiled: :class:`~..elements.ShockleyDiode`
(``kind 0``, parameters ``I_s, nV_T, g_min, V_crit``) and
:class:`~..elements.PiecewiseLinearDiode` (``kind 1``, ``g_on, g_off, V_on``);
the formulas mirror theirs exactly.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from inmaterio.circuits.elements import PiecewiseLinearDiode, ShockleyDiode, TwoTerminal

__all__ = ["MAX_UNKNOWNS", "diagonal_block", "element_table", "solve_small"]

#: Largest reduced system solved by this path; larger ones use batched LAPACK through torch.
MAX_UNKNOWNS = 48
_MAX_EXPONENT = 80.0
#: Status codes per sample.
CONVERGED, NOT_CONVERGED, SINGULAR = 0, 1, 2


def element_table(models: list[TwoTerminal]) -> tuple[np.ndarray, np.ndarray] | None:
    """``(kind (D,), params (D, 4))`` for compiled elements, or None if one is of another type."""
    kinds = np.zeros(len(models), dtype=np.int64)
    params = np.zeros((len(models), 4))
    for k, m in enumerate(models):
        if type(m) is ShockleyDiode:
            kinds[k] = 0
            params[k] = (m.saturation_current_a, m.nvt, m.gmin_s, m.critical_voltage)
        elif type(m) is PiecewiseLinearDiode:
            kinds[k] = 1
            params[k] = (m.on_conductance_s, m.off_conductance_s, m.knee_v, 0.0)
        else:
            return None
    return kinds, params


@numba.njit(cache=True, error_model="numpy")
def _current_and_conductance(kind, p, v):
    if kind == 0:
        x = v / p[1]
        capped = min(x, _MAX_EXPONENT)
        e = math.exp(capped)
        ext = e * (1.0 + (x - capped))
        return p[0] * (ext - 1.0) + p[2] * v, p[0] / p[1] * e + p[2]
    extra = p[0] - p[1]
    if v > p[2]:
        return p[1] * v + extra * (v - p[2]), p[0]
    return p[1] * v, p[1]


@numba.njit(cache=True, error_model="numpy")
def _limit(kind, p, v_new, v_old):
    if kind != 0:
        return v_new
    nvt = p[1]
    if v_new > p[3] and abs(v_new - v_old) > 2.0 * nvt:
        if v_old > 0:
            arg = 1.0 + (v_new - v_old) / nvt
            return v_old + nvt * math.log(arg) if arg > 0 else p[3]
        return nvt * math.log(max(v_new / nvt, 1e-300))
    return v_new


@numba.njit(cache=True, error_model="numpy")
def _lu_factor(a, piv, block):
    """In-place LU with partial pivoting (LAPACK's layout, 0-based pivots); False if a pivot is exactly zero.

    ``block``: the leading ``block x block`` part of ``a`` is diagonal (zero off its diagonal; see
    :func:`diagonal_block`), so its first ``block`` steps skip the rows and columns that hold zeros there:
    the same operations on the nonzeros, in the same order, as the plain algorithm (the same factors, bit
    for bit). A row swap would break that structure, so the plain algorithm takes over from such a step.
    """
    n = a.shape[0]
    k = 0
    while k < block:
        best = abs(a[k, k])
        swap = False
        for i in range(block, n):
            if abs(a[i, k]) > best:
                swap = True
                break
        if swap:
            break
        piv[k] = k
        if best == 0.0:
            return False
        inv = 1.0 / a[k, k]
        for i in range(block, n):
            a[i, k] *= inv
            f = a[i, k]
            if f != 0.0:
                for j in range(block, n):
                    a[i, j] -= f * a[k, j]
        k += 1
    structured = k
    for k in range(structured, n):
        p = k
        best = abs(a[k, k])
        for i in range(k + 1, n):
            if abs(a[i, k]) > best:
                best = abs(a[i, k])
                p = i
        piv[k] = p
        if best == 0.0:
            return False
        if p != k:
            for j in range(n):
                a[k, j], a[p, j] = a[p, j], a[k, j]
        inv = 1.0 / a[k, k]
        for i in range(k + 1, n):
            a[i, k] *= inv
            f = a[i, k]
            if f != 0.0:
                for j in range(k + 1, n):
                    a[i, j] -= f * a[k, j]
    return True


@numba.njit(cache=True, error_model="numpy")
def _lu_solve_into(lu, piv, b, x, block):
    """Solve ``LU x = b`` into ``x`` (``b`` is left unchanged), skipping the zeros of the diagonal leading block
    (its rows before the first row swap keep them: see :func:`_lu_factor`)."""
    n = lu.shape[0]
    kept = 0
    while kept < block and piv[kept] == kept:
        kept += 1
    x[:] = b
    for k in range(n):
        p = piv[k]
        if p != k:
            x[k], x[p] = x[p], x[k]
    for i in range(kept, n):
        s = x[i]
        for j in range(i):
            s -= lu[i, j] * x[j]
        x[i] = s
    for i in range(n - 1, -1, -1):
        s = x[i]
        for j in range(i + 1 if i >= kept else block, n):
            s -= lu[i, j] * x[j]
        x[i] = s / lu[i, i]


def diagonal_block(j0: np.ndarray, pa: np.ndarray, pc: np.ndarray) -> int:
    """The size of the largest leading block of ``j0 (U, U)`` that is diagonal and stays so with the diode
    stamps (no diode joins two of its unknowns; ``pa, pc (D,)``: each diode's unknowns, -1 for a known node)."""
    joined = (pa >= 0) & (pc >= 0) & (pa != pc)
    high = np.maximum(pa, pc)[joined]  # a diode joining unknowns low < high stamps (low, high) and (high, low)
    m = 0
    while m < j0.shape[0]:
        if j0[m, :m].any() or j0[:m, m].any() or (high == m).any():  # high == m: it joins m to the block
            break
        m += 1
    return m


@numba.njit(cache=True, error_model="numpy")
def solve_small(
    j0, block, m_s, m_c, source_v, current_a, n, unknown_node, source_node, amp_in, amp_out, amp_gain, pa, pc, na, nc,
    bias, kinds, params, v0, has_v0, reltol, vntol, max_it, chord_lu, chord_piv, n_chord, store_lu, lu_out, piv_out,
):  # fmt: skip
    """Solve every sample's reduced system from its source voltages and injected currents; see the module docstring.

    Everything that depends only on the topology and the shared values (conductances, amplifier gains,
    diode biases) comes precomputed, so one call does the whole batch: the right-hand sides, the diode
    voltages' known parts, Newton (or chord steps), the node voltages and Kirchhoff's current law.

    Args:
        j0: ``(U, U)`` linear part of the reduced Jacobian (amplifiers eliminated); block: the size of its
            diagonal leading block (:func:`diagonal_block`; 0: none).
        m_s, m_c: ``(S, U)`` and ``(C, U)``: the reduced right-hand side is ``source_v @ m_s + current_a @ m_c`` (A).
        source_v: ``(B, S)`` source voltages (V); current_a: ``(B, C)`` injected currents (A); n: the number of nodes.
        unknown_node: ``(U,)`` node of each unknown; source_node: ``(S,)`` node of each source.
        amp_in, amp_out, amp_gain: ``(A,)`` amplifier input and output nodes and gains, upstream first
            (node ``n``, one past the last, is ground).
        pa, pc: ``(D,)`` unknown of each diode's anode and cathode (-1: a known node); na, nc: ``(D,)``
            their nodes; bias: ``(D,)`` series bias (V); kinds, params: the elements (:func:`element_table`).
        v0: ``(B, n)`` starting node voltages (V), used if ``has_v0`` (else 0 V across every diode).
        reltol, vntol, max_it: the convergence test (``vntol`` in V) and the iteration limit.
        chord_lu, chord_piv: ``(B, U, U)``, ``(B, U)`` a factorisation to reuse for the first ``n_chord``
            iterations (``n_chord = 0``: none).
        store_lu: keep each sample's last factorisation in ``lu_out (B, U, U)`` and ``piv_out (B, U)``.

    Returns:
        ``voltages (B, n)`` (V), ``iterations (B,)``, ``status (B,)`` (0 converged, 1 not, 2 singular),
        ``last_change (B, U)`` (V), and Kirchhoff's current law at the solution: the largest residual
        ``(B,)`` (A) and the largest sum of ``|currents|`` at a node ``(B,)`` (A).
    """
    B, U = source_v.shape[0], j0.shape[0]
    S, C, A, D = source_node.shape[0], current_a.shape[1], amp_in.shape[0], pa.shape[0]
    voltages = np.zeros((B, n))
    iterations = np.zeros(B, dtype=np.int64)
    status = np.full(B, NOT_CONVERGED, dtype=np.int64)
    last_change = np.zeros((B, U))
    residual = np.zeros(B)
    current_scale = np.zeros(B)
    known = np.zeros(n + 1)
    rhs = np.empty(U)
    offset = np.empty(D)
    vd = np.empty(D)
    prev = np.empty(U)
    sol = np.empty(U)
    r = np.empty(U)
    J = np.empty((U, U))
    piv = np.zeros(U, dtype=np.int64)
    for b in range(B):
        for s in range(S):
            known[source_node[s]] = source_v[b, s]
        for i in range(U):
            acc = 0.0
            for s in range(S):
                acc += source_v[b, s] * m_s[s, i]
            for c in range(C):
                acc += current_a[b, c] * m_c[c, i]
            rhs[i] = acc
        for d in range(D):
            ka = known[na[d]] if pa[d] < 0 else 0.0
            kc = known[nc[d]] if pc[d] < 0 else 0.0
            offset[d] = ka - kc - bias[d]
        if has_v0:
            for i in range(U):
                prev[i] = v0[b, unknown_node[i]]
            for d in range(D):
                va = v0[b, na[d]] if pa[d] >= 0 else known[na[d]]
                vc = v0[b, nc[d]] if pc[d] >= 0 else known[nc[d]]
                vd[d] = va - vc - bias[d]
        else:
            prev[:] = 0.0
            vd[:] = 0.0
        have_prev = has_v0
        for it in range(1, max_it + 1):
            if it <= n_chord:
                for i in range(U):
                    acc = 0.0
                    for j in range(U):
                        acc += j0[i, j] * prev[j]
                    r[i] = -rhs[i] + acc
                for d in range(D):
                    cur, _ = _current_and_conductance(kinds[d], params[d], vd[d])
                    if pa[d] >= 0:
                        r[pa[d]] += cur
                    if pc[d] >= 0:
                        r[pc[d]] -= cur
                _lu_solve_into(chord_lu[b], chord_piv[b], r, sol, 0)  # another call's factors: no assumption
                for i in range(U):
                    sol[i] = prev[i] - sol[i]
            else:
                for i in range(U):
                    for j in range(U):
                        J[i, j] = j0[i, j]
                    r[i] = rhs[i]
                for d in range(D):
                    cur, g = _current_and_conductance(kinds[d], params[d], vd[d])
                    jeq = cur - g * vd[d] + g * offset[d]
                    a, c = pa[d], pc[d]
                    if a >= 0:
                        J[a, a] += g
                        r[a] -= jeq
                    if c >= 0:
                        J[c, c] += g
                        r[c] += jeq
                    if a >= 0 and c >= 0:
                        J[a, c] -= g
                        J[c, a] -= g
                if not _lu_factor(J, piv, block):
                    status[b] = SINGULAR
                    break
                _lu_solve_into(J, piv, r, sol, block)
            iterations[b] = it
            limited = False
            for d in range(D):
                v_new = offset[d]
                if pa[d] >= 0:
                    v_new += sol[pa[d]]
                if pc[d] >= 0:
                    v_new -= sol[pc[d]]
                lim = _limit(kinds[d], params[d], v_new, vd[d])
                if lim != v_new:
                    limited = True
                vd[d] = lim
            scale = 0.0
            for i in range(U):
                scale = max(scale, abs(sol[i]))
            done = have_prev and not limited
            for i in range(U):
                ch = abs(sol[i] - prev[i]) if have_prev else np.inf
                last_change[b, i] = ch
                if not ch <= reltol * scale + vntol:
                    done = False
            prev[:] = sol
            have_prev = True
            if done:
                status[b] = CONVERGED
                break
        if store_lu and iterations[b] > n_chord:
            lu_out[b] = J
            piv_out[b] = piv
        # Kirchhoff's current law at the unknowns (amplifier currents folded in): J0 V - rhs + diode currents
        size = 0.0
        for i in range(U):
            acc = -rhs[i]
            mag = abs(rhs[i])
            for j in range(U):
                t = j0[i, j] * prev[j]
                acc += t
                mag += abs(t)
            r[i] = acc
            sol[i] = mag
        for d in range(D):
            v_d = offset[d]
            if pa[d] >= 0:
                v_d += prev[pa[d]]
            if pc[d] >= 0:
                v_d -= prev[pc[d]]
            cur, _ = _current_and_conductance(kinds[d], params[d], v_d)
            if pa[d] >= 0:
                r[pa[d]] += cur
                sol[pa[d]] += abs(cur)
            if pc[d] >= 0:
                r[pc[d]] -= cur
                sol[pc[d]] += abs(cur)
        worst = 0.0
        for i in range(U):
            worst = max(worst, abs(r[i]))
            size = max(size, sol[i])
        residual[b] = worst
        current_scale[b] = size
        # node voltages: sources, unknowns, then the amplifier outputs (upstream first)
        for i in range(U):
            known[unknown_node[i]] = prev[i]
        for k in range(A):
            known[amp_out[k]] = amp_gain[k] * known[amp_in[k]]
        for i in range(n):
            voltages[b, i] = known[i]
        known[:] = 0.0
    return voltages, iterations, status, last_change, residual, current_scale
