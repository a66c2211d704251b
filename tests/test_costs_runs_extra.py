"""Costs of the deep resistive network (drn_mnist), the EP MNIST circuit (ep_mnist) and the CNN on PCM tiles.

Independent truths: Tellegen's theorem at a steady state (the sources deliver what the conductances dissipate),
a brute-force sum of ``G dV^2``, energy = power x settling time with the time constants counted by hand, and the
CNN's multiply-accumulates and output positions counted by hand from its layer shapes. Then ``inmaterio cost``
on tiny real run folders of each kind, made here by running the studies.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from inmaterio.circuits.drn import DeepResistiveNetwork, SolveSettings
from inmaterio.circuits.solve.layered import LayeredNetwork, diode_boxes, solve_layered
from inmaterio.cli import app
from inmaterio.costs.circuits import (
    SettlingAssumption,
    drn_circuit_cost,
    drn_delivered_power_w,
    drn_power_by_layer_w,
)
from inmaterio.costs.run_costs import DRN_FULL_SCALE_V, DRN_MAX_CONDUCTANCE_S, MNIST_COST_SAMPLES, cnn_layers
from inmaterio.tasks.registry import parse_run_config
from inmaterio.tasks.run import run_task
from test_studies_mnist import write_synthetic_mnist

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _brute_force_power(inputs_v: torch.Tensor, net: LayeredNetwork, voltages_v) -> torch.Tensor:
    """``(batch,)`` sum over every conductance of ``G (v_a - v_b)^2``, one (batch, n_k, n_k-1) tensor per layer."""
    total, prev = 0.0, inputs_v
    for w, v in zip(net.weights_s, voltages_v):
        total = total + (w * (v[:, :, None] - prev[:, None, :]).square()).sum((1, 2))
        prev = v
    return total


def _small_drn(seed: int = 3) -> DeepResistiveNetwork:
    model = DeepResistiveNetwork((6, 7, 5, 4), input_gain=2.0, seed=seed, dtype=torch.float64)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for w, b in zip(model.weights, model.biases):  # every conductance > 0 (the nudging needs |beta| below them)
            w.copy_(0.05 + 0.5 * torch.rand(w.shape, generator=gen, dtype=torch.float64))
            b.copy_(0.3 * torch.randn(b.shape, generator=gen, dtype=torch.float64))  # sources that deliver and absorb
    return model


def test_tellegen_holds_at_the_drn_steady_state_and_not_before():
    model = _small_drn()
    x = torch.rand(8, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    net, u = model.network(), model.inputs_v(x)
    state = model.solve(x, SolveSettings(tol_v=1e-13))
    dissipated = drn_power_by_layer_w(net, u, state.voltages_v).sum(1)
    assert torch.allclose(dissipated, _brute_force_power(u, net, state.voltages_v), rtol=1e-12, atol=0)
    clamped = sum(int(((v <= lo) | (v >= hi)).sum()) for v, (lo, hi) in zip(state.voltages_v, model.boxes()))
    assert clamped > 0  # some diodes conduct
    delivered = drn_delivered_power_w(net, u, state.voltages_v)
    assert torch.allclose(delivered, dissipated, rtol=1e-9, atol=0)
    # two sweeps from 0 V are not a steady state: KCL fails at free nodes and so does the balance
    early = solve_layered(u, net, tol_v=0.0, max_sweeps=2, check=False)
    gap = (drn_delivered_power_w(net, u, early.voltages_v) - drn_power_by_layer_w(net, u, early.voltages_v).sum(1)).abs()
    assert float((gap / dissipated).max()) > 1e-4


def test_tellegen_counts_the_sources_the_diodes_clamp_to():
    """Boxes at -0.3 V and 0.2 V: the clamping sources deliver power (zero for the DRN's 0 V boxes)."""
    gen = torch.Generator().manual_seed(1)
    weights = [torch.rand(5, 4, generator=gen, dtype=torch.float64), torch.rand(3, 5, generator=gen, dtype=torch.float64)]
    biases = [0.2 * torch.randn(5, generator=gen, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)]
    boxes = [diode_boxes(5, "both", lower_v=-0.3, upper_v=0.2), None]
    net = LayeredNetwork(weights, biases, boxes)
    u = 2 * torch.rand(16, 4, generator=gen, dtype=torch.float64) - 1
    state = solve_layered(u, net, tol_v=1e-14, max_sweeps=100_000)
    hidden = state.voltages_v[0]
    assert bool(((hidden == -0.3) | (hidden == 0.2)).any())
    dissipated = _brute_force_power(u, net, state.voltages_v)
    delivered = drn_delivered_power_w(net, u, state.voltages_v)
    assert torch.allclose(delivered, dissipated, rtol=1e-9, atol=0)
    no_clamps = LayeredNetwork(
        weights, biases, [(torch.full((5,), -1e9), torch.full((5,), 1e9)), None]
    )  # the same nodes, no bound
    without = drn_delivered_power_w(no_clamps, u, state.voltages_v)
    assert float(((without - dissipated).abs() / dissipated).max()) > 1e-3  # the clamping sources' share is not negligible


def test_drn_energy_is_power_times_settling_time_in_physical_units():
    model = _small_drn(seed=5)
    gen = torch.Generator().manual_seed(2)
    x, labels = torch.rand(6, 6, generator=gen, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0, 1])
    unit_s, unit_v, beta = 2e-6, 0.01, 0.1
    settling = SettlingAssumption(node_capacitance_f=50e-15, time_constants=5.0)
    cost = drn_circuit_cost(model, x, labels, beta=beta, variant="symmetric", conductance_unit_s=unit_s, volt_unit_v=unit_v,
                            settling=settling, tol_v=1e-13)  # fmt: skip
    net, u = model.network(), model.inputs_v(x)
    free = solve_layered(u, net, tol_v=1e-13, max_sweeps=100_000)
    p_free = unit_s * unit_v**2 * float(_brute_force_power(u, net, free.voltages_v).mean())
    assert cost.power_w == pytest.approx(p_free, rel=1e-9) and cost.delivered_w == pytest.approx(p_free, rel=1e-9)
    w1, w2, w3 = (w.detach() for w in model.weights)
    node_s = torch.cat([w1.sum(1) + w2.sum(0), w2.sum(1) + w3.sum(0), w3.sum(1)])  # each free node's conductances
    t_s = 5.0 * 50e-15 / (unit_s * float(node_s.min()))
    assert cost.settling_s == pytest.approx(t_s, rel=1e-12)
    assert cost.inference_j == pytest.approx(cost.power_w * cost.settling_s, rel=1e-12)
    y = torch.nn.functional.one_hot(labels, 4).double()
    nudged = [solve_layered(u, net, beta=s * beta, target=y, tol_v=1e-13, max_sweeps=100_000) for s in (1, -1)]
    p_nudged = [unit_s * unit_v**2 * float(_brute_force_power(u, net, n.voltages_v).mean()) for n in nudged]
    assert cost.phases == 3 and cost.training_step_j == pytest.approx((p_free + sum(p_nudged)) * t_s, rel=1e-8)
    assert cost.ops == 2 * (12 * 7 + 7 * 5 + 5 * 4) and cost.part_ops == {"W1": 168, "W2": 70, "W3": 40}
    assert sum(cost.parts_w.values()) == pytest.approx(cost.power_w, rel=1e-12)
    one_sided = drn_circuit_cost(model, x, None, variant="positive", conductance_unit_s=unit_s, volt_unit_v=unit_v)
    assert one_sided.phases == 2 and one_sided.training_step_j == pytest.approx(2 * one_sided.inference_j)
    # power ~ conductance x voltage^2 (x 2 x 4), settling time ~ 1 / conductance
    scaled = drn_circuit_cost(model, x, conductance_unit_s=2 * unit_s, volt_unit_v=2 * unit_v, settling=settling)
    assert scaled.power_w == pytest.approx(8 * cost.power_w, rel=1e-8) and scaled.settling_s == pytest.approx(t_s / 2)


def test_cnn_layers_count_positions_and_macs_by_hand():
    def hand(side: int, k: int, c1: int, c2: int) -> tuple[list[int], int]:
        # stride 1, no padding: a k x k convolution leaves side - k + 1 pixels a side; 2x2 max pooling halves (floor)
        s1 = side - k + 1
        s2 = s1 // 2 - k + 1
        s3 = s2 // 2
        positions = [s1 * s1, s2 * s2, 1]
        macs = s1 * s1 * (k * k * 1) * c1 + s2 * s2 * (k * k * c1) * c2 + (c2 * s3 * s3) * 10
        return positions, macs

    for k, (c1, c2) in ((5, (8, 16)), (3, (4, 8))):
        layers = cnn_layers({"kind": "cnn", "channels": [c1, c2], "kernel_size": k})
        positions, macs = hand(28, k, c1, c2)
        assert [layer.positions for layer in layers] == positions
        assert [layer.kind for layer in layers] == ["conv", "conv", "dense"]
        assert sum(layer.macs for layer in layers) == macs
    assert hand(28, 5, 8, 16) == ([576, 64, 1], 576 * 25 * 8 + 64 * 200 * 16 + 256 * 10)  # 322,560 MACs per image


# ------------------------------------------------------------------------------- inmaterio cost on tiny real runs


@pytest.fixture(scope="module")
def mnist(tmp_path_factory) -> Path:
    return write_synthetic_mnist(tmp_path_factory.mktemp("data") / "mnist", n_train=100, n_test=MNIST_COST_SAMPLES + 6)


@pytest.fixture(autouse=True)
def _no_mnist_env(monkeypatch):
    monkeypatch.delenv("INMATERIO_MNIST_DIR", raising=False)  # the runs' config.yaml name the data


def _cost(folder: Path) -> dict:
    result = runner.invoke(app, ["cost", str(folder)])
    assert result.exit_code == 0, result.output
    assert (folder / "costs.md").read_text().startswith("# ")
    return json.loads((folder / "costs.json").read_text())


def _without_checkpoints(folder: Path, dest: Path) -> Path:
    """A copy as results/ stores runs: no checkpoints, no lock files, no cost files."""
    shutil.copytree(folder, dest, ignore=shutil.ignore_patterns("checkpoint.pt", ".lock", "costs.*"))
    return dest


def test_cost_of_a_tiny_drn_mnist_run(tmp_path, mnist):
    config = {"task": {"type": "drn_mnist", "hidden": [8], "seeds": 1, "algorithms": ["ep"], "train_size": 40,
                       "training": {"epochs": 1, "batch_size": 10, "beta": 0.2}}, "data": {"dir": str(mnist)}}  # fmt: skip
    run = tmp_path / "drn"
    metrics = run_task(parse_run_config(config), run, progress=False).metrics
    data = _cost(run)
    lines, total = data["lines"], data["total"]
    assert [line["name"] for line in lines] == ["W1 1568x8 (crossbar)", "W2 8x10 (crossbar)"]
    assert [line["ops"] for line in lines] == [2 * 1568 * 8, 2 * 8 * 10]
    assert data["digital_baseline"]["ops"] == total["ops"]  # the same layers as dense int8 layers
    assert total["energy_j"] == pytest.approx(sum(line["energy_j"] for line in lines))
    assert total["latency_s"] == lines[0]["latency_s"] > 0
    assert data["training_step"]["name"] == "training step (3 phases)"
    assert data["accuracy_percent"] == pytest.approx(100 - metrics["summary"][0]["test_error_percent_mean"])
    assert "the trained conductances of ep/seed_0/checkpoint.pt" in data["notes"][0]
    trained = torch.load(run / "ep" / "seed_0" / "checkpoint.pt", weights_only=True)["state"]["model"]
    g_max = max(float(trained["weights.0"].max()), float(trained["weights.1"].max()))
    assert data["assumptions"]["drn.conductance_unit_s"] == pytest.approx(DRN_MAX_CONDUCTANCE_S / g_max)
    assert data["assumptions"]["drn.volt_unit_v"] == pytest.approx(DRN_FULL_SCALE_V / 100.0)
    assert f"first {MNIST_COST_SAMPLES} MNIST test images" in data["assumptions"]["samples"]
    tellegen = next(n for n in data["notes"] if "Tellegen" in n)
    assert tellegen.split("deliver ")[1].split(" W")[0] == tellegen.split("dissipate ")[1].split(" W")[0]

    stored = _cost(_without_checkpoints(run, tmp_path / "stored"))
    assert "seed 0's initial conductances" in stored["notes"][0] and "holds no checkpoint" in stored["notes"][0]
    initial = DeepResistiveNetwork((784, 8, 10), 100.0, seed=0)
    g0 = max(float(w.detach().max()) for w in initial.weights)
    assert stored["assumptions"]["drn.conductance_unit_s"] == pytest.approx(DRN_MAX_CONDUCTANCE_S / g0)

    (stored_cfg := tmp_path / "stored" / "config.yaml").write_text(
        stored_cfg.read_text().replace(str(mnist), str(tmp_path / "gone"))
    )
    (tmp_path / "stored" / "costs.json").unlink()
    result = runner.invoke(app, ["cost", str(tmp_path / "stored")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "costing it needs the MNIST test images" in " ".join(result.output.split())
    assert not (tmp_path / "stored" / "costs.json").exists()


def test_cost_of_a_tiny_ep_mnist_run(tmp_path, mnist):
    config = {"task": {"type": "ep_mnist", "hidden": 6, "train_size": 40, "training": {"epochs": 1, "batch_size": 20}},
              "data": {"dir": str(mnist), "n_validation": 20}}  # fmt: skip
    run = tmp_path / "ep"
    metrics = run_task(parse_run_config(config), run, progress=False).metrics
    data = _cost(run)
    lines = data["lines"]
    assert [line["name"] for line in lines] == ["hidden (crossbar)", "outputs (crossbar)", "diodes"]
    assert [line["ops"] for line in lines] == [2 * (2 * 784 + 2) * 6, 2 * (6 + 2) * 10, 0]
    assert data["digital_baseline"]["ops"] == data["total"]["ops"]
    assert data["accuracy_percent"] == pytest.approx(100 * metrics["test_accuracy"])
    assert data["training_step"]["energy_j"] == pytest.approx(3 * data["total"]["energy_j"], rel=1e-9)
    assert "trained conductances of training/checkpoint.pt" in data["notes"][0]
    stored = _cost(_without_checkpoints(run, tmp_path / "stored"))
    assert "seed 0's initial conductances" in stored["notes"][0]
    assert stored["total"]["energy_j"] != data["total"]["energy_j"]


def test_cost_of_a_tiny_cnn_crossbar_run(tmp_path, mnist):
    from inmaterio.costs.neurosim import MACRO_PRESETS, macro_cost

    model = {"kind": "cnn", "channels": [4, 8], "kernel_size": 3, "settings": {"batch_size": 20}}
    config = {"task": {"type": "crossbar_inference", "model": model, "epochs": 1, "seeds": 1, "trainings": ["plain"],
                       "inference": {"noises": ["spoon2021"], "times_s": [1], "repeats": 1}},
              "data": {"dir": str(mnist), "n_validation": 20}}  # fmt: skip
    run = tmp_path / "cnn"
    run_task(parse_run_config(config), run, progress=False)
    data = _cost(run)
    lines = data["lines"]
    assert [line["name"] for line in lines] == ["conv1 3x3 1->4, 26x26 positions", "conv2 3x3 4->8, 11x11 positions",
                                                "dense1 200x10"]  # fmt: skip
    # hand count: 26x26 positions of a 3x3x1 kernel, 4 filters; 11x11 positions of 3x3x4, 8 filters; 8*5*5 -> 10
    macs = [26 * 26 * 9 * 4, 11 * 11 * 36 * 8, 200 * 10]
    assert [line["ops"] for line in lines] == [2 * m for m in macs]
    assert data["digital_baseline"]["ops"] == 2 * sum(macs)
    mvm = macro_cost(MACRO_PRESETS["pcm_analog"].model_copy(update={"input_bits": 7, "adc": MACRO_PRESETS["pcm_analog"].adc.model_copy(update={"bits": 9})}))  # fmt: skip
    # one mat-vec per output position, one after another; subarrays of 128 x 128 cells, two cells per weight
    for line, positions, subarrays in zip(lines, (26 * 26, 11 * 11, 1), (1, 1, 2)):  # 9x8, 36x16, 200x20 cells
        assert line["latency_s"] == pytest.approx(positions * mvm.latency_s, rel=1e-12)
        assert line["energy_j"] == pytest.approx(subarrays * positions * mvm.energy_j, rel=1e-12)
    assert data["assumptions"]["cnn.image"].startswith("28 x 28")


def test_unsupported_kinds_and_models_are_one_line_errors(tmp_path):
    folder = tmp_path / "we"
    shutil.copytree(ROOT / "results" / "weight_extraction", folder, ignore=shutil.ignore_patterns("*.png", "costs.*"))
    result = runner.invoke(app, ["cost", str(folder)])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "kind 'inmaterio.task.weight_extraction'" in text and "Traceback" not in text
    assert "inmaterio.task.drn_mnist" in text and "inmaterio.task.ep_mnist" in text  # the supported kinds are listed
    assert not (folder / "costs.json").exists()
    odd = tmp_path / "odd"
    odd.mkdir()
    record = {"format": "inmaterio.run", "format_version": 1, "kind": "inmaterio.task.crossbar_inference", "state": "finished",
              "identity": {"config": {"task": {"type": "crossbar_inference", "model": {"kind": "transformer"}}}}}  # fmt: skip
    (odd / "run.json").write_text(json.dumps(record))
    (odd / "metrics.json").write_text(json.dumps({"periphery": {"dac_bits": 7, "adc_bits": 9}}))
    result = runner.invoke(app, ["cost", str(odd)])
    assert result.exit_code == 2 and "'mlp', 'cnn' and 'dnpu_mnist'" in " ".join(result.output.split())
