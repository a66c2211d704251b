"""Solutions that survive the move to the device: the noise-margin loss, task-aware refinement of the surrogate.

Truths: the loss worked out by hand on small outputs (a soft minimum of pair gaps in noise units); a surrogate
fine-tuned on a known local bump (the "device" is the surrogate plus a Gaussian bump) learns the bump where it
was measured and stays the original far from it; the analytic device's own currents at the refinement plan.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from inmaterio.config import validate_config
from inmaterio.devices.analytic import AnalyticDevice
from inmaterio.errors import ConfigError
from inmaterio.processors import DeviceProcessor
from inmaterio.surrogate import load_default_surrogate, load_surrogate
from inmaterio.surrogate.refine import fine_tune, local_plan
from inmaterio.tasks import RunConfig, run_task
from inmaterio.tasks.gates import GATE_INPUTS
from inmaterio.tasks.refinement import measure_plan
from inmaterio.training.gd import GDConfig
from inmaterio.training.losses import LOSSES, noise_margin

ANALYTIC = {"type": "analytic"}

# ---------------------------------------------------------------------------------------- noise_margin


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_noise_margin_by_hand():
    # classes perfectly correlated (rho = 1); the four (1, 0) pairs all have gap 10 nA = 5 noise units
    y = torch.tensor([0.0, 10.0, 10.0, 0.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0, 1.0, 0.0])
    tau = 0.5
    soft_min = 5.0 - tau * math.log(4)  # -tau log(4 exp(-5 / tau))
    assert float(noise_margin(y, t, noise_na=2.0, margin=8.0, softness=tau)) == pytest.approx(softplus(8.0 - soft_min), rel=1e-12)
    # unequal gaps: 1 - 0 = 1, 1 - 3 = -2, 6 - 0 = 6, 6 - 3 = 3 (nA, noise 1 nA); rho by hand from the moments
    y = torch.tensor([0.0, 1.0, 6.0, 3.0], dtype=torch.float64)
    t = torch.tensor([0.0, 1.0, 1.0, 0.0])
    yc, tc = y - y.mean(), t - t.mean()
    rho = float((yc * tc).mean() / math.sqrt(float((yc**2).mean() * (tc**2).mean())))
    soft_min = -tau * math.log(sum(math.exp(-g / tau) for g in (1.0, -2.0, 6.0, 3.0)))
    expected = (1 - rho) + softplus(4.0 - soft_min)
    assert float(noise_margin(y, t, noise_na=1.0, margin=4.0, softness=tau)) == pytest.approx(expected, rel=1e-12)
    assert soft_min <= -2.0  # a soft minimum never exceeds the hard one


def test_noise_margin_either_class_on_top_and_noise_units():
    t = torch.tensor([0.0, 1.0, 1.0, 0.0])
    y = torch.tensor([[-3.0, 9.0, 12.0, 1.0], [3.0, -9.0, -12.0, -1.0]], dtype=torch.float64)  # the same gate, flipped
    losses = noise_margin(y, t, noise_na=2.0)
    assert losses[0] == pytest.approx(float(losses[1]), rel=1e-12)
    # a gap is counted in noise units: currents and noise scaled together leave the loss unchanged
    assert float(noise_margin(5 * y[0], t, noise_na=10.0)) == pytest.approx(float(losses[0]), rel=1e-10)
    # wider classes, lower loss; the gradient pulls the nearest class-1 point up and the nearest class-0 point down
    assert float(noise_margin(y[0] * 2, t, noise_na=2.0)) < float(losses[0])
    yg = y[0].clone().requires_grad_(True)
    noise_margin(yg, t, noise_na=2.0).backward()
    assert yg.grad[1] < 0 and yg.grad[3] > 0  # descent raises y[1] (nearest 1) and lowers y[3] (nearest 0)


def test_noise_margin_is_registered_and_checks_its_inputs():
    assert LOSSES["noise_margin"] is noise_margin
    y = torch.zeros(4)
    with pytest.raises(ConfigError, match="noise_margin: noise_na must be a finite number > 0, got 0"):
        noise_margin(y, torch.tensor([0.0, 1, 1, 0]), noise_na=0.0)
    with pytest.raises(ConfigError, match="noise_margin: margin must be a finite number > 0, got nan"):
        noise_margin(y, torch.tensor([0.0, 1, 1, 0]), margin=float("nan"))
    with pytest.raises(ConfigError, match="noise_margin needs both classes in target"):
        noise_margin(y, torch.ones(4))
    with pytest.raises(ConfigError, match="noise_margin needs binary targets"):
        noise_margin(y, torch.tensor([0.0, 2.0, 1.0, 0.0]))


# ------------------------------------------------------------------------------------------ local_plan


def test_local_plan_centres_first_then_clipped_neighbours_in_the_box():
    ranges = np.array([[-1.0, 1.0], [0.0, 0.5]])
    centres = np.array([[0.0, 0.25], [0.98, 0.0]])
    plan = local_plan(centres, ranges, per_point=50, radius_v=0.1, seed=(3, 1))
    assert plan.shape == (2 + 2 * 50, 2)
    np.testing.assert_array_equal(plan[:2], centres)
    for k, centre in enumerate(centres):
        around = plan[2 + 50 * k : 2 + 50 * (k + 1)]
        assert np.all(np.abs(around - centre) <= 0.1 + 1e-12)
        assert np.all((around >= ranges[:, 0]) & (around <= ranges[:, 1]))
    assert plan[52:, 0].max() == 1.0 and plan[52:, 1].min() == 0.0  # clipped at the edges it crosses
    np.testing.assert_array_equal(plan, local_plan(centres, ranges, 50, 0.1, seed=(3, 1)))  # same seed, same plan
    assert not np.array_equal(plan, local_plan(centres, ranges, 50, 0.1, seed=(3, 2)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"radius_v": 0.0}, "radius_v must be a finite number > 0 V, got 0.0"),
        ({"per_point": -1}, "per_point must be >= 0, got -1"),
        ({"ranges_v": np.zeros((3, 2))}, r"centres must be \(n, electrodes\) and ranges \(electrodes, 2\)"),
    ],
)
def test_local_plan_bad_inputs(kwargs, message):
    args = {"centres_v": np.zeros((1, 2)), "ranges_v": np.array([[-1.0, 1.0]] * 2), "per_point": 2, "radius_v": 0.1, "seed": 0}
    with pytest.raises(ConfigError, match=message):
        local_plan(**{**args, **kwargs})


# ------------------------------------------------------------------------------------------- fine_tune


def test_fine_tune_learns_a_local_bump_and_leaves_the_rest_and_the_original_alone():
    model = load_default_surrogate()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ranges = model.info.ranges_array()
    centre = ranges.mean(axis=1)

    def device(v: np.ndarray) -> np.ndarray:  # the surrogate plus a 15 nA Gaussian bump of width 0.2 V at the centre
        with torch.no_grad():
            base = model(torch.as_tensor(v, dtype=torch.float32)).double().numpy()
        return base + 15.0 * np.exp(-np.sum((v - centre) ** 2, axis=1) / (2 * 0.2**2))

    plan = local_plan(centre[None], ranges, per_point=400, radius_v=0.15, seed=0)
    refined = fine_tune(model, plan, device(plan), epochs=300, learning_rate=2e-3, anchor_points=2048, seed=0)
    assert refined.n_train + refined.n_held_out == len(plan) and refined.n_held_out == 80
    # on measured points it did not train on, the error falls to a fraction of the bump's RMS
    assert refined.held_out_rmse_before_na > 5.0
    assert refined.held_out_rmse_after_na < 0.4 * refined.held_out_rmse_before_na
    far = np.random.default_rng(1).uniform(ranges[:, 0], ranges[:, 1], size=(500, len(ranges)))
    far = far[np.sum((far - centre) ** 2, axis=1) > 0.9**2]  # where the bump is below 1e-3 nA
    with torch.no_grad():
        drift = refined.model(torch.as_tensor(far, dtype=torch.float32)) - model(torch.as_tensor(far, dtype=torch.float32))
    assert float(drift.pow(2).mean().sqrt()) < 1.5 and refined.anchor_drift_na < 1.5  # far away it stays the original
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # the original is untouched
    assert not any(p.requires_grad for p in refined.model.parameters())
    once, again = (fine_tune(model, plan, device(plan), epochs=3, anchor_points=64, seed=0) for _ in range(2))
    assert once.held_out_rmse_after_na == again.held_out_rmse_after_na  # deterministic


def test_fine_tune_bad_inputs():
    model = load_default_surrogate()
    v = np.zeros((10, 7))
    with pytest.raises(ConfigError, match=r"voltages must be \(n, 7\) and currents \(n,\); got \(10, 6\) and \(10,\)"):
        fine_tune(model, np.zeros((10, 6)), np.zeros(10))
    with pytest.raises(ConfigError, match="must be finite"):
        fine_tune(model, v, np.full(10, np.nan))
    with pytest.raises(ConfigError, match="epochs >= 1"):
        fine_tune(model, v, np.zeros(10), epochs=0)


# ------------------------------------------------------------------------------------- gates: configs


def gates_config(validation=None, **task) -> RunConfig:
    spec = {"type": "gates", "gates": ["AND"], "attempts": 2, "gd": {"epochs": 40}, **task}
    return validate_config(RunConfig, {"task": spec, "validation": validation or {"device": ANALYTIC}})


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"refine": {"rounds": 1}, "algorithm": "ga"}, "refine re-trains on the refined surrogate by gradient descent"),
        ({"noise_na": 0.0}, "field 'task.gates.noise_na'"),
        ({"margin": -1.0}, "field 'task.gates.margin'"),
        ({"refine": {"radius_v": 0}}, "field 'task.gates.refine.radius_v'"),
        ({"refine": {"roundz": 1}}, "unknown key 'task.gates.refine.roundz'"),
    ],
)
def test_bad_gates_configs_name_the_field(task, message):
    with pytest.raises(ConfigError, match=message):
        gates_config(**task)


def test_refinement_needs_a_device(tmp_path):
    config = gates_config(validation={"enabled": False}, refine={"rounds": 1})
    with pytest.raises(ConfigError, match="task.refine measures the device around the solutions: set validation.enabled: true"):
        run_task(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


# ------------------------------------------------------------------------------ gates: noise margin + refinement


def test_gates_with_noise_margin_and_refinement(tmp_path):
    refine = {"rounds": 2, "points_per_operating_point": 3, "fine_tune_epochs": 20, "retrain_epochs": 10, "anchor_points": 256}
    config = gates_config(
        validation={"device": ANALYTIC, "plateau_samples": 1, "ramp_samples": 0},
        gates=["AND", "XOR"], loss="noise_margin", noise_na=1.5, margin=6.0, refine=refine,
    )  # fmt: skip
    outcome = run_task(config, tmp_path / "run", progress=False)
    metrics = outcome.metrics
    assert metrics["loss"] == "noise_margin" and metrics["noise_na"] == 1.5 and metrics["noise_source"] == "config"
    rounds = metrics["refinement"]
    assert [r["round"] for r in rounds] == [1, 2]
    assert [r["device_points"] for r in rounds] == [2 * 4 * 4] * 2  # 2 gates x 4 inputs x (1 + 3) points
    assert rounds[1]["n_train"] + rounds[1]["n_held_out"] == 2 * 2 * 4 * 4  # every point measured so far
    device = DeviceProcessor(AnalyticDevice(), plateau_samples=1, ramp_samples=0)  # as validated: noise-free, no ramps
    ranges = load_default_surrogate().info.ranges_array()
    for r in (1, 2):
        with np.load(tmp_path / "run" / "refinement" / f"round_{r}.npz") as saved:
            plan, current = saved["voltages_v"], saved["current_na"]
        # the saved currents are the device's own at the saved voltages (noise-free analytic device)
        with torch.no_grad():
            np.testing.assert_allclose(current, device(torch.as_tensor(plan, dtype=torch.float32)).double(), rtol=1e-5, atol=1e-4)
        # the first 8 points are the operating points: per gate, the four input pairs on e3, e4 (0 -> low, 1 ->
        # high end of each range) with one set of controls on the other electrodes
        for k in range(2):
            rows = plan[4 * k : 4 * k + 4]
            inputs = ranges[[3, 4], 0] + np.array(GATE_INPUTS) * (ranges[[3, 4], 1] - ranges[[3, 4], 0])
            np.testing.assert_allclose(rows[:, [3, 4]], inputs, atol=1e-6)
            controls = rows[:, [0, 1, 2, 5, 6]]
            np.testing.assert_allclose(controls, np.repeat(controls[:1], 4, axis=0), atol=1e-7)
    # the last refined surrogate is saved beside the measurements and gives the surrogate outputs reported
    refined = load_surrogate(tmp_path / "run" / "refinement" / "surrogate")
    assert refined.metadata["refinement"] == json.loads(json.dumps(rounds))
    x = torch.tensor(GATE_INPUTS, dtype=torch.float32)
    for gate in ("AND", "XOR"):
        controls = outcome.controls[gate]
        volts = np.zeros((4, 7))
        volts[:, [3, 4]] = ranges[[3, 4], 0] + x.numpy() * (ranges[[3, 4], 1] - ranges[[3, 4], 0])
        for name, value in controls.items():
            volts[:, int(name[1:])] = value
        np.testing.assert_allclose(refined.predict(volts), metrics["gates"][gate]["surrogate_output_na"], atol=2e-3)
    for entry in metrics["gates"].values():
        assert entry["device_separation_over_noise"] == pytest.approx(entry["device_separation_na"] / 1.5)
        assert set(rounds[1]["surrogate_separation_na"]) == {"AND", "XOR"}


class _NoMeasurement:
    def __call__(self, voltages):  # noqa: ANN001
        raise AssertionError("measured again although the saved plan matches")


def test_saved_refinement_measurements_are_reused_only_for_the_same_plan(tmp_path):
    plan = np.random.default_rng(0).uniform(-1.0, 0.5, size=(5, 7))
    device = DeviceProcessor(AnalyticDevice(), plateau_samples=1, ramp_samples=0)
    path = tmp_path / "refinement" / "round_1.npz"
    first = measure_plan(device, plan, path, (0, 0), progress=False)
    np.testing.assert_allclose(first, AnalyticDevice().measure(plan), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(measure_plan(_NoMeasurement(), plan, path, (0, 0), progress=False), first)  # read back
    other = plan + 0.01
    np.testing.assert_allclose(
        measure_plan(device, other, path, (0, 0), False), AnalyticDevice().measure(other), rtol=1e-5, atol=1e-4
    )
    path.write_bytes(b"not an npz file")
    np.testing.assert_allclose(measure_plan(device, plan, path, (0, 0), False), first, rtol=1e-6)  # corrupt: measured anew


# ------------------------------------------------------------------------------ re-training in a trust region


def test_retraining_stays_in_the_trust_region():
    from inmaterio.processors import SurrogateProcessor
    from inmaterio.tasks.fitting import fit_binary_nodes
    from inmaterio.tasks.gates import gate_data

    surrogate = SurrogateProcessor(load_default_surrogate())
    x, y = gate_data("XOR")
    start = torch.tensor([[-0.2, -0.6, -0.4, -0.6, -0.4]])
    common = {
        "input_electrodes": ("e4", "e5"),
        "data_range": (0.0, 1.0),
        "loss": "corrsig",
        "gd": GDConfig(epochs=60, learning_rate=0.05),
    }
    free = fit_binary_nodes(surrogate, x, y, initial_controls=start, **common)
    boxed = fit_binary_nodes(surrogate, x, y, initial_controls=start, trust_radius_v=0.02, **common)
    assert float((free.controls - start).abs().max()) > 0.1  # unconstrained, it moves far
    assert float((boxed.controls - start).abs().max()) <= 0.02 + 1e-6
    with pytest.raises(ConfigError, match="trust_radius_v needs initial_controls and a finite radius > 0 V, got 0.02"):
        fit_binary_nodes(surrogate, x, y, trust_radius_v=0.02, **common)
    with pytest.raises(ConfigError, match=r"initial_controls must be \(problems, controls\) = \(1, 5\), got \(1, 4\)"):
        fit_binary_nodes(surrogate, x, y, initial_controls=start[:, :4], **common)


def test_refinement_carries_candidates_and_keeps_the_widest(tmp_path):
    refine = {"rounds": 1, "candidates": 3, "points_per_operating_point": 1, "fine_tune_epochs": 5, "retrain_epochs": 5,
              "anchor_points": 64}  # fmt: skip
    config = gates_config(validation={"device": ANALYTIC, "plateau_samples": 1, "ramp_samples": 0}, refine=refine)
    outcome = run_task(config, tmp_path / "run", progress=False)
    with np.load(tmp_path / "run" / "refinement" / "round_1.npz") as saved:
        plan = saved["voltages_v"]
    assert len(plan) == 3 * 4 * 2  # 3 candidates of the one gate, 4 operating points each, plus 1 neighbour each
    chosen = np.array(list(outcome.controls["AND"].values()))
    candidates = plan[[0, 4, 8]][:, [0, 1, 2, 5, 6]]  # each candidate's controls before re-training
    assert len({tuple(c) for c in candidates.round(6)}) == 3  # three different solutions were carried
    # the kept one is a re-trained candidate: within the trust region of one of them
    assert min(float(np.abs(chosen - c).max()) for c in candidates) <= 0.05 + 1e-5
    entry = outcome.metrics["gates"]["AND"]
    assert entry["surrogate_separation_na"] == pytest.approx(outcome.metrics["refinement"][0]["surrogate_separation_na"]["AND"])
