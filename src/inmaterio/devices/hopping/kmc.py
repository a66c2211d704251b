"""The kinetic Monte Carlo kernel (numba): hopping by thinning, with Coulomb updates.

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
  in the same positions of (N, K) arrays; and CSR lists of site-electrode
  pairs (``elec_w = nu0 exp(-2r/a)``).

Rates in product form. With ``a_i = exp(beta (E_i - E_ref))`` (E_i the
site energy including the Coulomb field of all other charges):

- hop site i -> empty site j:  ``w_ij min(1, a_i / a_j * exp(beta C_ij))``,
  since dE = E_j - E_i - C_ij;
- hop site i -> electrode e:   ``w_ie min(1, a_i * exp(-beta (mu_e - E_ref)))``;
- hop electrode e -> site i:   ``w_ie min(1, exp(beta (mu_e - E_ref)) / a_i)``.

Thinning (uniformisation). Every rate is its prefactor ``w`` times an
acceptance ``min(1, ...)`` at most 1, so the chain is simulated exactly by
proposing a possible hop with probability ``w / Lambda``, where ``Lambda``
is the sum of the prefactors of all hops possible in the present
occupation (site-site pairs from an occupied to an empty site, and every
site-electrode pair), and making it with probability equal to its
acceptance. In a state of total rate ``R`` a hop is then made with
probability ``R / Lambda`` per proposal and lands on pair k with probability
``r_k / R``: the jump chain of the hopping process. Each proposal advances
the clock by ``1 / Lambda``; a visit of the state lasts a geometric number
of proposals, of mean ``Lambda / R``, so its expected duration is ``1 / R``,
the process's mean holding time. The cost of a proposal does not grow with
the number of pairs: ``Lambda`` changes only through the prefactors of the
pairs of the two sites whose occupation a hop changed, so it and the
per-site sums of prefactors to occupied and to empty neighbours are kept
by updates over those two rows, and a proposal picks a site from the
smaller of the empty and occupied populations, then a partner in its row.
The Boltzmann factors of every site still change with each hop (the
Coulomb update, N multiplications).

The current into each electrode is the net number of holes that entered it
divided by the simulated time. The readout current, whose block means set
the standard error and the stopping rule, comes from one of two estimators
of the same stationary mean:

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
  Scoring a state takes a pass over all its pairs, which costs many
  proposals, so the estimator scores every ``RAMO_SHOCKLEY_STRIDE``-th
  state the chain visits, each with its exact rate ``R(x)`` and flux: the
  block mean is ``sum J(x) / R(x)`` over the scored states divided by
  ``sum 1 / R(x)``, each visit weighted by its mean holding time. The
  visited states form the jump chain, whose average of ``f(x) / R(x)``
  divided by that of ``1 / R(x)`` is the time average of ``f``; every
  stride-th state of a chain has the same stationary law, so the ratio
  converges to the stationary mean of ``J``. Neighbouring states differ by
  one hop and their fluxes are strongly correlated, so skipping between
  them loses little.

Random numbers come from a per-operating-point splitmix64 stream, so results
do not depend on thread scheduling.
"""

from __future__ import annotations

import heapq
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from statistics import NormalDist

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

RAMO_SHOCKLEY_STRIDE = 16
"""The Ramo-Shockley estimator scores every this-many-th state the chain visits (see the module docstring)."""

MAX_REJECTIONS = 10_000_000
"""Proposals in a row without a hop after which a point is reported frozen (its rates vanish in float64)."""


@njit(inline="always")
def _uniform(state):
    """Next float in [0, 1) from a splitmix64 state held in ``state[0]``."""
    state[0] += _GOLDEN
    z = state[0]
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    z = z ^ (z >> _S31)
    return float(z >> _S11) * _INV53


@njit(cache=True)
def _neighbour_sums(occ, pair_w, nbr, n_nbr, w_occ, w_emp):
    """Fill ``w_occ[s]`` / ``w_emp[s]`` with the prefactor sums of s to its occupied / empty neighbours.

    Returns the site-site part of ``Lambda``: the sum over occupied sites of ``w_emp``.
    """
    bound = 0.0
    for s in range(occ.shape[0]):
        to_occ = 0.0
        to_emp = 0.0
        for p in range(n_nbr[s]):
            if occ[nbr[s, p]]:
                to_occ += pair_w[s, p]
            else:
                to_emp += pair_w[s, p]
        w_occ[s] = to_occ
        w_emp[s] = to_emp
        if occ[s]:
            bound += to_emp
    return bound


@njit(cache=True, inline="always")
def _flip_sums(s, now_occupied, pair_w, nbr, n_nbr, w_occ, w_emp):
    """Update the neighbour sums after site s changed occupation; returns the change of the site-site ``Lambda``.

    When s fills, its pairs to empty neighbours become possible hops and those
    from occupied neighbours into it stop being possible (its own sums do not
    change: they depend on its neighbours only); when it empties, the reverse.
    """
    if now_occupied:
        change = w_emp[s] - w_occ[s]
        for p in range(n_nbr[s]):
            k = nbr[s, p]
            w_occ[k] += pair_w[s, p]
            w_emp[k] -= pair_w[s, p]
    else:
        change = w_occ[s] - w_emp[s]
        for p in range(n_nbr[s]):
            k = nbr[s, p]
            w_occ[k] -= pair_w[s, p]
            w_emp[k] += pair_w[s, p]
    return change


@njit(cache=True, fastmath=True)
def _rate_and_flux(
    sites, n_listed, sink_mode, pair_w, pair_wx, nbr, n_nbr, am, aim, weight, nbr_weight,
    elec_site, elec_w, wb_out, wb_in, elec_gain,
):  # fmt: skip
    """Total hop rate ``R(x)`` (1/s) of the present occupation and its Ramo-Shockley flux ``J(x)`` (holes/s).

    Site-site pairs are visited from the listed sites ``sites[:n_listed]``:
    the empty ones in sink mode (hops into them from occupied neighbours),
    the occupied ones otherwise (hops out of them). ``am`` holds a_i on
    occupied sites and 0 elsewhere, ``aim`` holds 1/a_j on empty sites and 0
    elsewhere, so the inner loop over a compact row is branch-free.
    ``J = sum over possible hops i -> j of r_ij (weight_j - weight_i)``, the
    site-electrode hops with ``elec_gain`` (the change when a hole leaves
    the site for the electrode); ``nbr_weight[s, p]`` is ``weight[nbr[s, p]]``.
    """
    rate = 0.0
    flux = 0.0
    own_arr = aim if sink_mode else am
    other = am if sink_mode else aim
    for idx in range(n_listed):
        s = sites[idx]
        own = own_arr[s]
        acc = 0.0
        acc_w = 0.0
        for p in range(n_nbr[s]):
            r = min(other[nbr[s, p]] * own * pair_wx[s, p], pair_w[s, p])
            acc += r
            acc_w += r * nbr_weight[s, p]
        rate += acc
        flux += acc_w - acc * weight[s]  # hops s -> k; in sink mode they run k -> s, the opposite sign
    if sink_mode:
        flux = -flux
    for q in range(elec_site.shape[0]):
        i = elec_site[q]
        r_out = min(am[i] * wb_out[q], elec_w[q])
        r_in = min(aim[i] * wb_in[q], elec_w[q])
        rate += r_out + r_in
        flux += (r_out - r_in) * elec_gain[q]
    return rate, flux


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


_STARTED, _VISITS, _HOPS, _BLOCKS, _AVERAGING, _FRESH, _N_OCC, _DONE = range(8)
_CHAIN_INTS = 8
_TIME, _ALL_CHARGE, _ALL_TIME, _STDERR = range(4)
_CHAIN_FLOATS = 4


@njit(cache=True, fastmath=True)
def _advance_point(
    site_energy, mu, e_ref, beta, coul, ecoul, iecoul, use_coulomb,
    pair_w, pair_wx, nbr, n_nbr, elec_ptr, elec_idx, elec_w,
    readout, readout_weight, nbr_weight, ramo_shockley, equilibration_hops, block_hops, min_blocks, max_blocks, rel_tol, abs_tol,
    seed, block_limit, saved_occ, saved_lists, saved_count, saved_times, block_means, chain_f, chain_i, saved_rng,
    out_elec_current, out_occupation, out_stats,
):  # fmt: skip
    """Advance the chain of one operating point by at most ``block_limit`` averaging blocks.

    The chain's state is kept between calls in the arrays passed in (its
    slot of a :class:`_ChainSlots`): ``saved_occ`` (N,) occupation,
    ``saved_lists`` (3, N) the occupied and empty lists and each site's
    position, ``saved_count`` (M,) holes counted into each electrode,
    ``saved_times`` (2, N) occupied time and time of the last change,
    ``block_means`` (max_blocks,), ``chain_f`` / ``chain_i`` the scalars
    (indices ``_TIME``... / ``_STARTED``...) and ``saved_rng`` (1,) the
    random state. The hops work on private copies, written back at the end:
    threads advancing neighbouring slots then share no cache line. A chain not yet started
    (``chain_i[_STARTED] == 0``) starts from ``seed`` and first runs its
    equilibration. The stopping rule is checked after every block, as in
    one uninterrupted run, so how the blocks are split into calls changes
    nothing; when the point stops (``chain_i[_DONE] = 1``) its results are
    written to the outputs. Returns nothing.
    """
    n = site_energy.shape[0]
    m = mu.shape[0]
    n_elec_pairs = elec_ptr[n]
    # site of every site-electrode pair, and the cumulative prefactors that a proposal searches
    elec_site = np.empty(n_elec_pairs, dtype=np.int64)
    for i in range(n):
        for q in range(elec_ptr[i], elec_ptr[i + 1]):
            elec_site[q] = i
    elec_cum = np.cumsum(elec_w)
    elec_bound = elec_cum[n_elec_pairs - 1] if n_elec_pairs > 0 else 0.0
    # change of the readout's weighting potential when a hole leaves site -> electrode (1 on the readout, 0 elsewhere)
    elec_gain = np.empty(n_elec_pairs)
    for q in range(n_elec_pairs):
        elec_gain[q] = (1.0 if elec_idx[q] == readout else 0.0) - readout_weight[elec_site[q]]
    # electrodes' Boltzmann factors: a hole leaves site i for e with acceptance min(1, a_i b_out[e])
    b_out = np.empty(m)
    for e in range(m):
        b_out[e] = np.exp(-beta * (mu[e] - e_ref))
    # for the Ramo-Shockley pass: electrode prefactors with b_out folded in
    wb_out = np.empty(n_elec_pairs)
    wb_in = np.empty(n_elec_pairs)
    for q in range(n_elec_pairs):
        wb_out[q] = elec_w[q] * b_out[elec_idx[q]]
        wb_in[q] = elec_w[q] / b_out[elec_idx[q]]
    occ = saved_occ.copy()
    site_lists = saved_lists.copy()
    occ_list = site_lists[0]  # compact lists of occupied and empty sites, and each site's position in its list
    empty_list = site_lists[1]
    position = site_lists[2]
    site_times = saved_times.copy()
    occ_time = site_times[0]
    last_change = site_times[1]
    count = saved_count.copy()
    state = saved_rng.copy()
    if chain_i[_STARTED] == 0:
        state[0] = seed
        # initial occupation: a hole on every site below the mean electrode level
        level = mu.mean()
        n_occ = 0
        n_empty = 0
        for i in range(n):
            occ_time[i] = 0.0
            last_change[i] = 0.0
            if site_energy[i] < level:
                occ[i] = 1
                occ_list[n_occ] = i
                position[i] = n_occ
                n_occ += 1
            else:
                occ[i] = 0
                empty_list[n_empty] = i
                position[i] = n_empty
                n_empty += 1
        for e in range(m):
            count[e] = 0.0
        t = 0.0
        fresh = True  # the chain has entered a state that the Ramo-Shockley estimator has not yet counted
        visits = 0
        total_hops = 0
        n_blocks = 0
        averaging = False
        all_charge = 0.0
        all_time = 0.0
        chain_i[_STARTED] = 1
    else:
        n_occ = chain_i[_N_OCC]
        t = chain_f[_TIME]
        fresh = chain_i[_FRESH] != 0
        visits = chain_i[_VISITS]
        total_hops = chain_i[_HOPS]
        n_blocks = chain_i[_BLOCKS]
        averaging = chain_i[_AVERAGING] != 0
        all_charge = chain_f[_ALL_CHARGE]
        all_time = chain_f[_ALL_TIME]
    am = np.zeros(n)
    aim = np.zeros(n)
    w_occ = np.zeros(n)
    w_emp = np.zeros(n)
    block_charge = 0.0
    block_time = 0.0
    blocks_run = 0
    done = False
    hops_left = block_hops if averaging else equilibration_hops
    while True:
        # (re)synchronise the Boltzmann factors and the prefactor sums from the occupation (removes rounding drift)
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
        site_bound = _neighbour_sums(occ, pair_w, nbr, n_nbr, w_occ, w_emp)
        hops_done = 0
        rejections = 0
        while hops_done < hops_left:
            if fresh and averaging and ramo_shockley:
                if visits % RAMO_SHOCKLEY_STRIDE == 0:
                    sink_mode = 2 * n_occ >= n
                    rate, flux = _rate_and_flux(
                        empty_list if sink_mode else occ_list, n - n_occ if sink_mode else n_occ, sink_mode,
                        pair_w, pair_wx, nbr, n_nbr, am, aim, readout_weight, nbr_weight,
                        elec_site, elec_w, wb_out, wb_in, elec_gain,
                    )  # fmt: skip
                    block_charge += flux / rate
                    block_time += 1.0 / rate
                visits += 1
            fresh = False
            bound = site_bound + elec_bound
            if bound <= 0.0:
                out_stats[4] = 1.0  # frozen: no possible hop
                break
            dt = 1.0 / bound
            if averaging and not ramo_shockley:
                block_time += dt
            t += dt
            u = _uniform(state) * bound
            plus = -1  # site whose charge rises (gains a hole)
            minus = -1  # site whose charge falls (loses a hole)
            if u < site_bound:
                # a site from the smaller population, with probability proportional to its sum of prefactors
                sink_mode = 2 * n_occ >= n
                sites = empty_list if sink_mode else occ_list
                sums = w_occ if sink_mode else w_emp
                n_listed = n - n_occ if sink_mode else n_occ
                idx = 0
                while idx < n_listed - 1 and u >= sums[sites[idx]]:
                    u -= sums[sites[idx]]
                    idx += 1
                while idx > 0 and sums[sites[idx]] <= 0.0:  # rounding at the end of the list
                    idx -= 1
                s = sites[idx]
                # then a partner in its row of the other population, proportional to the prefactor
                want = 1 if sink_mode else 0
                p = 0
                p_end = n_nbr[s] - 1
                while p < p_end:
                    if occ[nbr[s, p]] == want:
                        if u < pair_w[s, p]:
                            break
                        u -= pair_w[s, p]
                    p += 1
                while p > 0 and occ[nbr[s, p]] != want:  # rounding at the end of the row
                    p -= 1
                k = nbr[s, p]
                if sink_mode:
                    src, dst = k, s
                else:
                    src, dst = s, k
                if n_listed == 0 or occ[k] != want:
                    acceptance = 0.0  # only rounding of Lambda can get here: no such pair exists
                else:
                    acceptance = min(am[src] * aim[dst] * pair_wx[s, p], pair_w[s, p]) / pair_w[s, p]
                if _uniform(state) < acceptance:
                    plus, minus = dst, src
            else:
                u -= site_bound
                lo = 0
                hi = n_elec_pairs - 1
                while lo < hi:  # first pair whose cumulative prefactor exceeds u
                    mid = (lo + hi) // 2
                    if elec_cum[mid] > u:
                        hi = mid
                    else:
                        lo = mid + 1
                q = lo
                i = elec_site[q]
                e = elec_idx[q]
                if occ[i]:  # the hole leaves for the electrode
                    acceptance = min(am[i] * b_out[e], 1.0)
                else:  # a hole enters from the electrode
                    acceptance = min(aim[i] / b_out[e], 1.0)
                if _uniform(state) < acceptance:
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
            if plus < 0 and minus < 0:
                rejections += 1
                if rejections >= MAX_REJECTIONS:
                    out_stats[4] = 1.0  # frozen: every rate vanishes in float64
                    break
                continue
            rejections = 0
            hops_done += 1
            fresh = True
            # apply: `minus` loses its hole, `plus` gains one
            if minus >= 0:
                if averaging:
                    occ_time[minus] += t - last_change[minus]
                _move(minus, occ_list, n_occ, empty_list, n - n_occ, position)
                occ[minus] = 0
                n_occ -= 1
                aim[minus] = 1.0 / am[minus]
                am[minus] = 0.0
                site_bound += _flip_sums(minus, False, pair_w, nbr, n_nbr, w_occ, w_emp)
            if plus >= 0:
                if averaging:
                    last_change[plus] = t
                _move(plus, empty_list, n - n_occ, occ_list, n_occ, position)
                occ[plus] = 1
                n_occ += 1
                am[plus] = 1.0 / aim[plus]
                aim[plus] = 0.0
                site_bound += _flip_sums(plus, True, pair_w, nbr, n_nbr, w_occ, w_emp)
            if use_coulomb:
                # q_plus: -1 -> 0 (+1), q_minus: 0 -> -1 (-1)
                _hop_update(plus, minus, am, aim, ecoul, iecoul, n)
        total_hops += hops_done
        if out_stats[4] != 0.0:
            done = True
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
        blocks_run += 1
        if n_blocks >= min_blocks:
            mean = all_charge / all_time
            var = 0.0
            for b in range(n_blocks):
                var += (block_means[b] - mean) ** 2
            stderr = np.sqrt(var / (n_blocks - 1) / n_blocks)
            chain_f[_STDERR] = stderr  # the scheduler's estimate of the blocks left starts from it
            if stderr <= abs_tol or stderr <= rel_tol * abs(mean) or n_blocks >= max_blocks:
                done = True
                break
        if blocks_run >= block_limit:
            break
    chain_i[_N_OCC] = n_occ
    chain_f[_TIME] = t
    chain_i[_FRESH] = 1 if fresh else 0
    chain_i[_VISITS] = visits
    chain_i[_HOPS] = total_hops
    chain_i[_BLOCKS] = n_blocks
    chain_i[_AVERAGING] = 1 if averaging else 0
    chain_f[_ALL_CHARGE] = all_charge
    chain_f[_ALL_TIME] = all_time
    chain_i[_DONE] = 1 if done else 0
    if not done:
        saved_occ[:] = occ
        saved_lists[:] = site_lists
        saved_times[:] = site_times
        saved_count[:] = count
        saved_rng[:] = state
        return
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
    b, slot, block_limit, site_energy, mu, e_ref, beta, coul, ecoul, iecoul, use_coulomb,
    pair_w, pair_wx, nbr, n_nbr, elec_ptr, elec_idx, elec_w,
    readout, readout_weight, nbr_weight, ramo_shockley, equilibration_hops, block_hops, min_blocks, max_blocks, rel_tol, abs_tol,
    seeds, occ, site_lists, count, site_times, block_means, chain_f, chain_i, rng, elec_current, occupation, stats,
):  # fmt: skip
    """Advance operating point ``b`` of the batch, whose chain is held in ``slot``, without the GIL."""
    _advance_point(
        site_energy[b], mu[b], e_ref[b], beta, coul, ecoul, iecoul, use_coulomb,
        pair_w, pair_wx, nbr, n_nbr, elec_ptr, elec_idx, elec_w,
        readout, readout_weight, nbr_weight, ramo_shockley, equilibration_hops, block_hops, min_blocks, max_blocks, rel_tol, abs_tol,
        seeds[b], block_limit, occ[slot], site_lists[slot], count[slot], site_times[slot], block_means[slot],
        chain_f[slot], chain_i[slot], rng[slot], elec_current[b], occupation[b], stats[b],
    )  # fmt: skip


SLICE_HOPS = 100_000
"""Hops (about) that a thread runs on one operating point before it picks the point with the most work left."""

WINDOW_PER_THREAD = 32
"""Operating points whose chains are held at once, per thread (each holds a few arrays of the site count)."""


def _chi2_quantile(probability: float, dof: int) -> float:
    """The ``probability`` quantile of chi-square with ``dof`` degrees of freedom (Wilson-Hilferty).

    ``dof (1 - 2/(9 dof) + z sqrt(2/(9 dof)))^3`` with ``z`` the normal
    quantile: within 2 % of the exact value from 3 degrees of freedom on at
    the 10 % quantile (closer as they grow), enough to rank chains; no scipy
    import on the way.
    """
    z = NormalDist().inv_cdf(probability)
    a = 2.0 / (9.0 * dof)
    return dof * max(1.0 - a + z * np.sqrt(a), 0.01) ** 3


class _ChainSlots:
    """The states of the chains in progress: ``slots`` rows of every state array of :func:`_advance_point`."""

    def __init__(self, slots: int, n_sites: int, n_electrodes: int, max_blocks: int) -> None:
        self.occ = np.zeros((slots, n_sites), dtype=np.uint8)
        self.site_lists = np.zeros((slots, 3, n_sites), dtype=np.int64)
        self.count = np.zeros((slots, n_electrodes))
        self.site_times = np.zeros((slots, 2, n_sites))
        self.block_means = np.zeros((slots, max_blocks))
        self.chain_f = np.zeros((slots, _CHAIN_FLOATS))
        self.chain_i = np.zeros((slots, _CHAIN_INTS), dtype=np.int64)
        self.rng = np.zeros((slots, 1), dtype=np.uint64)
        self.free = list(range(slots - 1, -1, -1))

    def arrays(self) -> tuple:
        return (self.occ, self.site_lists, self.count, self.site_times, self.block_means, self.chain_f, self.chain_i, self.rng)

    def take(self) -> int:
        slot = self.free.pop()
        self.chain_i[slot] = 0  # not started: the kernel initialises the rest
        return slot

    def blocks_left(
        self, slot: int, min_blocks: int, max_blocks: int, rel_tol: float, abs_tol: float, confidence: float | None = 0.9
    ) -> float:
        """Blocks the chain in ``slot`` may still need, at the ``confidence`` upper bound of its variance.

        The standard error falls as 1/sqrt(blocks), so ``n`` blocks with
        standard error ``s`` against a target ``t`` need ``n (s / t)^2`` in
        all. With few blocks ``s`` is itself uncertain (a few blocks can say a
        point is nearly done when it is not, and that chain then runs alone at
        the end of the batch), so the variance is taken at its upper bound
        ``s^2 (n - 1) / chi2_{1 - confidence}(n - 1)`` (:func:`_chi2_quantile`);
        ``confidence=None`` takes the estimate ``s^2`` itself (the expected need).
        """
        n = int(self.chain_i[slot, _BLOCKS])
        if n < max(min_blocks, 2) or self.chain_f[slot, _ALL_TIME] <= 0.0:  # no standard error yet
            return float(max_blocks - n)
        mean = self.chain_f[slot, _ALL_CHARGE] / self.chain_f[slot, _ALL_TIME]
        stderr = self.chain_f[slot, _STDERR]  # the kernel's, from the block means, after the last block
        target = max(abs_tol, rel_tol * abs(mean))
        inflation = 1.0 if confidence is None else (n - 1) / _chi2_quantile(1.0 - confidence, n - 1)
        needed = n * (stderr / target) ** 2 * inflation if target > 0.0 else float("inf")
        return float(min(max(needed, min_blocks, n), max_blocks) - n)


class _Schedule:
    """Which operating point a free thread advances next, and by how many blocks (the caller holds a lock).

    Every point first runs its equilibration and ``min_blocks`` blocks, which
    tell how much more it needs; after that, the point that may need the most
    blocks still (its need at the 90 % upper bound of its variance, so that a
    chain whose few blocks happened to agree is not left for last) runs next,
    by about :data:`SLICE_HOPS` hops. New points come first while a place for
    their chain is free, unless that point is critical: its blocks left
    reach the other threads' share of all the other work known to remain
    (the other chains' expected blocks left and the first blocks of the
    points not yet started), so it would end the batch unless started now.
    """

    def __init__(
        self, batch: int, workers: int, chains: _ChainSlots, equilibration_hops: int, block_hops: int,
        min_blocks: int, max_blocks: int, rel_tol: float, abs_tol: float,
    ) -> None:  # fmt: skip
        self.batch, self.workers, self.chains = batch, workers, chains
        self.min_blocks, self.max_blocks, self.rel_tol, self.abs_tol = min_blocks, max_blocks, rel_tol, abs_tol
        block_hops = max(int(block_hops), 1)
        self.slice_blocks = max(1, -(-SLICE_HOPS // block_hops))
        self.first_blocks = min_blocks + equilibration_hops / block_hops  # a new point's known work, in blocks
        self.waiting: list[tuple[float, int, int]] = []  # heap of (-blocks left, point, slot) between slices
        self.expected: dict[int, float] = {}  # slot -> expected blocks left of its waiting chain
        self.started = 0
        self.running = 0

    @property
    def finished(self) -> bool:
        return self.started == self.batch and not self.waiting and self.running == 0

    def critical(self) -> bool:
        """Whether the top waiting chain's blocks left reach the other threads' share of the rest of the work."""
        top_left, _, top = self.waiting[0]
        others = sum(self.expected[slot] for _, _, slot in self.waiting[1:]) + (self.batch - self.started) * self.first_blocks
        return -top_left * (self.workers - 1) >= others

    def next(self) -> tuple[int, int, int] | None:
        """(point, slot, blocks) to advance next; None when nothing can run now (or the batch is finished)."""
        new_point = self.started < self.batch and bool(self.chains.free)
        if self.waiting and (not new_point or self.critical()):
            _, b, slot = heapq.heappop(self.waiting)
            self.running += 1
            return b, slot, self.slice_blocks
        if new_point:
            self.started += 1
            self.running += 1
            return self.started - 1, self.chains.take(), self.min_blocks
        return None

    def put_back(self, b: int, slot: int) -> None:
        """Point ``b`` (in ``slot``) ran its slice: free its place if it stopped, else queue it by blocks left."""
        self.running -= 1
        if self.chains.chain_i[slot, _DONE]:
            self.chains.free.append(slot)
            self.expected.pop(slot, None)
        else:
            tolerance = (self.min_blocks, self.max_blocks, self.rel_tol, self.abs_tol)
            self.expected[slot] = self.chains.blocks_left(slot, *tolerance, confidence=None)
            heapq.heappush(self.waiting, (-self.chains.blocks_left(slot, *tolerance), b, slot))


def simulate_batch(
    site_energy, mu, e_ref, beta, coul, ecoul, iecoul, use_coulomb,
    pair_w, pair_wx, nbr, n_nbr, elec_ptr, elec_idx, elec_w,
    readout, readout_weight, nbr_weight, ramo_shockley, equilibration_hops, block_hops, min_blocks, max_blocks, rel_tol, abs_tol,
    seeds, elec_current, occupation, stats, n_threads=1,
):  # fmt: skip
    """Simulate a batch of operating points on ``n_threads`` threads, the point with the most work left first.

    Points stop at different times (each runs blocks until its own standard
    error meets the tolerance), and a point's chain runs on one thread at a
    time, so a batch that ends on a long point leaves the other threads
    idle. Chains are therefore resumable: each point first runs its
    equilibration and ``min_blocks`` blocks; from then on a free thread takes
    the point that may need the most blocks still (from its standard error
    so far, which falls as 1/sqrt(blocks)) and advances it by about
    :data:`SLICE_HOPS` hops, then puts it back (the policy, and when a long
    point runs before new ones: :class:`_Schedule`). Long points start early
    and the threads finish together. At most ``WINDOW_PER_THREAD *
    n_threads`` chains are held at once. Results do not depend on the threads or on the order: each point
    has its own random stream, and its stopping rule is checked after every
    block whatever the slices. An exception or Ctrl-C in the calling thread
    stops every thread after its current slice (the kernel releases the GIL).

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
    nbr_weight : (N, K) ``readout_weight[nbr]``, the same in the compact neighbour rows.
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
    batch, n_sites = site_energy.shape
    workers = max(1, min(int(n_threads), batch))
    chains = _ChainSlots(min(batch, WINDOW_PER_THREAD * workers), n_sites, mu.shape[1], max_blocks)
    arguments = (
        site_energy, mu, e_ref, beta, coul, ecoul, iecoul, use_coulomb,
        pair_w, pair_wx, nbr, n_nbr, elec_ptr, elec_idx, elec_w,
        readout, readout_weight, nbr_weight, ramo_shockley, equilibration_hops, block_hops, min_blocks, max_blocks, rel_tol, abs_tol,
        seeds, *chains.arrays(), elec_current, occupation, stats,
    )  # fmt: skip
    schedule = _Schedule(batch, workers, chains, equilibration_hops, block_hops, min_blocks, max_blocks, rel_tol, abs_tol)
    lock = threading.Condition()
    stop = threading.Event()

    def work() -> None:
        while True:
            with lock:
                while (task := schedule.next()) is None and not schedule.finished and not stop.is_set():
                    lock.wait(0.05)  # the points in progress come back to the heap
            if task is None or stop.is_set():
                return
            b, slot, blocks = task
            try:
                _simulate_one(b, slot, blocks, *arguments)
            finally:
                with lock:
                    schedule.put_back(b, slot)
                    lock.notify_all()

    if workers == 1:
        work()  # in this thread, one slice per call: Ctrl-C is seen between slices
        return
    pool = ThreadPoolExecutor(workers)
    futures = [pool.submit(work) for _ in range(workers)]
    try:
        wait(futures, return_when=FIRST_EXCEPTION)
    finally:
        stop.set()  # after Ctrl-C or an error the other threads finish their current slice and stop
        with lock:
            lock.notify_all()
        pool.shutdown(wait=True)
    for future in futures:
        future.result()  # raises a thread's error
