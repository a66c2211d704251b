"""Task-aware refinement of the rings' surrogate: measured where the network's nodes operate, re-trained in a box.

Truths: the operating points fed to the back end reproduce the network's output; the refinement
plan's centres are operating points of the trained network; the saved currents are the device's
own at the saved voltages; the re-trained controls stay within ``radius_v`` of the trained ones;
the numbers reported on the surrogate are the refined surrogate's (the saved network on it gives
the recorded Fisher criterion).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from inmaterio.config import validate_config
from inmaterio.data.rings import make_rings
from inmaterio.devices.analytic import AnalyticDevice
from inmaterio.errors import ConfigError, RunInterrupted
from inmaterio.nn import dnpu_layers
from inmaterio.processors import DeviceProcessor, SurrogateProcessor
from inmaterio.surrogate import load_default_surrogate, load_surrogate
from inmaterio.tasks import RunConfig, run_task
from inmaterio.tasks.config import RefinementConfig
from inmaterio.tasks.rings import build_ring_model, operating_points
from inmaterio.training.losses import fisher

VALIDATION = {"device": {"type": "analytic"}, "plateau_samples": 1, "ramp_samples": 0}
REFINE = {"rounds": 2, "points_per_operating_point": 1, "radius_v": 0.05, "fine_tune_epochs": 20, "retrain_epochs": 8,
          "anchor_points": 256, "max_operating_points": 40}  # fmt: skip


def rings_config(refine=None, validation=None, architecture="2-2-1") -> RunConfig:
    task = {"type": "rings", "architecture": architecture, "n_train": 30, "n_test": 20, "attempts": 1, "gd": {"epochs": 12}}
    if refine is not None:
        task["refine"] = refine
    return validate_config(RunConfig, {"task": task, "validation": validation or VALIDATION})


def test_operating_points_are_what_each_node_is_given():
    processor = SurrogateProcessor(load_default_surrogate())
    x = torch.rand(6, 2) * 2 - 1
    single = build_ring_model("single", processor, (3, 4), seed=1).eval()
    torch.testing.assert_close(
        operating_points(single, x), dnpu_layers(single)[0].voltages(x).detach().reshape(-1, 7), rtol=0, atol=0
    )
    network = build_ring_model("2-2-1", processor, (1, 6), seed=1).eval()
    points = operating_points(network, x)
    assert points.shape == (6 * (2 + 2 + 1), 7)
    with torch.no_grad():  # the last node's operating points give the network's output (no layer after it)
        torch.testing.assert_close(processor(points[-6:]), network(x))
    with pytest.raises(ConfigError, match="Linear has no DNPU layer, so no operating points"):
        operating_points(torch.nn.Linear(2, 1), x)


def test_refined_rings_network(tmp_path):
    plain = run_task(rings_config(), tmp_path / "plain", progress=False)
    refined = run_task(rings_config(REFINE), tmp_path / "refined", progress=False)
    rounds = refined.metrics["refinement"]
    assert [r["round"] for r in rounds] == [1, 2] and [r["device_points"] for r in rounds] == [40 * 2] * 2
    assert rounds[1]["n_train"] + rounds[1]["n_held_out"] == 2 * 40 * 2  # every point measured so far
    assert "refinement" not in plain.metrics

    # the same seed trains the same network first: round 1's centres are its operating points on the training set
    surrogate = SurrogateProcessor(load_default_surrogate())
    trained = build_ring_model("2-2-1", surrogate, (3, 4), seed=0)
    trained.load_state_dict(load_file(tmp_path / "plain" / "model.safetensors"))
    trained.eval()
    x_train, y_train = make_rings(30, gap=0.1, seed=0)
    centres = operating_points(trained, x_train).double().numpy()
    device = DeviceProcessor(AnalyticDevice(), plateau_samples=1, ramp_samples=0)
    for r in (1, 2):
        with np.load(tmp_path / "refined" / "refinement" / f"round_{r}.npz") as saved:
            plan, current = saved["voltages_v"], saved["current_na"]
        with torch.no_grad():
            np.testing.assert_allclose(current, device(torch.as_tensor(plan, dtype=torch.float32)).double(), rtol=1e-5, atol=1e-4)
        if r == 1:
            distance = np.abs(plan[:40, None, :] - centres[None]).max(axis=2).min(axis=1)
            assert distance.max() < 1e-6  # each centre is one of the trained network's operating points
            assert np.abs(plan[40:] - plan[:40]).max() <= 0.05 + 1e-9  # one neighbour each, in the box

    # the re-trained controls stay within radius_v of the trained ones
    before = json.loads((tmp_path / "plain" / "controls.json").read_text())
    after = json.loads((tmp_path / "refined" / "controls.json").read_text())
    for layer in ("layer0", "layer1", "layer2"):
        for node_before, node_after in zip(before[layer], after[layer]):
            assert max(abs(node_after[k] - node_before[k]) for k in node_before) <= 0.05 + 1e-6

    # the surrogate numbers are the refined surrogate's: the saved network on it gives the recorded Fisher criterion
    on_refined = build_ring_model("2-2-1", SurrogateProcessor(load_surrogate(tmp_path / "refined" / "refinement" / "surrogate")), (3, 4), seed=0)  # fmt: skip
    on_refined.load_state_dict(load_file(tmp_path / "refined" / "model.safetensors"))
    on_refined.eval()
    with torch.no_grad():
        assert float(-fisher(on_refined(x_train), y_train)) == pytest.approx(refined.metrics["fisher_train"], rel=1e-4)
    assert 0.0 <= refined.metrics["device_accuracy"] <= 1.0


def test_an_interrupted_refinement_resumes_to_the_same_numbers_without_measuring_again(tmp_path, monkeypatch):
    import inmaterio.tasks.refinement as refine

    config = rings_config(REFINE, architecture="single")
    reference = run_task(config, tmp_path / "reference", progress=False).metrics
    real, calls = refine.fine_tune, []

    def stop_in_round_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(refine, "fine_tune", stop_in_round_two)
    with pytest.raises(RunInterrupted, match="run the same command again to resume"):
        run_task(config, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "refinement" / "round_2.npz").is_file()
    measured = []
    original = AnalyticDevice.measure
    monkeypatch.setattr(AnalyticDevice, "measure", lambda self, v: measured.append(len(v)) or original(self, v))
    resumed = run_task(config, tmp_path / "run", progress=False).metrics
    assert resumed["refinement"] == reference["refinement"]
    for key in ("fisher_train", "surrogate_test_accuracy", "device_accuracy", "threshold_na"):
        assert resumed[key] == reference[key], key
    assert measured == [2 * 20]  # the validation only (one node, 2 x 20 test points): the refinement was read back


@pytest.mark.parametrize(
    ("refine", "validation", "message"),
    [
        ({"candidates": 2}, None, "refine.candidates: the ring task refines its one trained network; give 1, got 2"),
        ({"max_operating_points": 0}, None, "task.rings.refine.max_operating_points"),
        ({"rounds": 1}, {"enabled": False}, "task.refine measures the device"),
    ],
)
def test_bad_refinement_configs_name_the_field(tmp_path, refine, validation, message):
    with pytest.raises(ConfigError, match=message):
        run_task(rings_config(refine, validation), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_configs_without_refinement_keep_their_identity():
    assert "refine" not in rings_config().task.model_dump()
    assert "max_operating_points" not in RefinementConfig().model_dump()
    assert RefinementConfig(max_operating_points=5).model_dump()["max_operating_points"] == 5


def test_the_example_refines_the_network_of_rings_221():
    from pathlib import Path

    from inmaterio.tasks.registry import load_run_config

    examples = Path(__file__).resolve().parents[1] / "examples"
    refined, plain = load_run_config(examples / "rings_refine.yaml"), load_run_config(examples / "rings_221.yaml")
    assert refined.task.refine is not None and refined.task.refine.max_operating_points == 1000
    assert refined.task.model_copy(update={"refine": None}) == plain.task
    assert refined.surrogate == plain.surrogate and refined.validation == plain.validation and refined.seed == plain.seed
