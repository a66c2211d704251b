"""Newton's method for many small circuits at once, compiled with numba (one sample after the other).

The native solver (:mod:`.native`) reduces a batch of circuits to
``J(v) V = rhs(v)`` over the unknown node voltages, with a linear part
``J0 (U, U)`` shared by every sample and, per sample, the companion models
of the diodes. For small systems (a few dozen unknowns, e.g. EBANA's Iris
network) the torch path spends its time in launching batched tensor
operations rather than in arithmetic; this module runs the same iteration
(the same stamps, limiters and convergence test) per sample in compiled
code, and returns the same things: voltages, iteration counts and the last
LU factorisation (for the chord steps of a nudged phase). It runs on one
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

__all__ = ["MAX_UNKNOWNS", "element_table", "newton_small"]

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


@numba.njit(cache=True)
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


@numba.njit(cache=True)
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


@numba.njit(cache=True)
def _lu_factor(a, piv):
    """In-place LU with partial pivoting; returns False if a pivot is exactly zero."""
    n = a.shape[0]
    for k in range(n):
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


@numba.njit(cache=True)
def _lu_solve(lu, piv, b):
    n = lu.shape[0]
    x = b.copy()
    for k in range(n):
        p = piv[k]
        if p != k:
            x[k], x[p] = x[p], x[k]
    for i in range(n):
        s = x[i]
        for j in range(i):
            s -= lu[i, j] * x[j]
        x[i] = s
    for i in range(n - 1, -1, -1):
        s = x[i]
        for j in range(i + 1, n):
            s -= lu[i, j] * x[j]
        x[i] = s / lu[i, i]
    return x


@numba.njit(cache=True)
def newton_small(
    j0, rhs0, pa, pc, offset, kinds, params, vd0, v0, has_v0, reltol, vntol, max_it, chord_lu, chord_piv, n_chord, lu_out, piv_out
):
    """Solve every sample's reduced system; see the module docstring.

    Args:
        j0: ``(U, U)`` linear part; rhs0: ``(B, U)``; pa, pc: ``(D,)`` rows of
            each diode's anode and cathode (-1: known node); offset: ``(B, D)``
            known part of each diode's voltage (known terminals, minus the bias);
            kinds, params: the elements; vd0: ``(B, D)`` starting diode voltages;
            v0: ``(B, U)`` starting voltages (used if ``has_v0``);
            chord_lu, chord_piv: a factorisation to reuse for the first
            ``n_chord`` iterations (``n_chord = 0``: none); lu_out, piv_out:
            receive the last factorisation.

    Returns:
        ``V (B, U)``, ``iterations (B,)``, ``status (B,)`` (0 converged, 1 not, 2 singular),
        ``last_change (B, U)``, and Kirchhoff's current law at the solution: the largest
        residual ``(B,)`` (A) and the largest sum of |currents| at a node ``(B,)`` (A).
    """
    B, U = rhs0.shape
    D = pa.shape[0]
    V = np.zeros((B, U))
    iterations = np.zeros(B, dtype=np.int64)
    status = np.full(B, NOT_CONVERGED, dtype=np.int64)
    last_change = np.zeros((B, U))
    residual = np.zeros(B)
    current_scale = np.zeros(B)
    for b in range(B):
        vd = vd0[b].copy()
        prev = v0[b].copy()
        have_prev = has_v0
        for it in range(1, max_it + 1):
            if it <= n_chord:
                r = -rhs0[b].copy()
                for i in range(U):
                    s = 0.0
                    for j in range(U):
                        s += j0[i, j] * prev[j]
                    r[i] += s
                for d in range(D):
                    cur, _ = _current_and_conductance(kinds[d], params[d], vd[d])
                    if pa[d] >= 0:
                        r[pa[d]] += cur
                    if pc[d] >= 0:
                        r[pc[d]] -= cur
                delta = _lu_solve(chord_lu[b], chord_piv[b], r)
                sol = prev - delta
            else:
                J = j0.copy()
                r = rhs0[b].copy()
                for d in range(D):
                    cur, g = _current_and_conductance(kinds[d], params[d], vd[d])
                    jeq = cur - g * vd[d] + g * offset[b, d]
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
                piv = np.zeros(U, dtype=np.int64)
                if not _lu_factor(J, piv):
                    status[b] = SINGULAR
                    break
                sol = _lu_solve(J, piv, r)
                lu_out[b] = J
                piv_out[b] = piv
            iterations[b] = it
            limited = False
            for d in range(D):
                v_new = offset[b, d]
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
            prev = sol
            have_prev = True
            if done:
                status[b] = CONVERGED
                break
        V[b] = prev
        # Kirchhoff's current law at the unknowns (amplifier currents folded in): J0 V - rhs0 + diode currents
        r = -rhs0[b].copy()
        size = np.abs(rhs0[b])
        for i in range(U):
            for j in range(U):
                r[i] += j0[i, j] * prev[j]
                size[i] += abs(j0[i, j] * prev[j])
        for d in range(D):
            v_d = offset[b, d]
            if pa[d] >= 0:
                v_d += prev[pa[d]]
            if pc[d] >= 0:
                v_d -= prev[pc[d]]
            cur, _ = _current_and_conductance(kinds[d], params[d], v_d)
            if pa[d] >= 0:
                r[pa[d]] += cur
                size[pa[d]] += abs(cur)
            if pc[d] >= 0:
                r[pc[d]] -= cur
                size[pc[d]] += abs(cur)
        for i in range(U):
            residual[b] = max(residual[b], abs(r[i]))
            current_scale[b] = max(current_scale[b], size[i])
    return V, iterations, status, last_change, residual, current_scale
