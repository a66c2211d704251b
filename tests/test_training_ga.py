"""Genetic algorithm: each operator against its formula, then the whole run (optimum, elitism, resume)."""

import json
import math

import pytest
import torch
from pydantic import ValidationError

from inmaterio.config import validate_config
from inmaterio.errors import ConfigError, ModelFileError
from inmaterio.runs import CHECKPOINT_FILE
from inmaterio.training.ga import (
    GAConfig,
    GAResult,
    GeneticAlgorithm,
    blx_alpha_beta_crossover,
    gaussian_mutation,
    mutation_rate,
    rank_probabilities,
    stochastic_universal_sampling,
)

CENTRE = torch.tensor([0.3, -0.5, 0.1, 0.7, -0.2], dtype=torch.float64)
BOUNDS = torch.tensor([[-1.0, 1.0]] * 5, dtype=torch.float64)


def sphere(population):
    """Maximum 0 at CENTRE."""
    return -((population - CENTRE) ** 2).sum(dim=1)


def without_time(history):
    return [{k: v for k, v in row.items() if k != "time_s"} for row in history]


def assert_same_result(a: GAResult, b: GAResult):
    assert torch.equal(a.best_genome, b.best_genome)
    assert a.best_fitness == b.best_fitness
    assert without_time(a.history) == without_time(b.history)
    assert a.generations_run == b.generations_run
    assert a.stopped_because == b.stopped_because


# ----------------------------------------------------------------------------- operators


def test_rank_probabilities_hand_computed_n4_s18():
    p = rank_probabilities(4, 1.8)
    # (2 - s)/N = 0.05; step 2 (s - 1)/(N (N - 1)) = 1.6/12
    expected = torch.tensor([0.05, 0.05 + 1.6 / 12, 0.05 + 3.2 / 12, 0.05 + 4.8 / 12], dtype=torch.float64)
    assert torch.allclose(p, expected, atol=1e-15)
    assert torch.allclose(p, torch.tensor([0.05, 0.183333333333, 0.316666666667, 0.45], dtype=torch.float64))
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-15)
    diffs = p.diff()
    assert torch.allclose(diffs, diffs[0].expand_as(diffs))  # linear in rank
    # best expected s times per N draws, worst 2 - s times
    assert float(p[-1] * 4) == pytest.approx(1.8)
    assert float(p[0] * 4) == pytest.approx(0.2)


@pytest.mark.parametrize("n, s", [(2, 1.0), (7, 2.0), (26, 1.5), (1, 1.8)])
def test_rank_probabilities_sum_to_one(n, s):
    p = rank_probabilities(n, s)
    assert p.shape == (n,)
    assert float(p.sum()) == pytest.approx(1.0, abs=1e-12)
    assert bool((p >= 0).all())
    if s == 1.0:
        assert torch.allclose(p, torch.full((n,), 1 / n, dtype=torch.float64))


def test_sus_picks_floor_or_ceil_of_expected_count():
    p = rank_probabilities(4, 1.8)
    for n_select in (4, 7, 22):
        expected = n_select * p
        for seed in range(200):
            g = torch.Generator().manual_seed(seed)
            picks = stochastic_universal_sampling(p, n_select, g)
            assert picks.shape == (n_select,)
            counts = torch.bincount(picks, minlength=4).to(torch.float64)
            assert int(counts.sum()) == n_select
            assert bool((counts >= torch.floor(expected - 1e-9)).all()), (seed, counts, expected)
            assert bool((counts <= torch.ceil(expected + 1e-9)).all()), (seed, counts, expected)


def test_sus_never_picks_zero_probability_and_averages_to_expectation():
    p = torch.tensor([0.0, 0.25, 0.0, 0.75, 0.0], dtype=torch.float64)
    total = torch.zeros(5, dtype=torch.float64)
    n_runs = 2000
    g = torch.Generator().manual_seed(1)
    for _ in range(n_runs):
        picks = stochastic_universal_sampling(p, 3, g)
        total += torch.bincount(picks, minlength=5)
    assert total[0] == total[2] == total[4] == 0
    # E[count_i] = M p_i; std of the mean over runs < 0.5 / sqrt(n_runs)
    assert torch.allclose(total / n_runs, 3 * p, atol=0.05)


def test_blx_children_in_hand_derived_intervals():
    g = torch.Generator().manual_seed(0)
    n = 4000
    # gene 0: better x = 0 below worse y = 1 -> [0 - 0.5, 1 + 0.1] = [-0.5, 1.1]
    # gene 1: better x = 1 above worse y = 0 -> [0 - 0.1, 1 + 0.5] = [-0.1, 1.5]
    # gene 2: x = y = 0.3 -> exactly 0.3
    better = torch.tensor([[0.0, 1.0, 0.3]], dtype=torch.float64).expand(n, 3).contiguous()
    worse = torch.tensor([[1.0, 0.0, 0.3]], dtype=torch.float64).expand(n, 3).contiguous()
    children = blx_alpha_beta_crossover(better, worse, 0.5, 0.1, g)
    assert children.shape == (n, 3)
    lo, hi = children.min(dim=0).values, children.max(dim=0).values
    assert -0.5 <= float(lo[0]) < -0.49 and 1.09 < float(hi[0]) <= 1.1
    assert -0.1 <= float(lo[1]) < -0.09 and 1.49 < float(hi[1]) <= 1.5
    assert bool((children[:, 2] == 0.3).all())
    # uniform on the interval: mean at its centre (closer to the better parent)
    assert float(children[:, 0].mean()) == pytest.approx(0.3, abs=0.02)
    assert float(children[:, 1].mean()) == pytest.approx(0.7, abs=0.02)


def test_blx_with_zero_alpha_beta_stays_between_parents():
    g = torch.Generator().manual_seed(3)
    better = torch.rand(500, 6, generator=g, dtype=torch.float64) * 2 - 1
    worse = torch.rand(500, 6, generator=g, dtype=torch.float64) * 2 - 1
    children = blx_alpha_beta_crossover(better, worse, 0.0, 0.0, g)
    assert bool((children >= torch.minimum(better, worse)).all())
    assert bool((children <= torch.maximum(better, worse)).all())


def test_gaussian_mutation_rate_and_step_size():
    g = torch.Generator().manual_seed(4)
    genomes = torch.zeros(20000, 2, dtype=torch.float64)
    step_std = torch.tensor([0.1, 2.0], dtype=torch.float64)
    mutated = gaussian_mutation(genomes, 0.25, step_std, g)
    changed = mutated != 0
    assert float(changed.double().mean()) == pytest.approx(0.25, abs=0.01)
    for j in range(2):
        steps = mutated[changed[:, j], j]
        assert float(steps.std()) == pytest.approx(float(step_std[j]), rel=0.03)
    assert torch.equal(gaussian_mutation(genomes, 0.0, step_std, g), genomes)


def test_mutation_rate_schedule():
    cfg = GAConfig(generations=11, mutation_rate_start=0.1, mutation_rate_end=0.01)
    assert mutation_rate(cfg, 0) == 0.1
    assert mutation_rate(cfg, 10) == 0.01
    # geometric: the middle generation has the geometric mean, equal ratios between generations
    assert mutation_rate(cfg, 5) == pytest.approx(math.sqrt(0.1 * 0.01))
    rates = [mutation_rate(cfg, k) for k in range(11)]
    ratios = [b / a for a, b in zip(rates, rates[1:])]
    assert ratios == pytest.approx([0.1 ** (1 / 10)] * 10)
    # end == 0: linear decay
    linear = GAConfig(generations=5, mutation_rate_start=0.2, mutation_rate_end=0.0)
    assert [mutation_rate(linear, k) for k in range(5)] == pytest.approx([0.2, 0.15, 0.1, 0.05, 0.0])
    # constant cases
    assert mutation_rate(GAConfig(generations=1), 0) == 0.1
    same = GAConfig(mutation_rate_start=0.05, mutation_rate_end=0.05)
    assert {mutation_rate(same, k) for k in (0, 50, 199)} == {0.05}


# ----------------------------------------------------------------------------- config and bounds


def test_n_elite_must_be_below_population_size():
    with pytest.raises(ValidationError, match="n_elite 10 must be < population_size 10"):
        GAConfig(population_size=10, n_elite=10)
    with pytest.raises(ConfigError, match="n_elite 12 must be < population_size 10"):
        validate_config(GAConfig, {"population_size": 10, "n_elite": 12})
    with pytest.raises(ConfigError, match="selection_pressure"):
        validate_config(GAConfig, {"selection_pressure": 2.5})
    with pytest.raises(ConfigError, match="unknown key 'mutation'"):
        validate_config(GAConfig, {"mutation": 0.1})


@pytest.mark.parametrize(
    "bounds, message",
    [
        ([[0.0, 1.0], [0.5, 0.1]], r"gene 1 bounds \[0.5, 0.1\] must have low < high"),
        ([[0.0, 1.0], [0.0, 1.0], [0.2, 0.2]], r"gene 2 bounds \[0.2, 0.2\] must have low < high"),
        ([[float("nan"), 1.0]], r"gene 0 bounds \[nan, 1\] are not finite"),
        ([[0.0, float("inf")]], r"gene 0 bounds \[0, inf\] are not finite"),
        ([0.0, 1.0], r"shape \(n_genes, 2\).*got \(2,\)"),
        ([[0.0, 1.0, 2.0]], r"got \(1, 3\)"),
    ],
)
def test_bad_bounds_are_named(bounds, message):
    with pytest.raises(ConfigError, match=message):
        GeneticAlgorithm(GAConfig(), torch.tensor(bounds))


# ----------------------------------------------------------------------------- whole runs


def test_ga_finds_the_optimum_and_best_never_decreases():
    calls = []

    def fitness(population):
        calls.append(population.shape)
        return sphere(population)

    cfg = GAConfig(generations=150, seed=1)
    result = GeneticAlgorithm(cfg, BOUNDS).evolve(fitness)
    assert calls == [(26, 5)] * 150  # one batched call per generation
    assert result.stopped_because == "generations" and result.generations_run == 150
    assert result.best_fitness > -1e-3
    assert torch.allclose(result.best_genome, CENTRE, atol=0.03)
    assert result.best_fitness == pytest.approx(float(sphere(result.best_genome[None])[0]))
    best = [row["best_fitness"] for row in result.history]
    assert all(b >= a for a, b in zip(best, best[1:]))
    assert best[-1] > best[0] + 0.1
    assert [row["generation"] for row in result.history] == list(range(150))
    assert result.history[0]["mutation_rate"] == 0.1 and result.history[-1]["mutation_rate"] == 0.01
    assert all(row["mean_fitness"] <= row["best_fitness"] for row in result.history)


def test_elites_pass_unchanged_and_children_stay_in_bounds():
    seen = []

    def fitness(population):
        seen.append(population.clone())
        return sphere(population)

    cfg = GAConfig(
        population_size=12, n_elite=3, generations=4, mutation_rate_start=1.0, mutation_rate_end=1.0, mutation_scale=5.0
    )
    narrow = torch.tensor([[-0.1, 0.2]] * 5, dtype=torch.float64)
    GeneticAlgorithm(cfg, narrow).evolve(fitness)
    for before, after in zip(seen, seen[1:]):
        elite = before[torch.sort(sphere(before), descending=True, stable=True).indices[:3]]
        assert torch.equal(after[:3], elite)  # not re-mutated despite rate 1
        assert bool((after >= -0.1).all()) and bool((after <= 0.2).all())
        # huge mutation steps, clipped: children pile up on the bounds
        assert bool(((after[3:] == -0.1) | (after[3:] == 0.2)).any())


def test_target_fitness_stops_early():
    cfg = GAConfig(generations=500, target_fitness=-0.05, seed=2)
    result = GeneticAlgorithm(cfg, BOUNDS).evolve(sphere)
    assert result.stopped_because == "target_fitness"
    assert result.best_fitness >= -0.05
    assert result.generations_run < 500
    assert result.history[-2]["best_fitness"] < -0.05 <= result.history[-1]["best_fitness"]


def test_same_seed_same_result_other_seed_other_result():
    cfg = GAConfig(generations=30, seed=7)
    a = GeneticAlgorithm(cfg, BOUNDS).evolve(sphere)
    b = GeneticAlgorithm(cfg, BOUNDS).evolve(sphere, progress=True)
    assert_same_result(a, b)
    c = GeneticAlgorithm(cfg.model_copy(update={"seed": 8}), BOUNDS).evolve(sphere)
    assert not torch.equal(a.best_genome, c.best_genome)


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    cfg = GAConfig(generations=40, seed=3)
    reference = GeneticAlgorithm(cfg, BOUNDS).evolve(sphere)

    folder = tmp_path / "ga"
    seen = []

    def interrupt(generation, so_far):
        seen.append(generation)
        assert isinstance(so_far, GAResult) and so_far.stopped_because == "running"
        assert so_far.generations_run == generation + 1
        if generation == 17:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        GeneticAlgorithm(cfg, BOUNDS).evolve(sphere, callback=interrupt, directory=folder)
    assert seen == list(range(18))
    state = torch.load(folder / CHECKPOINT_FILE, weights_only=True)["state"]
    assert state["generation"] == 17 and len(json.loads(state["history_json"])) == 18
    assert json.loads((folder / "run.json").read_text())["state"] == "interrupted"
    assert len(json.loads((folder / "history.json").read_text())) == 18

    calls = []

    def counting(population):
        calls.append(1)
        return sphere(population)

    resumed = GeneticAlgorithm(cfg, BOUNDS).evolve(counting, directory=folder)
    assert len(calls) == 40 - 18
    assert_same_result(resumed, reference)
    assert json.loads((folder / "run.json").read_text())["state"] == "finished"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["best_fitness"] == reference.best_fitness and metrics["generations_run"] == 40
    assert without_time(json.loads((folder / "history.json").read_text())) == without_time(reference.history)

    # a finished run returns its result without evaluating anything
    calls.clear()
    again = GeneticAlgorithm(cfg, BOUNDS).evolve(counting, directory=folder)
    assert calls == []
    assert_same_result(again, reference)


def test_run_of_another_config_or_bounds_is_refused(tmp_path):
    folder = tmp_path / "ga"
    cfg = GAConfig(generations=3)
    GeneticAlgorithm(cfg, BOUNDS).evolve(sphere, directory=folder)
    before = (folder / CHECKPOINT_FILE).read_bytes()
    with pytest.raises(ConfigError, match=r"config\.mutation_scale: 0\.1 in the folder, 0\.2 now"):
        GeneticAlgorithm(cfg.model_copy(update={"mutation_scale": 0.2}), BOUNDS).evolve(sphere, directory=folder)
    with pytest.raises(ConfigError, match=r"config\.population_size: 26 in the folder, 20 now"):
        GeneticAlgorithm(GAConfig(generations=3, population_size=20), BOUNDS).evolve(sphere, directory=folder)
    with pytest.raises(ConfigError, match=r"n_genes: 5 in the folder, 4 now"):
        GeneticAlgorithm(cfg, BOUNDS[:4]).evolve(sphere, directory=folder)
    other = BOUNDS.clone()
    other[2, 1] = 0.9
    with pytest.raises(ConfigError, match=r"bounds\.gene 2: \[-1\.0, 1\.0\] in the folder, \[-1\.0, 0\.9\] now"):
        GeneticAlgorithm(cfg, other).evolve(sphere, directory=folder)
    with pytest.raises(ConfigError, match=r"extra\.device: absent in the folder, 'chip 2' now"):
        GeneticAlgorithm(cfg, BOUNDS).evolve(sphere, directory=folder, identity={"device": "chip 2"})
    assert (folder / CHECKPOINT_FILE).read_bytes() == before
    # overwrite replaces the finished run
    result = GeneticAlgorithm(cfg.model_copy(update={"mutation_scale": 0.2}), BOUNDS).evolve(
        sphere, directory=folder, overwrite=True
    )
    assert result.generations_run == 3 and (folder / CHECKPOINT_FILE).read_bytes() != before
    # a damaged checkpoint is refused and left as it is
    (folder / CHECKPOINT_FILE).write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match=r"checkpoint '.*checkpoint\.pt' cannot be read"):
        GeneticAlgorithm(cfg.model_copy(update={"mutation_scale": 0.2}), BOUNDS).evolve(sphere, directory=folder)
    assert (folder / CHECKPOINT_FILE).read_bytes() == b"not a checkpoint"


def test_nan_fitness_counts_as_worst():
    def half_nan(population):
        fitness = sphere(population)
        # genomes with a positive first gene "fail" on the device
        return torch.where(population[:, 0] > 0, torch.full_like(fitness, float("nan")), fitness)

    result = GeneticAlgorithm(GAConfig(generations=60, seed=5), BOUNDS).evolve(half_nan)
    assert math.isfinite(result.best_fitness)
    assert float(result.best_genome[0]) <= 0  # a NaN genome never wins
    assert float(result.best_genome[0]) == pytest.approx(0.0, abs=0.05)  # constrained optimum on the edge
    assert result.history[0]["n_nan"] > 0
    assert all(math.isfinite(row["mean_fitness"]) for row in result.history)

    all_nan = GeneticAlgorithm(GAConfig(generations=3), BOUNDS).evolve(lambda p: torch.full((p.shape[0],), math.nan))
    assert all_nan.best_fitness == -math.inf
    assert all(row["n_nan"] == 26 and math.isnan(row["mean_fitness"]) for row in all_nan.history)


def test_wrong_fitness_shape_names_shapes():
    ga = GeneticAlgorithm(GAConfig(generations=2), BOUNDS)
    message = r"returned shape \(26, 1\) for a population of shape \(26, 5\); expected \(26,\)"
    with pytest.raises(ConfigError, match=message):
        ga.evolve(lambda p: sphere(p)[:, None])


def test_genomes_follow_bounds_dtype():
    seen = []
    bounds32 = torch.tensor([[-1.2, 0.6]] * 3)
    GeneticAlgorithm(GAConfig(generations=2), bounds32).evolve(lambda p: seen.append(p.dtype) or -p.sum(dim=1))
    assert seen == [torch.float32, torch.float32]


# ----------------------------------------------------------------------------- noisy fitness


def test_fitness_noise_from_the_global_rng_is_keyed_by_generation():
    def noisy(population):
        return sphere(population) + 0.05 * torch.randn(population.shape[0], dtype=population.dtype)

    cfg = GAConfig(generations=15, seed=2)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = GeneticAlgorithm(cfg, BOUNDS).evolve(noisy)
    assert torch.equal(torch.rand(3), expected_next)  # the caller's RNG is left as it was
    torch.manual_seed(999)  # another global state changes nothing
    b = GeneticAlgorithm(cfg, BOUNDS).evolve(noisy)
    assert_same_result(a, b)
    c = GeneticAlgorithm(cfg.model_copy(update={"seed": 3}), BOUNDS).evolve(noisy)
    assert a.history[0]["mean_fitness"] != c.history[0]["mean_fitness"]


def test_evolution_on_a_noisy_device_repeats_exactly_with_random_streams():
    from inmaterio.devices.analytic import AnalyticDevice

    device = AnalyticDevice(n_activation=4, noise_na=5.0, seed=0)
    bounds = torch.tensor(device.voltage_ranges, dtype=torch.float64)
    keys = []

    def measured(population):
        keys.append(device.next_stream_key())  # the key the next measurement will use
        return torch.as_tensor(device.measure(population.numpy()))

    cfg = GAConfig(generations=6, population_size=8, n_elite=2, seed=1)
    first = GeneticAlgorithm(cfg, bounds).evolve(measured, random_streams=device.random_streams)
    assert keys[:2] == [("scoped", "ga", 0, 0), ("scoped", "ga", 1, 0)]
    # a second run on the same device object measures the same noise: keyed by generation, not by call order
    again = GeneticAlgorithm(cfg, bounds).evolve(measured, random_streams=device.random_streams)
    assert_same_result(first, again)
    # without keys the device numbers its calls, so a repeated run sees other noise
    plain = [GeneticAlgorithm(cfg, bounds).evolve(lambda p: torch.as_tensor(device.measure(p.numpy()))) for _ in range(2)]
    assert plain[0].history != plain[1].history


def test_fit_binary_nodes_by_ga_on_a_device_repeats_exactly():
    from inmaterio.devices.analytic import AnalyticDevice
    from inmaterio.processors import DeviceProcessor
    from inmaterio.tasks.fitting import fit_binary_nodes

    processor = DeviceProcessor(AnalyticDevice(noise_na=3.0, seed=2))
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    targets = torch.tensor([[0.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]])  # AND, XOR
    fits = [
        fit_binary_nodes(processor, x, targets, input_electrodes=("e0", "e1"), data_range=(0.0, 1.0), loss="fisher",
                         algorithm="ga", ga=GAConfig(generations=5, population_size=8, n_elite=2), attempts=2, seed=4)
        for _ in range(2)
    ]  # fmt: skip
    assert torch.equal(fits[0].controls, fits[1].controls)
    assert fits[0].history == fits[1].history
