"""Adaptive sampling in the SMG: candidate pools on slices, greedy selection by spread, resumable rounds."""

import itertools

import numpy as np
import pytest

import inmaterio.devices.analytic as analytic
from inmaterio.runs import read_run
from inmaterio.smg import SMGConfig, run_smg
from inmaterio.smg.adaptive import ROUND_DIR, candidate_pool, concatenate, select_spread
from inmaterio.smg.dataset import Dataset, load_dataset
from inmaterio.smg.mlp_trainer import MLPTrainer

RANGES = np.array([[-1.2, 0.6], [-0.4, 0.8], [0.1, 0.5], [-0.7, -0.2]])  # the last two exclude 0 V


def quiet(_message):
    pass


def test_candidate_pool_puts_its_slices_through_range_ends_and_ground():
    voltages, on_slice = candidate_pool(RANGES, 4000, 0.25, np.random.default_rng(3))
    assert voltages.shape == (4000, 4) and on_slice.sum() == 1000 and on_slice[:1000].all()
    assert ((voltages >= RANGES[:, 0]) & (voltages <= RANGES[:, 1])).all()
    anchors = [np.array([low, min(max(0.0, low), high), high]) for low, high in RANGES]
    at_anchor = np.stack([np.isin(voltages[:, k], anchors[k]) for k in range(4)], axis=1)
    free = (~at_anchor).sum(axis=1)
    # slice points: 1 or 2 electrodes free (a uniform draw never hits an anchor), both kinds about equally often
    assert set(free[on_slice]) == {1, 2}
    assert abs(np.mean(free[on_slice] == 1) - 0.5) < 4 * np.sqrt(0.25 / 1000)
    # the others at an end or at 0 V clipped into the range: electrode 2 (0.1..0.5 V) is held at 0.1 or 0.5 V only
    held = voltages[on_slice][:, 2][at_anchor[on_slice][:, 2]]
    assert set(np.round(held, 12)) == {0.1, 0.5}
    assert set(np.round(voltages[on_slice][:, 0][at_anchor[on_slice][:, 0]], 12)) == {-1.2, 0.0, 0.6}
    assert (free[~on_slice] == 4).all()  # the uniform part is uniform
    again, _ = candidate_pool(RANGES, 4000, 0.25, np.random.default_rng(3))
    np.testing.assert_array_equal(again, voltages)


def test_greedy_selection_by_spread_keeps_its_distance():
    ranges = np.array([[0.0, 1.0], [0.0, 2.0]])
    voltages = np.array([[0.0, 0.0], [0.01, 0.0], [0.5, 1.0], [0.5, 1.02], [1.0, 2.0]])
    score = np.array([5.0, 4.0, 3.0, 2.0, 1.0])
    # radius 0.05 of the unit box: point 1 is 0.01 from point 0, point 3 is 0.01 (0.02 V / 2 V) from point 2
    assert select_spread(voltages, score, ranges, 5, 0.05).tolist() == [0, 2, 4]
    assert select_spread(voltages, score, ranges, 2, 0.05).tolist() == [0, 2]
    assert select_spread(voltages, score, ranges, 5, 0.0).tolist() == [0, 1, 2, 3, 4]
    rng = np.random.default_rng(0)
    cloud = rng.uniform([0.0, 0.0], [1.0, 2.0], size=(3000, 2))
    chosen = select_spread(cloud, rng.random(3000), ranges, 200, 0.06)
    unit = cloud[chosen] / [1.0, 2.0]
    closest = min(np.hypot(*(unit[i] - unit[j])) for i, j in itertools.combinations(range(len(chosen)), 2))
    assert closest >= 0.06
    # each taken point is the best one still available: nothing better lies outside every exclusion disc
    scores = rng.random(3000)
    chosen = select_spread(cloud, scores, ranges, 50, 0.1)
    unit_all = cloud / [1.0, 2.0]
    far = np.min(np.linalg.norm(unit_all[:, None] - unit_all[chosen][None], axis=2), axis=1) >= 0.1
    assert not far.any() or scores[far].max() <= scores[chosen].min()


def test_concatenated_data_keep_every_part_and_its_fingerprint():
    a = Dataset(np.zeros((2, 3)), [1.0, 2.0], [0.1, 0.1], {"fingerprint": "a", "plan_fingerprint": "pa", "x": 1})
    b = Dataset(np.ones((1, 3)), [3.0], [0.2], {"fingerprint": "b"})
    both = concatenate([a, b])
    np.testing.assert_array_equal(both.current_na, [1.0, 2.0, 3.0])
    assert both.metadata == {"x": 1, "parts": [{"n_points": 2, "fingerprint": "a"}, {"n_points": 1, "fingerprint": "b"}]}


def adaptive_config(**changes):
    fields = dict(
        device={"type": "analytic", "n_activation": 3, "noise_na": 0.5},
        sampling={"kind": "lhs", "n_samples": 400, "seed": 0},
        test_sampling={"kind": "uniform", "n_samples": 200, "seed": 1},
        acquisition={"batch_size": 60, "progress": False},
        training={"hidden_sizes": [16], "max_epochs": 8, "num_threads": 1},
        consistency_repeats=0,
        iv_points=5,
        adaptive={"rounds": 2, "points_per_round": 90, "members": 2, "pool_factor": 10},
    )
    return SMGConfig(**{**fields, **changes})


def test_adaptive_rounds_measure_where_the_members_disagree(tmp_path):
    config = adaptive_config()
    summary = run_smg(config, tmp_path, progress=False, notify=quiet)
    adaptive = summary["adaptive"]
    assert adaptive["n_points"] == 400 + 2 * 90 and summary["train_data"]["n_points"] == 400
    assert sum(summary["split"].values()) == 580  # the final model trains on every point
    for r, report in enumerate(adaptive["rounds"], start=1):
        folder = tmp_path / ROUND_DIR.format(r)
        assert [read_run(folder / f"member_{k}")["kind"] for k in (0, 1)] == ["inmaterio.smg.training"] * 2
        data = load_dataset(folder / "data")
        assert len(data) == report["n_selected"] == 90 and data.metadata["adaptive_round"] == r
        assert report["n_points_before"] == 400 + (r - 1) * 90 and report["pool_size"] == 900
        assert report["selected_mean_spread_na"] > report["pool_mean_spread_na"]
        with np.load(folder / "plan.npz") as plan:
            np.testing.assert_array_equal(plan["voltages_v"], data.voltages_v)
            assert np.mean(plan["on_slice"]) == pytest.approx(report["selected_on_slices"])
    assert (tmp_path / "adaptive_rounds.png").stat().st_size > 10_000
    provenance = read_run(tmp_path)["identity"]["config"]["adaptive"]
    assert provenance["rounds"] == 2
    # inmaterio report puts the run in the surrogates' table, its numbers from metrics.json
    from inmaterio.tasks.report import build_report

    text = build_report([tmp_path])
    row = next(line for line in text.splitlines() if line.startswith(f"| `{tmp_path}`"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    test = summary["test_metrics"]
    assert cells[1] == "400 + 180 adaptive" and cells[2] == f"{test['rmse_na']:.2f}"
    assert float(cells[3]) == pytest.approx((test["rmse_na"] ** 2 - test["noise_floor_na"] ** 2) ** 0.5, abs=0.006)
    worst = int(np.argmax(summary["iv_rmse_per_electrode_na"]))
    assert cells[6] == f"{max(summary['iv_rmse_per_electrode_na']):.2f} (e{worst})" and cells[8] == "n/a"


def test_stop_ratio_ends_the_rounds_after_the_first_whose_picks_held_no_surprise(tmp_path):
    """Round 1's numbers do not depend on ``stop_ratio``: just above its picks' RMSE / validation RMSE the rounds stop
    after it (its points kept, no round 2 folder); just below they go on to round 2."""
    every = run_smg(adaptive_config(), tmp_path / "every", progress=False, notify=quiet)["adaptive"]
    first = every["rounds"][0]
    ratio = first["selected_rmse_na"] / first["validation_rmse_na"]
    assert ratio > 1.02  # the picks are where the model is wrong
    above = adaptive_config(adaptive={**adaptive_config().adaptive.model_dump(), "stop_ratio": ratio * 1.01})
    stopped = run_smg(above, tmp_path / "stopped", progress=False, notify=quiet)
    assert stopped["adaptive"]["rounds"] == every["rounds"][:1] and stopped["adaptive"]["n_points"] == 400 + 90
    assert sum(stopped["split"].values()) == 490 and not (tmp_path / "stopped" / ROUND_DIR.format(2)).exists()
    assert read_run(tmp_path / "stopped")["identity"]["config"]["adaptive"]["stop_ratio"] == ratio * 1.01
    assert "stop_ratio" not in read_run(tmp_path / "every")["identity"]["config"]["adaptive"]  # None: as before
    below = adaptive_config(adaptive={**adaptive_config().adaptive.model_dump(), "stop_ratio": ratio * 0.99})
    assert run_smg(below, tmp_path / "below", progress=False, notify=quiet)["adaptive"] == every


def test_an_interrupted_round_resumes_to_the_numbers_of_an_uninterrupted_run(tmp_path, monkeypatch):
    config = adaptive_config()
    reference = run_smg(config, tmp_path / "ref", progress=False, notify=quiet)
    original = analytic.AnalyticDevice._measure
    calls = []

    def interrupt_in_round_two(self, voltages):
        if (tmp_path / "run" / ROUND_DIR.format(2) / "plan.npz").is_file():
            calls.append(len(voltages))
            if len(calls) == 1:  # the first batch of round 2 is measured and saved, the second is interrupted
                return original(self, voltages)
            raise KeyboardInterrupt
        return original(self, voltages)

    with monkeypatch.context() as patch:
        patch.setattr(analytic.AnalyticDevice, "_measure", interrupt_in_round_two)
        with pytest.raises(KeyboardInterrupt):
            run_smg(config, tmp_path / "run", progress=False, notify=quiet)
    assert read_run(tmp_path / "run" / ROUND_DIR.format(2) / "data")["state"] == "interrupted"

    def no_training(*args, **kwargs):
        raise AssertionError("a finished member trained again")

    with monkeypatch.context() as patch:  # round 2's members are finished: resuming measures, it does not retrain them
        patch.setattr(MLPTrainer, "step", no_training)
        patch.setattr(
            "inmaterio.smg.pipeline.train_surrogate",
            lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()),
        )
        with pytest.raises(KeyboardInterrupt):
            run_smg(config, tmp_path / "run", progress=False, notify=quiet)
    summary = run_smg(config, tmp_path / "run", progress=False, notify=quiet)
    for key in ("adaptive", "test_metrics", "training", "split"):
        assert summary[key] == reference[key], key


def test_half_the_slices_hold_every_other_electrode_at_one_anchor():
    """Lines through ground (where I-V sweeps are taken) and through the extreme corners are drawn on purpose."""
    ranges = np.array([[-1.2, 0.6]] * 7)
    voltages, on_slice = candidate_pool(ranges, 60000, 0.5, np.random.default_rng(1))
    held = voltages[on_slice]
    free = ~np.isin(held, [-1.2, 0.0, 0.6])
    for anchor in (-1.2, 0.0, 0.6):
        all_at = ((held == anchor) | free).all(axis=1)
        # shared anchors: 1/2 * 1/3; independent ones: 1/2 * (1/3)^5 or (1/3)^6 (5 or 6 held electrodes)
        expected = 1 / 6 + 0.5 * (0.5 * 3.0**-5 + 0.5 * 3.0**-6)
        assert abs(all_at.mean() - expected) < 4 * np.sqrt(expected * (1 - expected) / len(held))


def test_the_adaptive_examples_spend_the_budget_of_their_twins():
    from pathlib import Path

    from inmaterio.config import load_config

    examples = Path(__file__).resolve().parents[1] / "examples"
    folder = examples / "smg_adaptive"
    pairs = [(folder / "adaptive_10k.yaml", folder / "lhs_10k.yaml"), (examples / "smg_default.yaml", folder / "lhs_60k.yaml")]
    for adaptive_file, twin_file in pairs:
        adaptive = load_config(SMGConfig, adaptive_file)
        twin = load_config(SMGConfig, twin_file)
        assert twin.adaptive is None and adaptive.adaptive is not None
        spent = adaptive.sampling.n_samples + adaptive.adaptive.rounds * adaptive.adaptive.points_per_round
        assert spent == twin.sampling.n_samples
        same = ("device", "test_sampling", "training", "postprocess", "iv_points", "ensemble_members")
        assert all(getattr(adaptive, key) == getattr(twin, key) for key in same)
