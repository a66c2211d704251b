"""The kinetic Monte Carlo kernel (numba): rejection-free hopping with Coulomb updates.

This module holds only the hot loop; the physics and units are documented in
:mod:`inmaterio.devices.hopping`. Everything is precomputed by the caller:

- ``site_energy`` per operating point (eV): electrode potential + donor
  Coulomb + disorder, i.e. every term that does not depend on occupation;
- the Coulomb matrix ``coul`` (eV), and ``ecoul = exp(beta * coul)`` with its
  inverse, so that a hop updates the Boltzmann factors of every site with
  two multiplications per site and no exponential;
- compact neighbour rows: row s lists in ``nbr[s, :n_nbr[s]]`` the sites
  within the cut-off of site s, with their rate prefactors
  ``pair_w = nu0 exp(-2r/a)`` and ``pair_wx = pair_w * exp(beta * coul)``
  in the same positions of (N, K) arrays. The per-hop rate pass, which
  dominates the cost of a hop, then visits only the pairs that can hop (a
  contiguous window of a dense row sorted by x visited three times as many,
  most of them beyond the cut-off); and CSR lists of site-electrode pairs
  (``elec_w = nu0 exp(-2r/a)``).

Rates in product form. With ``a_i = exp(beta (E_i - E_ref))`` (E_i the
site energy including the Coulomb field of all other charges):

- hop site i -> empty site j:  ``w_ij min(1, a_i / a_j * exp(beta C_ij))``,
  since dE = E_j - E_i - C_ij;
- hop site i -> electrode e:   ``w_ie min(1, a_i * exp(-beta (mu_e - E_ref)))``;
- hop electrode e -> site i:   ``w_ie min(1, exp(beta (mu_e - E_ref)) / a_i)``.

Time steps are the mean waiting time ``1 / R_total``; the current into each
electrode is the net number of holes that entered it divided by the
simulated time. The readout current, whose block means set the standard
error and the stopping rule, comes from one of two estimators of the same
stationary mean:

- ``counting``: the holes counted into the readout;
- ``ramo_shockley``: the time average of the expected Ramo-Shockley flux
  ``J(x) = sum over possible hops x -> x' of rate * (Phi(x') - Phi(x))``,
  with ``Phi`` the readout's weighting potential summed over the holes
  (1 on the readout, 0 on the other electrodes, the Laplace solution
  ``phi_readout`` at each site). ``J = J_readout + L Phi_sites``, where
  ``J_readout`` is the expected flux into the readout and ``L`` the
  generator of the Markov chain; ``Phi_sites`` is bounded, so the
  stationary mean of ``L Phi_sites`` is zero and both estimators have the
  readout current as their mean. Every hop in the device contributes its
  share of the induced current instead of the few that cross the readout,
  and no randomness of which hop happened enters, so on a device of many
  sites block means vary less (on one of a few sites they need not).
Random numbers come from a per-operating-point splitmix64 stream, so results
do not depend on thread scheduling.
"""

from __future__ import annotations

import itertools
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import numpy as np
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
_INV53 = 1.0 / 9007199254740992.0


@njit(inline="always")
def _uniform(state):
    """Next float in [0, 1) from a splitmix64 state held in ``state[0]``."""
    state[0] += _GOLDEN
    z = state[0]
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    z = z ^ (z >> _S31)
    return float(z >> _S11) * _INV53


@njit(cache=True, fastmath=True)
def _site_rates(sites, n_listed, pair_w, pair_wx, nbr, n_nbr, am, aim, sink_mode, site_rate, weight, nbr_weight, weighted):
    """Total site-site hop rate of each site of ``sites[:n_listed]``; returns the sum and the weighted flux.

    In sink mode ``sites`` lists the empty sites and ``site_rate[idx]`` is the
    rate of all hops *into* ``sites[idx]`` (sum over occupied neighbours i of
    ``min(w_ij x_ij a_i / a_j, w_ij)``); in source mode it lists the occupied
    sites and the rate is that of all hops *out of* them. ``am`` holds a_i on
    occupied sites and 0 elsewhere, ``aim`` holds 1/a_j on empty sites and 0
    elsewhere, so the inner loop is branch-free over the compact neighbour
    row ``nbr[s, :n_nbr[s]]`` of site s.

    If ``weighted``, the second value is the expected rate of change of
    ``sum over holes of weight[site]`` by site-site hops,
    ``sum over pairs i -> j of r_ij (weight_j - weight_i)``, else 0;
    ``nbr_weight[s, p]`` holds ``weight[nbr[s, p]]`` (a contiguous read).
    """
    total = 0.0
    flux = 0.0
    own_arr = aim if sink_mode else am
    other = am if sink_mode else aim
    if not weighted:
        for idx in range(n_listed):
            s = sites[idx]
            own = own_arr[s]
            acc = 0.0
            for p in range(n_nbr[s]):
                acc += min(other[nbr[s, p]] * own * pair_wx[s, p], pair_w[s, p])
            site_rate[idx] = acc
            total += acc
        return total, flux
    for idx in range(n_listed):
        s = sites[idx]
        own = own_arr[s]
        acc = 0.0
        acc_w = 0.0
        for p in range(n_nbr[s]):
            r = min(other[nbr[s, p]] * own * pair_wx[s, p], pair_w[s, p])
            acc += r
            acc_w += r * nbr_weight[s, p]
        site_rate[idx] = acc
        total += acc
        flux += acc_w - acc * weight[s]
    # that is the flux of hops s -> k (source mode); in sink mode the hops run k -> s, the opposite sign
    return total, -flux if sink_mode else flux


@njit(cache=True, fastmath=True)
def _electrode_rates(elec_site, elec_w, wb_out, wb_in, am, aim, elec_rate, gain, weighted):
    """Rate of each site-electrode pair (a hole leaving the site plus one entering it) into ``elec_rate``.

    Returns their sum and, if ``weighted``, the expected rate of change of the
    readout's weighted charge by these hops (``gain`` per pair: the change of
    the weighting potential when a hole leaves the site for the electrode),
    else 0.
    """
    total = 0.0
    flux = 0.0
    if not weighted:
        for q in range(elec_site.shape[0]):
            i = elec_site[q]
            r = min(am[i] * wb_out[q], elec_w[q]) + min(aim[i] * wb_in[q], elec_w[q])
            elec_rate[q] = r
            total += r
        return total, flux
    for q in range(elec_site.shape[0]):
        i = elec_site[q]
        r_out = min(am[i] * wb_out[q], elec_w[q])
        r_in = min(aim[i] * wb_in[q], elec_w[q])
        elec_rate[q] = r_out + r_in
        total += r_out + r_in
        flux += (r_out - r_in) * gain[q]
    return total, flux


@njit(cache=True, inline="always")
def _move(site, from_list, from_count, to_list, to_count, position):
    """Move ``site`` from one compact list to the other (swap-remove, append)."""
    p = position[site]
    last = from_list[from_count - 1]
    from_list[p] = last
    position[last] = p
    to_list[to_count] = site
    position[site] = to_count


@njit(cache=True, fastmath=True)
def _hop_update(k_row_plus, k_row_minus, am, aim, ecoul, iecoul, n):
    """Multiply Boltzmann factors after charges change: E_k += C[plus,k] - C[minus,k].

    ``k_row_plus`` / ``k_row_minus`` are site indices whose charge q rose by
    +1 / fell by 1 (-1 for none).
    """
    if k_row_plus >= 0 and k_row_minus >= 0:
        for k in range(n):
            f = ecoul[k_row_plus, k] * iecoul[k_row_minus, k]
            g = ecoul[k_row_minus, k] * iecoul[k_row_plus, k]
            am[k] *= f
            aim[k] *= g
    elif k_row_plus >= 0:
        for k in range(n):
            am[k] *= ecoul[k_row_plus, k]
            aim[k] *= iecoul[k_row_plus, k]
    else:
        for k in range(n):
            am[k] *= iecoul[k_row_minus, k]
            aim[k] *= ecoul[k_row_minus, k]


@njit(cache=True, fastmath=True)
def _simulate_point(
    site_energy, mu, e_ref, beta, coul, ecoul, iecoul, use_coulomb,
    pair_w, pair_wx, nbr, n_nbr, elec_ptr, elec_idx, elec_w,
    readout, readout_weight, ramo_shockley, equilibration_hops, block_hops, min_blocks, max_blocks, rel_tol, abs_tol,
    seed, out_elec_current, out_occupation, out_stats,
):  # fmt: skip
    n = site_energy.shape[0]
    m = mu.shape[0]
    n_elec_pairs = elec_ptr[n]
    state = np.empty(1, dtype=np.uint64)
    state[0] = seed
    # site of every site-electrode pair; an unsigned copy for the per-hop pass (no wrap-around checks)
    elec_site = np.empty(n_elec_pairs, dtype=np.int64)
    for i in range(n):
        for q in range(elec_ptr[i], elec_ptr[i + 1]):
            elec_site[q] = i
    elec_site_u = elec_site.astype(np.uint64)
    # the weighting potential at each site's neighbours, in its compact row
    nbr_weight = np.zeros(pair_w.shape)
    for i in range(n):
        for p in range(n_nbr[i]):
            nbr_weight[i, p] = readout_weight[nbr[i, p]]
    # change of the readout's weighting potential when a hole leaves site -> electrode (1 on the readout, 0 elsewhere)
    elec_gain = np.empty(n_elec_pairs)
    for q in range(n_elec_pairs):
        elec_gain[q] = (1.0 if elec_idx[q] == readout else 0.0) - readout_weight[elec_site[q]]
    # initial occupation: a hole on every site below the mean electrode level
    level = mu.mean()
    occ = np.zeros(n, dtype=np.uint8)
    n_occ = 0
    for i in range(n):
        if site_energy[i] < level:
            occ[i] = 1
            n_occ += 1
    # compact lists of occupied and empty sites, and each site's position in its list
    occ_list = np.empty(n, dtype=np.int64)
    empty_list = np.empty(n, dtype=np.int64)
    position = np.empty(n, dtype=np.int64)
    n_empty = 0
    k_occ = 0
    for i in range(n):
        if occ[i]:
            occ_list[k_occ] = i
            position[i] = k_occ
            k_occ += 1
        else:
            empty_list[n_empty] = i
            position[i] = n_empty
            n_empty += 1
    am = np.zeros(n)
    aim = np.zeros(n)
    # site-electrode prefactors with the electrode's Boltzmann factor folded in: r_out = min(a_i wb_out, w)
    wb_out = np.empty(n_elec_pairs)
    wb_in = np.empty(n_elec_pairs)
    for q in range(n_elec_pairs):
        b_out = np.exp(-beta * (mu[elec_idx[q]] - e_ref))
        wb_out[q] = elec_w[q] * b_out
        wb_in[q] = elec_w[q] / b_out
    site_rate = np.zeros(n)
    elec_rate = np.zeros(n_elec_pairs)
    count = np.zeros(m)
    occ_time = np.zeros(n)
    last_change = np.zeros(n)
    block_means = np.zeros(max_blocks)
    t = 0.0
    total_hops = 0
    n_blocks = 0
    averaging = False
    block_charge = 0.0
    block_time = 0.0
    all_charge = 0.0
    all_time = 0.0
    hops_left = equilibration_hops
    while True:
        # (re)synchronise the Boltzmann factors from the occupation (removes rounding drift)
        for i in range(n):
            s = site_energy[i]
            if use_coulomb:
                for k in range(n):
                    s += coul[i, k] * (occ[k] - 1.0)
            a = np.exp(beta * (s - e_ref))
            if occ[i]:
                am[i] = a
                aim[i] = 0.0
            else:
                am[i] = 0.0
                aim[i] = 1.0 / a
        for _ in range(hops_left):
            sink_mode = 2 * n_occ >= n  # iterate over the smaller population
            sites = empty_list if sink_mode else occ_list
            n_listed = n - n_occ if sink_mode else n_occ
            site_total, flux = _site_rates(
                sites, n_listed, pair_w, pair_wx, nbr, n_nbr, am, aim, sink_mode, site_rate,
                readout_weight, nbr_weight, ramo_shockley,
            )  # fmt: skip
            elec_total, elec_flux = _electrode_rates(
                elec_site_u, elec_w, wb_out, wb_in, am, aim, elec_rate, elec_gain, ramo_shockley
            )
            flux += elec_flux
            total = site_total + elec_total
            if total <= 0.0:
                out_stats[4] = 1.0  # frozen: no possible hop
                break
            dt = 1.0 / total
            if averaging:
                block_time += dt
                if ramo_shockley:
                    block_charge += flux * dt
            t += dt
            u = _uniform(state) * total
            plus = -1  # site whose charge rises (gains a hole)
            minus = -1  # site whose charge falls (loses a hole)
            if u < site_total:
                idx = 0
                while idx < n_listed - 1 and u >= site_rate[idx]:
                    u -= site_rate[idx]
                    idx += 1
                while site_rate[idx] == 0.0:  # rounding at the end of the list
                    idx -= 1
                s = sites[idx]
                own = aim[s] if sink_mode else am[s]
                other = am if sink_mode else aim
                p = 0
                p_end = n_nbr[s] - 1
                while p < p_end:
                    r = min(other[nbr[s, p]] * own * pair_wx[s, p], pair_w[s, p])
                    if u < r:
                        break
                    u -= r
                    p += 1
                # make sure the chosen partner can take part (guards rounding at the end of a row)
                while other[nbr[s, p]] == 0.0:
                    p -= 1
                k = nbr[s, p]
                if sink_mode:
                    plus, minus = s, k
                else:
                    plus, minus = k, s
            else:
                u -= site_total
                q = 0
                while q < n_elec_pairs - 1 and u >= elec_rate[q]:
                    u -= elec_rate[q]
                    q += 1
                while elec_rate[q] == 0.0:
                    q -= 1
                i = elec_site[q]
                e = elec_idx[q]
                # a hole entering electrode e counts +1, one leaving it -1
                step = 1.0 if occ[i] else -1.0
                if occ[i]:
                    minus = i
                else:
                    plus = i
                if averaging:
                    count[e] += step
                    if e == readout and not ramo_shockley:
                        block_charge += step
            # apply: `minus` loses its hole, `plus` gains one
            if minus >= 0:
                if averaging:
                    occ_time[minus] += t - last_change[minus]
                _move(minus, occ_list, n_occ, empty_list, n - n_occ, position)
                occ[minus] = 0
                n_occ -= 1
                aim[minus] = 1.0 / am[minus]
                am[minus] = 0.0
            if plus >= 0:
                if averaging:
                    last_change[plus] = t
                _move(plus, empty_list, n - n_occ, occ_list, n_occ, position)
                occ[plus] = 1
                n_occ += 1
                am[plus] = 1.0 / aim[plus]
                aim[plus] = 0.0
            if use_coulomb:
                # q_plus: -1 -> 0 (+1), q_minus: 0 -> -1 (-1)
                _hop_update(plus, minus, am, aim, ecoul, iecoul, n)
        total_hops += hops_left
        if out_stats[4] != 0.0:
            break
        if not averaging:
            averaging = True
            t = 0.0
            for i in range(n):
                last_change[i] = 0.0
            hops_left = block_hops
            continue
        block_means[n_blocks] = block_charge / block_time
        all_charge += block_charge
        all_time += block_time
        block_charge = 0.0
        block_time = 0.0
        n_blocks += 1
        if n_blocks >= min_blocks:
            mean = all_charge / all_time
            var = 0.0
            for b in range(n_blocks):
                var += (block_means[b] - mean) ** 2
            stderr = np.sqrt(var / (n_blocks - 1) / n_blocks)
            if stderr <= abs_tol or stderr <= rel_tol * abs(mean) or n_blocks >= max_blocks:
                break
    # outputs
    if all_time > 0.0:
        mean = all_charge / all_time
        var = 0.0
        for b in range(n_blocks):
            var += (block_means[b] - mean) ** 2
        out_stats[0] = mean
        out_stats[1] = np.sqrt(var / max(n_blocks - 1, 1) / max(n_blocks, 1))
        for e in range(m):
            out_elec_current[e] = count[e] / t
        for i in range(n):
            if occ[i]:
                occ_time[i] += t - last_change[i]
            out_occupation[i] = occ_time[i] / t
    out_stats[2] = total_hops
    out_stats[3] = t


@njit(nogil=True, cache=True)
def _simulate_one(
    b, site_energy, mu, e_ref, beta, coul, ecoul, iecoul, use_coulomb,
    pair_w, pair_wx, nbr, n_nbr, elec_ptr, elec_idx, elec_w,
    readout, readout_weight, ramo_shockley, equilibration_hops, block_hops, min_blocks, max_blocks, rel_tol, abs_tol,
    seeds, elec_current, occupation, stats,
):  # fmt: skip
    """Simulate operating point ``b`` of the batch, without the GIL."""
    _simulate_point(
        site_energy[b], mu[b], e_ref[b], beta, coul, ecoul, iecoul, use_coulomb,
        pair_w, pair_wx, nbr, n_nbr, elec_ptr, elec_idx, elec_w,
        readout, readout_weight, ramo_shockley, equilibration_hops, block_hops, min_blocks, max_blocks, rel_tol, abs_tol,
        seeds[b], elec_current[b], occupation[b], stats[b],
    )  # fmt: skip


def simulate_batch(
    site_energy, mu, e_ref, beta, coul, ecoul, iecoul, use_coulomb,
    pair_w, pair_wx, nbr, n_nbr, elec_ptr, elec_idx, elec_w,
    readout, readout_weight, ramo_shockley, equilibration_hops, block_hops, min_blocks, max_blocks, rel_tol, abs_tol,
    seeds, elec_current, occupation, stats, n_threads=1,
):  # fmt: skip
    """Simulate a batch of operating points on ``n_threads`` threads, each taking the next point when free.

    Points stop at different times (each runs blocks until its own standard
    error meets the tolerance), so a static split of the batch leaves threads
    idle; here every thread pulls one point at a time (the kernel releases the
    GIL), and results do not depend on which thread ran a point (each has its
    own random stream). An exception or Ctrl-C in the calling thread stops
    every thread after its current point.

    Parameters
    ----------
    site_energy : (B, N) occupation-independent hole energy per site, eV.
    mu : (B, M) hole chemical potential of each electrode, eV.
    e_ref : (B,) reference energy of the Boltzmann factors, eV.
    beta : 1 / kT, 1/eV.
    coul, ecoul, iecoul : (N, N) Coulomb matrix (eV, zero diagonal), exp(beta*coul), exp(-beta*coul).
    use_coulomb : whether occupation changes update site energies.
    nbr, n_nbr : (N, K) int32 compact neighbour rows: ``nbr[s, :n_nbr[s]]`` are the sites within the cut-off
        of site s (K the largest count; the rest of a row is padding), and (N,) int64 their counts.
    pair_w, pair_wx : (N, K) site-site rate prefactor w_sk = nu0 exp(-2 r_sk / a), 1/s, of the pair
        (s, nbr[s, p]) at position p, and w_sk * exp(beta * C_sk).
    elec_ptr, elec_idx, elec_w : CSR site-electrode neighbours and rate prefactor 1/s.
    readout : index of the readout electrode.
    readout_weight : (N,) the readout's weighting potential at each site (1 V on the readout, 0 V on the others).
    ramo_shockley : the readout current from the Ramo-Shockley flux (True) or from counting (False).
    equilibration_hops, block_hops, min_blocks, max_blocks, rel_tol, abs_tol :
        accuracy control (abs_tol in holes/s).
    seeds : (B,) uint64 random seeds.
    n_threads : threads working on the batch (at most B are used).

    Outputs (preallocated zeros, filled in place)
    -------
    elec_current : (B, M) net holes entering each electrode per second.
    occupation : (B, N) time-averaged occupation.
    stats : (B, 5) readout mean (holes/s) from the chosen estimator, its standard error, hops, simulated time (s),
        frozen flag.
    """
    batch = site_energy.shape[0]
    arguments = (
        site_energy, mu, e_ref, beta, coul, ecoul, iecoul, use_coulomb,
        pair_w, pair_wx, nbr, n_nbr, elec_ptr, elec_idx, elec_w,
        readout, readout_weight, ramo_shockley, equilibration_hops, block_hops, min_blocks, max_blocks, rel_tol, abs_tol,
        seeds, elec_current, occupation, stats,
    )  # fmt: skip
    workers = max(1, min(int(n_threads), batch))
    queue = itertools.count()  # next() is atomic under the GIL
    stop = threading.Event()

    def work() -> None:
        while not stop.is_set() and (b := next(queue)) < batch:
            _simulate_one(b, *arguments)

    if workers == 1:
        work()  # in this thread, one point per call: Ctrl-C is seen between points
        return
    pool = ThreadPoolExecutor(workers)
    futures = [pool.submit(work) for _ in range(workers)]
    try:
        wait(futures, return_when=FIRST_EXCEPTION)
    finally:
        stop.set()  # after Ctrl-C or an error the other threads finish their current point and stop
        pool.shutdown(wait=True)
    for future in futures:
        future.result()  # raises a thread's error
