"""Physics of the virtual DNPU checked against independent truths.

- an exact master-equation solution of a 3-site device (every occupation
  state enumerated, rates written from the Miller-Abrahams formula);
- detailed balance: zero bias gives zero current; without interactions the
  occupations follow Fermi-Dirac statistics;
- charge conservation: the currents into all electrodes sum to zero;
- linear response at small bias; thermally activated conductance;
- Laplace's equation: superposition, symmetry, mean-value property;
- the seed is the chip: same seed, same device and numbers.

The Monte Carlo is seeded, so every number here is reproducible run to run.
"""

import itertools
import re

import numpy as np
import pytest

from inmaterio.config import validate_config
from inmaterio.devices.hopping import HoppingConfig, HoppingDevice, kmc
from inmaterio.devices.hopping.device import BOLTZMANN_EV_PER_K, COULOMB_EV_NM, ELEMENTARY_CHARGE_C
from inmaterio.devices.hopping.electrostatics import solve_electrode_potentials
from inmaterio.devices.hopping.geometry import distance_to_arcs, place_dopants
from inmaterio.errors import ConfigError, SimulationError, VoltageError

# ----------------------------------------------------------------------------- exact master equation


def exact_currents(dev: HoppingDevice, voltages: np.ndarray) -> np.ndarray:
    """Stationary expected current into each electrode (nA) from the master equation.

    Written from the model's formulas only: positions, Coulomb's law,
    Miller-Abrahams rates; no precomputed matrix of the device is used except
    the electrode potential at the sites (tested on its own below).
    """
    c = dev.config
    acc, don = dev.dopants.acceptors, dev.dopants.donors
    n = len(acc)
    kT = BOLTZMANN_EV_PER_K * c.temperature_k
    K = COULOMB_EV_NM / c.relative_permittivity
    full = dev.full_voltages(voltages[None, :])[0]
    phi = full @ dev.potentials.at(acc)
    donor = np.array([sum(K / np.linalg.norm(a - d) for d in don) for a in acc])
    r = np.linalg.norm(acc[:, None] - acc[None, :], axis=-1)
    r_el = distance_to_arcs(acc, c)
    mu = full + c.fermi_level_ev

    def energies(occ):
        e = phi + donor
        for i in range(n):
            e[i] += sum(K / r[i, j] * (occ[j] - 1) for j in range(n) if j != i)
        return e

    def ma(dist, de):
        return c.attempt_frequency_hz * np.exp(-2 * dist / c.localization_length_nm) * min(1.0, np.exp(-de / kT))

    states = list(itertools.product([0, 1], repeat=n))
    index = {s: k for k, s in enumerate(states)}
    Q = np.zeros((len(states), len(states)))
    flux = np.zeros((len(states), len(full)))  # expected hole flux into each electrode per state
    for s in states:
        e = energies(s)
        for i in range(n):
            for j in range(n):
                if s[i] == 1 and s[j] == 0 and r[i, j] < c.site_cutoff_nm:
                    t = list(s)
                    t[i], t[j] = 0, 1
                    Q[index[s], index[tuple(t)]] += ma(r[i, j], e[j] - e[i] - K / r[i, j])
            for k in range(len(full)):
                if r_el[i, k] >= c.electrode_cutoff_nm:
                    continue
                t = list(s)
                t[i] = 1 - s[i]
                if s[i] == 1:
                    rate = ma(r_el[i, k], mu[k] - e[i])
                    flux[index[s], k] += rate
                else:
                    rate = ma(r_el[i, k], e[i] - mu[k])
                    flux[index[s], k] -= rate
                Q[index[s], index[tuple(t)]] += rate
    np.fill_diagonal(Q, -Q.sum(1))
    # stationary distribution: pi Q = 0, sum pi = 1
    A = np.vstack([Q.T, np.ones(len(states))])
    b = np.zeros(len(states) + 1)
    b[-1] = 1
    pi = np.linalg.lstsq(A, b, rcond=None)[0]
    return pi @ flux * ELEMENTARY_CHARGE_C * 1e9


def assert_matches_master_equation(dev: HoppingDevice, voltages: np.ndarray) -> None:
    """Every electrode's current and the readout estimate within 4 standard errors of the exact master equation."""
    exact = exact_currents(dev, voltages)
    res = dev.simulate(voltages[None, :])
    tol = 4 * res.stderr_na[0] + 1e-3 * np.abs(exact).max()
    np.testing.assert_allclose(res.electrode_current_na[0], exact, atol=tol)
    assert res.current_na[0] == pytest.approx(exact[dev.readout_index], abs=tol)
    assert abs(exact[dev.readout_index]) > 10 * res.stderr_na[0]


TINY = dict(
    n_acceptors=3, n_donors=1, radius_nm=40.0, n_electrodes=3, readout_electrode=2, electrode_width_nm=20.0,
    site_cutoff_nm=200.0, electrode_cutoff_nm=200.0, min_site_distance_nm=8.0, grid_spacing_nm=1.0,
    voltage_ranges_v=[(-0.1, 0.1), (-0.1, 0.1)], equilibration_hops=5000, block_hops=40000,
    min_blocks=10, max_blocks=10, seed=3,
)  # fmt: skip


@pytest.mark.parametrize("voltages", [[0.03, -0.02], [-0.05, 0.01], [0.0, 0.0]])
def test_kmc_matches_exact_master_equation(voltages):
    dev = HoppingDevice(**TINY)
    v = np.array(voltages)
    exact = exact_currents(dev, v)
    res = dev.simulate(v[None, :])
    kmc = res.electrode_current_na[0]
    # the readout current is the readout column
    assert res.current_na[0] == pytest.approx(kmc[dev.readout_index], rel=1e-9, abs=1e-9)
    tol = 4 * res.stderr_na[0] + 1e-3 * np.abs(exact).max()
    np.testing.assert_allclose(kmc, exact, atol=tol)
    assert np.abs(exact).max() > 10 * res.stderr_na[0] or voltages == [0.0, 0.0]


@pytest.mark.parametrize("voltages", [[0.03, -0.02], [-0.05, 0.01]])
def test_ramo_shockley_current_matches_exact_master_equation(voltages):
    # the weighted-flux estimator has the stationary readout current as its mean, like counting
    dev = HoppingDevice(**TINY, current_estimator="ramo_shockley")
    v = np.array(voltages)
    exact = exact_currents(dev, v)[dev.readout_index]
    res = dev.simulate(v[None, :])
    assert res.current_na[0] == pytest.approx(exact, abs=4 * res.stderr_na[0] + 1e-3 * abs(exact))
    assert abs(exact) > 10 * res.stderr_na[0]
    # every electrode, the readout included, is still counted: the counted currents sum to zero
    assert res.electrode_current_na[0].sum() == pytest.approx(0.0, abs=1e-3 * abs(exact))


@pytest.mark.parametrize("estimator", ["counting", "ramo_shockley"])
@pytest.mark.parametrize("seed", [3, 4])  # seed 4 has a site with no neighbour within the cut-off
def test_kmc_matches_exact_master_equation_with_pairs_beyond_the_cut_offs(seed, estimator):
    # five sites, some site-site and site-electrode pairs beyond the cut-offs: the proposals must only draw
    # the pairs that exist, in proportion to their prefactors
    params = {**TINY, "n_acceptors": 5, "radius_nm": 50.0, "site_cutoff_nm": 45.0, "electrode_cutoff_nm": 60.0}
    dev = HoppingDevice(**{**params, "seed": seed}, current_estimator=estimator)
    n = len(dev.dopants.acceptors)
    assert dev._n_nbr.min() < n - 1 and dev._elec_ptr[-1] < n * dev.config.n_electrodes
    assert_matches_master_equation(dev, np.array([0.04, -0.03]))


def test_the_proposal_sums_follow_every_change_of_occupation():
    # the kernel keeps, per site, the prefactor sums to its occupied and to its empty neighbours, and the sum of
    # prefactors of every possible site-site hop, by updates over one row per change; compare with brute force
    dev = HoppingDevice()
    n = len(dev.dopants.acceptors)
    w = np.zeros((n, n))
    for s in range(n):
        w[s, dev._nbr[s, : dev._n_nbr[s]]] = dev._pair_w[s, : dev._n_nbr[s]]
    rng = np.random.default_rng(0)
    occ = (rng.random(n) < 0.7).astype(np.uint8)
    w_occ, w_emp = np.zeros(n), np.zeros(n)
    bound = kmc._neighbour_sums(occ, dev._pair_w, dev._nbr, dev._n_nbr, w_occ, w_emp)
    for site in rng.integers(0, n, 500):
        occ[site] ^= 1
        bound += kmc._flip_sums(site, bool(occ[site]), dev._pair_w, dev._nbr, dev._n_nbr, w_occ, w_emp)
    np.testing.assert_allclose(w_occ, w @ occ, rtol=1e-9)
    np.testing.assert_allclose(w_emp, w @ (1 - occ), rtol=1e-9)
    assert bound == pytest.approx(occ @ w @ (1 - occ), rel=1e-9)  # every pair from an occupied to an empty site


def test_ramo_shockley_and_counting_agree_on_the_default_device_and_the_first_varies_less():
    # fixed blocks: both estimators read the same trajectory (same seed, same hops)
    kw = dict(equilibration_hops=5000, block_hops=5000, min_blocks=16, max_blocks=16)
    v = np.random.default_rng(5).uniform(-1.2, 0.6, (4, 7))
    counted = HoppingDevice(**kw).simulate(v)
    weighted = HoppingDevice(**kw, current_estimator="ramo_shockley").simulate(v)
    np.testing.assert_array_equal(weighted.electrode_current_na, counted.electrode_current_na)
    np.testing.assert_array_equal(weighted.hops, counted.hops)
    gap = np.abs(weighted.current_na - counted.current_na)
    assert np.all(gap < 4 * np.hypot(weighted.stderr_na, counted.stderr_na)), (weighted.current_na, counted.current_na)
    assert np.abs(counted.current_na).max() > 20  # real currents, not noise around zero
    # the induced-current average needs fewer hops for the same standard error
    assert np.mean(weighted.stderr_na**2) < 0.7 * np.mean(counted.stderr_na**2)


# ----------------------------------------------------------------------------- equilibrium and transport


def fast_device(**kw) -> HoppingDevice:
    params = dict(equilibration_hops=20000, block_hops=20000, min_blocks=8, max_blocks=8)
    params.update(kw)
    return HoppingDevice(**params)


def test_zero_bias_gives_zero_current():
    dev = fast_device()
    res = dev.simulate(np.zeros((3, 7)))
    assert np.all(np.abs(res.current_na) < 3 * res.stderr_na)
    assert np.all(res.stderr_na > 0)


def test_currents_into_all_electrodes_sum_to_zero():
    dev = fast_device()
    v = np.array([[0.4, -0.8, 0.1, -0.3, 0.5, -1.0, 0.2]])
    res = dev.simulate(v)
    # the net charge entering all electrodes equals the charge that left the device:
    # at most one hole per site over the whole run
    bound_na = dev.config.n_acceptors * ELEMENTARY_CHARGE_C * 1e9 / res.simulated_time_s[0]
    assert abs(res.electrode_current_na[0].sum()) <= bound_na
    assert np.abs(res.electrode_current_na[0]).max() > 10 * bound_na  # the currents themselves are not tiny


def test_small_bias_gives_linear_current():
    dev = fast_device(temperature_k=150.0, block_hops=50000)
    bias = np.array([-8e-3, -4e-3, 0.0, 4e-3, 8e-3])  # volts, below kT/e = 12.9 mV
    v = np.zeros((len(bias), 7))
    v[:, 0] = bias
    res = dev.simulate(v)
    w = 1 / res.stderr_na**2
    X = np.stack([np.ones_like(bias), bias, bias**2], 1)
    cov = np.linalg.inv(X.T @ (w[:, None] * X))
    coef = cov @ X.T @ (w * res.current_na)
    err = np.sqrt(np.diag(cov))
    assert coef[1] > 4 * err[1]  # a clear, positive conductance
    assert abs(coef[2]) < 3 * err[2]  # no curvature at this scale
    assert abs(coef[0]) < 3 * err[0]  # and no current at zero bias


def conductance_na_per_v(temperature_k: float) -> tuple[float, float]:
    dev = fast_device(temperature_k=temperature_k, block_hops=40000)
    v = np.zeros((2, 7))
    v[:, 0] = [-0.01, 0.01]
    res = dev.simulate(v)
    return (res.current_na[1] - res.current_na[0]) / 0.02, np.hypot(*res.stderr_na) / 0.02


def test_conductance_rises_with_temperature():
    # thermally activated hopping: the lower the temperature, the stronger the rise
    (g30, e30), (g50, e50), (g77, e77) = (conductance_na_per_v(t) for t in (30.0, 50.0, 77.0))
    assert g50 - g30 > 3 * np.hypot(e30, e50)
    assert g77 - g50 > 3 * np.hypot(e50, e77)


def fermi_dirac_deviation(block_hops: int) -> tuple[np.ndarray, np.ndarray]:
    """|simulated - Fermi-Dirac| occupation per site without interactions, and the expected occupations."""
    dev = HoppingDevice(
        coulomb_interactions=False, energy_disorder_ev=0.02, fermi_level_ev=0.0,
        equilibration_hops=max(20000, block_hops // 20), block_hops=block_hops, min_blocks=4, max_blocks=4,
    )  # fmt: skip
    res = dev.simulate(np.zeros((1, 7)))
    kT = BOLTZMANN_EV_PER_K * dev.config.temperature_k
    energy = dev.static_energy_ev  # disorder only: no potential at 0 V, no Coulomb terms
    expected = 1 / (1 + np.exp((energy - dev.config.fermi_level_ev) / kT))
    return np.abs(res.occupation[0] - expected), expected


def test_fermi_dirac_occupation_without_interactions():
    deviation, expected = fermi_dirac_deviation(block_hops=100000)
    assert deviation.mean() < 0.02
    assert deviation.max() < 0.15
    assert expected.min() < 0.1 and expected.max() > 0.9  # the test spans empty to full sites


def test_default_device_spans_tens_to_hundreds_of_na():
    dev = HoppingDevice(equilibration_hops=5000, block_hops=5000, min_blocks=4, max_blocks=4)
    v = np.random.default_rng(0).uniform(-1.2, 0.6, (24, 7))
    current = dev.measure(v)
    span = current.max() - current.min()
    assert 50 < span < 1000


# ----------------------------------------------------------------------------- electrostatics and geometry


def test_laplace_solution_superposes_symmetrically():
    cfg = HoppingConfig()
    pot = solve_electrode_potentials(cfg)
    grid = pot.grid
    np.testing.assert_allclose(grid.sum(0), 1.0, atol=1e-9)  # all electrodes at 1 V -> 1 V everywhere
    assert grid.min() > -1e-9 and grid.max() < 1 + 1e-9  # maximum principle
    np.testing.assert_allclose(grid[:, 0, 0], 1 / cfg.n_electrodes, atol=1e-9)  # centre, by symmetry
    # mean-value property of harmonic functions: every ring averages to the centre value
    np.testing.assert_allclose(grid[:, 1:-1, :].mean(-1), grid[:, :1, 0].repeat(grid.shape[1] - 2, 1), atol=1e-9)
    # rotating by one electrode pitch maps electrode 0's solution onto electrode 1's
    shift = pot.n_theta // cfg.n_electrodes
    np.testing.assert_allclose(np.roll(grid[0], shift, axis=1), grid[1], atol=2e-2)


def test_laplace_solution_converges_with_the_grid():
    points = place_dopants(HoppingConfig()).acceptors
    coarse = solve_electrode_potentials(HoppingConfig(grid_spacing_nm=5.0)).at(points)
    fine = solve_electrode_potentials(HoppingConfig(grid_spacing_nm=2.5)).at(points)
    finer = solve_electrode_potentials(HoppingConfig(grid_spacing_nm=1.25)).at(points)
    assert np.abs(fine - finer).max() < 0.6 * np.abs(coarse - finer).max()
    assert np.abs(fine - finer).max() < 0.02


def test_distance_to_arcs_matches_brute_force():
    cfg = HoppingConfig()
    points = place_dopants(cfg).acceptors
    half = cfg.electrode_width_nm / cfg.radius_nm / 2
    brute = np.empty((len(points), cfg.n_electrodes))
    for k in range(cfg.n_electrodes):
        ang = 2 * np.pi * k / cfg.n_electrodes + np.linspace(-half, half, 20001)
        arc = cfg.radius_nm * np.stack([np.cos(ang), np.sin(ang)], 1)
        brute[:, k] = np.sqrt(((points[:, None] - arc[None]) ** 2).sum(-1)).min(1)
    np.testing.assert_allclose(distance_to_arcs(points, cfg), brute, atol=0.02)


def test_dopants_respect_disc_and_spacing():
    cfg = HoppingConfig()
    d = place_dopants(cfg)
    allp = np.vstack([d.acceptors, d.donors])
    assert allp.shape == (cfg.n_acceptors + cfg.n_donors, 2)
    assert np.hypot(*allp.T).max() <= cfg.radius_nm
    dist = np.sqrt(((allp[:, None] - allp[None]) ** 2).sum(-1)) + np.eye(len(allp)) * 1e9
    assert dist.min() >= cfg.min_site_distance_nm


# ----------------------------------------------------------------------------- the seed is the chip


def test_same_seed_same_device_and_numbers():
    kw = dict(equilibration_hops=2000, block_hops=2000, min_blocks=2, max_blocks=2)
    v = np.random.default_rng(1).uniform(-1.2, 0.6, (3, 7))
    a, b = HoppingDevice(seed=5, **kw), HoppingDevice(seed=5, **kw)
    np.testing.assert_array_equal(a.dopants.acceptors, b.dopants.acceptors)
    first = a.measure(v)
    np.testing.assert_array_equal(first, b.measure(v))
    assert not np.array_equal(first, a.measure(v))  # a repeated measurement has fresh noise
    other = HoppingDevice(seed=6, **kw)
    assert not np.allclose(other.dopants.acceptors, a.dopants.acceptors)


def test_results_do_not_depend_on_thread_count():
    kw = dict(equilibration_hops=2000, block_hops=2000, min_blocks=2, max_blocks=2)
    v = np.random.default_rng(2).uniform(-1.2, 0.6, (4, 7))
    one = HoppingDevice(n_threads=1, **kw).measure(v)
    two = HoppingDevice(n_threads=2, **kw).measure(v)
    np.testing.assert_array_equal(one, two)


def test_points_stopping_at_different_times_give_the_same_results_on_any_thread_count():
    """Each point runs blocks until its own error is met, so threads take points in varying order."""
    kw = dict(equilibration_hops=1000, block_hops=1000, min_blocks=2, max_blocks=12, rel_tolerance=0.05)
    v = np.random.default_rng(3).uniform(-1.2, 0.6, (7, 7))
    v[2] = 0.0  # near zero current: runs to max_blocks while the others stop early
    one = HoppingDevice(n_threads=1, **kw).simulate(v)
    three = HoppingDevice(n_threads=3, **kw).simulate(v)
    assert len(set(one.hops.tolist())) > 1, "the points should stop after different numbers of hops"
    for field in ("current_na", "stderr_na", "electrode_current_na", "occupation", "hops", "simulated_time_s"):
        np.testing.assert_array_equal(getattr(one, field), getattr(three, field), err_msg=field)


def test_an_interrupted_batch_stops_every_thread_after_its_current_point(monkeypatch):
    import time

    from inmaterio.devices.hopping import kmc

    started = []

    def fake_point(b, *args):
        started.append(b)
        if b == 3:
            raise KeyboardInterrupt
        time.sleep(0.01)

    monkeypatch.setattr(kmc, "_simulate_one", fake_point)
    v = np.zeros((40, 7))
    for threads in (1, 2):
        started.clear()
        with pytest.raises(KeyboardInterrupt):
            HoppingDevice(n_threads=threads, equilibration_hops=100, block_hops=100, min_blocks=2, max_blocks=2).simulate(v)
        assert 3 in started and len(started) <= 6, (threads, started)  # not the whole batch of 40


# ----------------------------------------------------------------------------- errors


def test_refuses_out_of_range_and_nan_voltages():
    dev = HoppingDevice(equilibration_hops=100, block_hops=100, min_blocks=2, max_blocks=2)
    with pytest.raises(VoltageError, match=r"electrode 'e2' voltage 0.7 V in sample 0 outside \[-1.2, 0.6\] V"):
        dev.measure(np.array([[0, 0, 0.7, 0, 0, 0, 0]]))
    with pytest.raises(VoltageError, match="not finite"):
        dev.measure(np.array([[0, 0, np.nan, 0, 0, 0, 0]]))
    with pytest.raises(VoltageError, match=r"shape \(batch, 7\)"):
        dev.measure(np.zeros((1, 8)))


@pytest.mark.parametrize("threads", [0, -2, 2.5, "two", True])
def test_refuses_a_thread_count_that_is_not_a_positive_whole_number(threads):
    with pytest.raises(ConfigError, match=rf"field 'n_threads' = {re.escape(repr(threads))}: must be a whole number >= 1"):
        HoppingDevice(n_threads=threads, equilibration_hops=100, block_hops=100, min_blocks=2, max_blocks=2)


def test_too_cold_for_float64_is_an_error_not_a_nan():
    dev = HoppingDevice(temperature_k=2.0, equilibration_hops=100, block_hops=100, min_blocks=2, max_blocks=2)
    with pytest.raises(SimulationError, match="temperature_k=2.0"):
        dev.measure(np.full((1, 7), -1.2))


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"readout_electrode": 8}, "readout_electrode 8 outside [0, 7]"),
        ({"voltage_ranges_v": [[-1, 1]] * 3}, "expected one per activation electrode (7)"),
        ({"voltage_ranges_v": [[1, -1]] * 7}, "voltage_ranges_v[0] = [1.0, -1.0] V must have low < high"),
        ({"temperature_k": -5}, "temperature_k"),
        ({"n_acceptor": 10}, "unknown key 'n_acceptor'"),
        ({"electrode_width_nm": 200}, "too wide"),
        ({"current_estimator": "ramo"}, "field 'current_estimator' = 'ramo'"),
    ],
)
def test_config_errors_name_the_field(bad, message):
    with pytest.raises(ConfigError) as info:
        validate_config(HoppingConfig, bad)
    assert message in str(info.value)


def test_a_restarted_device_does_not_replay_random_streams():
    # an acquisition resumed in a new process starts the call counter again; its new
    # batches must not replay the random streams of the first batches
    rng = np.random.default_rng(3)
    first, second = rng.uniform(-1.2, 0.6, (2, 4, 7))
    kw = dict(equilibration_hops=100, block_hops=100, min_blocks=2, max_blocks=2)
    seeds_first = HoppingDevice(**kw)._stream_seeds(first)
    assert np.array_equal(HoppingDevice(**kw)._stream_seeds(first), seeds_first)  # reproducible
    assert not set(HoppingDevice(**kw)._stream_seeds(second)) & set(seeds_first)  # no replay
    again = HoppingDevice(**kw)
    again._stream_seeds(first)
    assert not set(again._stream_seeds(first)) & set(seeds_first)  # a repeat has fresh noise


# ----------------------------------------------------------------------------- slow, higher precision


@pytest.mark.slow
@pytest.mark.parametrize("estimator", ["counting", "ramo_shockley"])
def test_kmc_matches_exact_master_equation_four_sites_with_disorder(estimator):
    params = {**TINY, "n_acceptors": 4, "n_donors": 2, "radius_nm": 50.0, "block_hops": 200000, "seed": 11}
    dev = HoppingDevice(**params, current_estimator=estimator)
    assert_matches_master_equation(dev, np.array([0.04, -0.03]))


@pytest.mark.slow
def test_fermi_dirac_occupation_precise():
    deviation, _ = fermi_dirac_deviation(block_hops=1000000)
    assert deviation.mean() < 0.01
    assert deviation.max() < 0.08


# ----------------------------------------------------------------------------- resumable chains and scheduling


@pytest.mark.parametrize("threads", [1, 3])
def test_chains_paused_after_every_block_give_the_same_results(monkeypatch, threads):
    """A point's stopping rule is checked after every block, so cutting its chain into slices changes nothing."""
    kw = dict(equilibration_hops=1000, block_hops=1000, min_blocks=2, max_blocks=12, rel_tolerance=0.05, abs_tolerance_na=1e-6)
    v = np.random.default_rng(3).uniform(-1.2, 0.6, (7, 7))
    v[5] = 0.0  # near zero current: runs to max_blocks
    whole = HoppingDevice(n_threads=1, **kw).simulate(v)
    monkeypatch.setattr(kmc, "SLICE_HOPS", 1)  # one block per slice
    monkeypatch.setattr(kmc, "WINDOW_PER_THREAD", 1)  # few chains held: points wait for a free place
    sliced = HoppingDevice(n_threads=threads, **kw).simulate(v)
    assert whole.hops[5] == 1000 * 13, "the zero-bias point should run to max_blocks"
    for field in ("current_na", "stderr_na", "electrode_current_na", "occupation", "hops", "simulated_time_s"):
        np.testing.assert_array_equal(getattr(whole, field), getattr(sliced, field), err_msg=field)


def test_after_the_first_blocks_the_point_with_the_most_work_left_runs_first(monkeypatch):
    calls = []
    advance = kmc._simulate_one

    def logged(b, slot, blocks, *args):
        calls.append((b, blocks))
        advance(b, slot, blocks, *args)

    monkeypatch.setattr(kmc, "_simulate_one", logged)
    monkeypatch.setattr(kmc, "SLICE_HOPS", 1000)  # slices of one block
    kw = dict(equilibration_hops=1000, block_hops=1000, min_blocks=3, max_blocks=40, rel_tolerance=0.2, abs_tolerance_na=1e-6)
    v = np.random.default_rng(3).uniform(-1.2, 0.6, (4, 7))
    v[3] = 0.0  # last in the batch, and the one with the most blocks to go
    result = HoppingDevice(n_threads=1, **kw).simulate(v)
    assert calls[:4] == [(b, 3) for b in range(4)]  # every point's first blocks, in order
    assert calls[4] == (3, 1)  # then the zero-bias point, the others having met the tolerance or nearly
    assert result.hops[3] == 1000 * 41 and result.hops[:3].max() < 1000 * 41


def test_blocks_left_follows_the_inverse_square_root_law():
    """With standard error s after n blocks and target t, n (s / t)^2 blocks are needed in all, s at its upper bound.

    Four block means have 3 degrees of freedom; the 10 % quantile of chi-square(3) is 0.5844 (tables), so the
    variance's 90 % upper bound is 3 / 0.5844 = 5.133 times its estimate.
    """
    slots = kmc._ChainSlots(1, n_sites=3, n_electrodes=2, max_blocks=100)
    slot = slots.take()
    slots.chain_i[slot, kmc._BLOCKS] = 4
    slots.block_means[slot, :4] = [9.0, 11.0, 9.0, 11.0]  # mean 10, standard error sqrt(4/3/4) = 0.577
    slots.chain_f[slot, kmc._ALL_CHARGE] = 40.0
    slots.chain_f[slot, kmc._ALL_TIME] = 4.0
    stderr = np.sqrt(4.0 / 3.0 / 4.0)
    slots.chain_f[slot, kmc._STDERR] = stderr
    left = slots.blocks_left(slot, min_blocks=2, max_blocks=100, rel_tol=0.05, abs_tol=0.0)
    assert left == pytest.approx(4 * (stderr / 0.5) ** 2 * 3 / 0.5844 - 4, rel=0.02)
    left = slots.blocks_left(slot, min_blocks=2, max_blocks=100, rel_tol=0.05, abs_tol=0.0, confidence=0.5)
    assert left == pytest.approx(4 * (stderr / 0.5) ** 2 * 3 / 2.366 - 4, rel=0.02)  # chi-square(3) median 2.366
    assert slots.blocks_left(slot, min_blocks=2, max_blocks=20, rel_tol=0.02, abs_tol=0.0) == 16  # capped
    assert slots.blocks_left(slot, min_blocks=2, max_blocks=100, rel_tol=0.2, abs_tol=0.0) == 0  # already met


@pytest.mark.parametrize(
    "probability, dof, table",  # chi-square quantiles from statistical tables
    [(0.1, 3, 0.5844), (0.5, 3, 2.366), (0.1, 10, 4.865), (0.9, 10, 15.99), (0.1, 60, 46.46)],
)
def test_chi_square_quantile_matches_the_tables(probability, dof, table):
    assert kmc._chi2_quantile(probability, dof) == pytest.approx(table, rel=0.02)


def _chain_after_blocks(slots, slot, block_means):
    """Give the chain in ``slot`` these block means (unit block time), as if it had run them."""
    n = len(block_means)
    slots.chain_i[slot, kmc._BLOCKS] = n
    slots.block_means[slot, :n] = block_means
    slots.chain_f[slot, kmc._ALL_CHARGE] = float(np.sum(block_means))
    slots.chain_f[slot, kmc._ALL_TIME] = float(n)
    slots.chain_f[slot, kmc._STDERR] = np.std(block_means, ddof=1) / np.sqrt(n)


def test_a_point_that_would_end_the_batch_runs_before_new_points():
    # 6 points on 2 threads, 2 blocks at first (no equilibration), at most 100 blocks, 10 % relative error
    slots = kmc._ChainSlots(6, n_sites=3, n_electrodes=2, max_blocks=100)
    schedule = kmc._Schedule(6, 2, slots, 0, 1000, 2, 100, rel_tol=0.1, abs_tol=0.0)
    b, slot, blocks = schedule.next()
    assert (b, blocks) == (0, 2)
    _chain_after_blocks(slots, slot, [5.0, 15.0])  # standard error 5 on mean 10: needs 2 * (5 / 1)^2 = 50 blocks
    schedule.put_back(b, slot)
    assert schedule.expected[slot] == 48
    # at its variance's upper bound it needs more than the cap (100), 98 left: more than the other thread's share
    # of the other work known to remain (5 new points * 2 blocks), so it would end the batch and runs now
    assert schedule.next() == (0, slot, schedule.slice_blocks)
    # a point with little work left waits while new points remain
    _chain_after_blocks(slots, slot, [9.0, 11.0, 9.0, 11.0])  # standard error 0.58: 4 blocks are enough
    schedule.put_back(0, slot)
    assert schedule.expected[slot] == 0
    new_point, _, blocks = schedule.next()
    assert (new_point, blocks) == (1, 2)


def test_the_schedule_runs_every_point_until_it_stops():
    slots = kmc._ChainSlots(2, n_sites=3, n_electrodes=2, max_blocks=10)  # fewer places than points
    schedule = kmc._Schedule(5, 1, slots, 0, 1000, 2, 10, rel_tol=0.1, abs_tol=0.0)
    ran = []
    while (task := schedule.next()) is not None:
        b, slot, blocks = task
        ran.append(b)
        slots.chain_i[slot, kmc._DONE] = int(ran.count(b) == 2)  # every point stops at its second slice
        _chain_after_blocks(slots, slot, [5.0, 15.0])
        schedule.put_back(b, slot)
    assert schedule.finished and sorted(ran) == sorted(2 * list(range(5)))
