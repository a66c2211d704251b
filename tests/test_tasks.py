"""Tasks (gates, rings, capacity), their fitting, validation, results folder and config errors.

Independent truths: truth tables from Python's own bit operators; labellings
from the binary digits of their index; a solution counts as a gate only if a
single threshold puts the class-1 outputs strictly on one side (checked with
min/max by hand); surrogate outputs recomputed from control voltages and input
voltages assembled by hand; device outputs recomputed from the analytic
device's closed form ``I = A tanh(w . v + c v0 v1)``.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from inmaterio.config import load_config, validate_config
from inmaterio.devices.analytic import AnalyticDevice
from inmaterio.errors import ConfigError, RunInterrupted, TrainingDivergedError
from inmaterio.nn import DNPU
from inmaterio.processors import RANGE_TOLERANCE_V, DeviceProcessor, SurrogateProcessor
from inmaterio.surrogate import DeviceInfo, SurrogateModel, default_model_dir, load_default_surrogate, save_surrogate
from inmaterio.tasks import RunConfig, run_task
from inmaterio.tasks.capacity import labellings
from inmaterio.tasks.config import CAPACITY_POINTS
from inmaterio.tasks.fitting import fit_binary_nodes
from inmaterio.tasks.gates import GATE_INPUTS, GATES, gate_data
from inmaterio.training import losses
from inmaterio.training.ga import GAConfig
from inmaterio.training.gd import GDConfig

LOW, HIGH = -1.2, 0.6  # V, every electrode of the bundled surrogate and of AnalyticDevice()
CONTROL_NAMES = ["e0", "e1", "e2", "e5", "e6"]  # with inputs e3, e4
OPS = {
    "AND": lambda a, b: a & b,
    "OR": lambda a, b: a | b,
    "NAND": lambda a, b: 1 - (a & b),
    "NOR": lambda a, b: 1 - (a | b),
    "XOR": lambda a, b: a ^ b,
    "XNOR": lambda a, b: 1 - (a ^ b),
}
ANALYTIC = {"type": "analytic"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def surrogate():
    return SurrogateProcessor(load_default_surrogate())


def separates(out, target) -> bool:
    """True if one threshold puts every class-1 output strictly above, or strictly below, every class-0 output."""
    out, target = torch.as_tensor(out, dtype=torch.float64), torch.as_tensor(target)
    ones, zeros = out[target == 1], out[target == 0]
    return bool(ones.min() > zeros.max() or ones.max() < zeros.min())


def hand_voltages(controls: dict[str, float], inputs_v: torch.Tensor, input_names=("e3", "e4")) -> torch.Tensor:
    """``(batch, 7)`` V: the named controls, and the input voltages ``inputs_v (batch, 2)`` on ``input_names``."""
    v = torch.empty(len(inputs_v), 7, dtype=torch.float64)
    for name, value in controls.items():
        v[:, int(name[1:])] = value
    for j, name in enumerate(input_names):
        v[:, int(name[1:])] = inputs_v[:, j].double()
    return v


def analytic_current(device: AnalyticDevice, v: torch.Tensor) -> np.ndarray:
    """The analytic device's closed form, written out again: A tanh(w . v + 1.5 v0 v1), nA."""
    v = v.double().numpy()
    return device.amplitude_na * np.tanh(v @ device.weights + 1.5 * v[:, 0] * v[:, 1])


def gates_config(**task) -> RunConfig:
    spec = {"type": "gates", "gates": ["AND", "XOR"], "attempts": 2, "gd": {"epochs": 60}, **task}
    return validate_config(RunConfig, {"task": spec, "validation": {"device": ANALYTIC}})


# ------------------------------------------------------------------------------------------- gates


@pytest.mark.parametrize("gate", list(OPS))
def test_gate_truth_tables_from_python_operators(gate):
    x, y = gate_data(gate)
    assert x.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert y.tolist() == [OPS[gate](a, b) for a, b in ((0, 0), (0, 1), (1, 0), (1, 1))]
    assert x.dtype == y.dtype == torch.float32


def test_gate_table_is_complete():
    assert set(GATES) == set(OPS)
    assert GATE_INPUTS == ((0, 0), (0, 1), (1, 0), (1, 1))


@pytest.mark.parametrize("gate", ["AND", "XOR", "NOR"])
def test_gate_repeats_are_consecutive(gate):
    x, y = gate_data(gate, repeats=3)
    assert x.shape == (12, 2) and y.shape == (12,)
    for row in range(12):
        a, b = (int(v) for v in x[row])
        assert (a, b) == GATE_INPUTS[row // 3]  # each truth-table row repeated 3 times in a row
        assert int(y[row]) == OPS[gate](a, b)


def test_gate_data_errors():
    with pytest.raises(ConfigError, match="unknown gate 'IMPLY'"):
        gate_data("IMPLY")
    with pytest.raises(ConfigError, match="repeats must be >= 1, got 0"):
        gate_data("AND", repeats=0)


# ---------------------------------------------------------------------------------------- capacity


@pytest.mark.parametrize("n", [1, 2, 4, 6])
def test_labellings_binary_counting_order(n):
    labels = labellings(n)
    assert labels.shape == (2**n, n) and labels.dtype == torch.float32
    assert len({tuple(r) for r in labels.tolist()}) == 2**n
    for i, row in enumerate(labels.tolist()):
        assert row == [float((i >> (n - 1 - j)) & 1) for j in range(n)]  # row i = the bits of i, MSB first


def test_capacity_points_are_the_issues_list():
    assert CAPACITY_POINTS == (
        (-0.7, -0.7), (-0.7, 0.5), (0.5, -0.7), (0.5, 0.5), (-0.35, 0.0),
        (0.25, 0.0), (0.0, -0.35), (0.0, 0.25), (-1.1, 0.35), (0.35, -1.1),
    )  # fmt: skip
    assert all(LOW <= c <= HIGH for p in CAPACITY_POINTS for c in p)  # valid input voltages themselves


# ----------------------------------------------------------------------------------------- fitting


def test_gd_finds_and_and_xor_on_the_surrogate(surrogate):
    x, _ = gate_data("AND")
    targets = torch.stack([gate_data("AND")[1], gate_data("XOR")[1]])
    fits = fit_binary_nodes(
        surrogate, x, targets, input_electrodes=("e3", "e4"), data_range=(0.0, 1.0), loss="corrsig",
        gd=GDConfig(learning_rate=0.02, epochs=100), attempts=2, seed=0,
    )  # fmt: skip
    assert fits.accuracy.tolist() == [1.0, 1.0]
    assert fits.controls.shape == (2, 5) and fits.output_na.shape == (2, 4)
    assert len(fits.history) == 100
    table = fits.layer.control_table()
    for k in range(2):
        assert list(table[k]) == CONTROL_NAMES
        # the output, recomputed from hand-assembled voltages (data 0 -> -1.2 V, 1 -> 0.6 V)
        v = hand_voltages(table[k], LOW + (HIGH - LOW) * x)
        by_hand = surrogate.model(v.float())
        torch.testing.assert_close(fits.output_na[k], by_hand, rtol=1e-5, atol=1e-3)
        assert separates(by_hand.detach(), targets[k])


def test_ga_finds_and_on_the_surrogate(surrogate):
    x, y = gate_data("AND")
    fits = fit_binary_nodes(
        surrogate, x, y, input_electrodes=("e3", "e4"), data_range=(0.0, 1.0), loss="corrsig",
        algorithm="ga", ga=GAConfig(population_size=12, n_elite=2, generations=40), seed=0,
    )  # fmt: skip
    assert fits.accuracy.tolist() == [1.0]
    assert len(fits.history) == 40
    assert bool((fits.controls >= LOW).all() and (fits.controls <= HIGH).all())
    v = hand_voltages(fits.layer.control_table()[0], LOW + (HIGH - LOW) * x)
    assert separates(surrogate.model(v.float()).detach(), y)


def _node_loss(layer, x, targets):
    """The objective of the node-parallel trainer: the per-node losses of ``(batch, nodes)`` outputs, summed."""
    return losses.corrsig(layer(x).T, targets).sum()


def test_node_gradient_does_not_depend_on_other_nodes_targets(surrogate):
    x, _ = gate_data("AND")
    t = {g: gate_data(g)[1] for g in GATES}
    layer = DNPU(surrogate, 3, ("e3", "e4"), (0.0, 1.0), seed=4)
    grads = []
    for others in (("OR", "XOR"), ("NAND", "NOR")):
        layer.zero_grad()
        _node_loss(layer, x, torch.stack([t["AND"], t[others[0]], t[others[1]]])).backward()
        grads.append(layer.controls.grad.clone())
    assert torch.equal(grads[0][0], grads[1][0])
    assert not torch.equal(grads[0][1], grads[1][1])  # the other nodes' targets did change
    # and it is the gradient of node 0 trained alone
    alone = DNPU(surrogate, 1, ("e3", "e4"), (0.0, 1.0))
    with torch.no_grad():
        alone.controls.copy_(layer.controls[:1])
    _node_loss(alone, x, t["AND"][None]).backward()
    torch.testing.assert_close(alone.controls.grad[0], grads[0][0], rtol=1e-5, atol=1e-7)


def test_node_parallel_gd_equals_training_alone(surrogate):
    """Like with like: node k starts from row k of the seeded draw of initial controls, so a
    problem is compared at the same node index. Each node keeps its own best epoch, so its
    result does not depend on the other problems (nor, for node 0, on their number)."""
    x, _ = gate_data("AND")
    t = {g: gate_data(g)[1] for g in GATES}
    kw = dict(
        input_electrodes=("e3", "e4"), data_range=(0.0, 1.0), loss="corrsig", gd=GDConfig(learning_rate=0.02, epochs=40), seed=3
    )

    def fit(*gates):
        return fit_binary_nodes(surrogate, x, torch.stack([t[g] for g in gates]), **kw)

    and_or, and_nand, xor_nand, and_alone = fit("AND", "OR"), fit("AND", "NAND"), fit("XOR", "NAND"), fit("AND")
    assert torch.equal(and_or.controls[0], and_nand.controls[0])
    assert torch.equal(and_nand.controls[1], xor_nand.controls[1])
    torch.testing.assert_close(and_alone.controls[0], and_or.controls[0], rtol=0, atol=1e-6)
    assert and_or.loss[0] == pytest.approx(float(and_alone.loss[0]), rel=1e-5)
    # the kept epoch is the node's own best: its loss is the minimum over the node's trajectory
    assert float(and_alone.loss[0]) <= min(h["loss"] for h in and_alone.history) + 1e-6


def test_ga_on_the_analytic_device_without_surrogate(monkeypatch):
    """Evolution in materio: every fitness is a measurement; the population is one waveform per generation.

    In the analytic device the current is A tanh(w . v + 1.5 v0 v1). With inputs on e2 and e6,
    whose weights have the same sign, the current is monotone in both inputs and AND is one
    threshold; with inputs on e0 and e1 the product term makes XOR reachable.
    """
    device = AnalyticDevice()
    assert device.weights[2] > 0 and device.weights[6] > 0
    calls = []
    measure = device.measure
    monkeypatch.setattr(device, "measure", lambda v: calls.append(len(v)) or measure(v))
    processor = DeviceProcessor(device)
    x, _ = gate_data("AND")
    generations, population = 25, 16
    for gate, inputs in (("AND", ("e2", "e6")), ("XOR", ("e0", "e1"))):
        calls.clear()
        y = gate_data(gate)[1]
        fits = fit_binary_nodes(
            processor, x, y, input_electrodes=inputs, data_range=(0.0, 1.0), loss="corrsig", algorithm="ga",
            ga=GAConfig(population_size=population, n_elite=2, generations=generations), seed=1,
        )  # fmt: skip
        assert fits.accuracy.tolist() == [1.0], gate
        # one measurement of the whole population (16 genomes x 4 inputs) per generation, then one of the winner
        assert calls == [population * 4] * generations + [4]
        v = hand_voltages(fits.layer.control_table()[0], LOW + (HIGH - LOW) * x, inputs)
        truth = analytic_current(device, v)
        np.testing.assert_allclose(fits.output_na[0].numpy(), truth, rtol=1e-5, atol=1e-4)
        assert separates(truth, y), gate


# ---------------------------------------------------------------------------------- run_task: gates


@pytest.fixture(scope="module")
def gates_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gates") / "results"
    config = gates_config()
    outcome = run_task(config, out, progress=False)
    return config, out, outcome


def test_gates_results_folder(gates_run):
    config, out, outcome = gates_run
    for name in ("config.yaml", "metrics.json", "controls.json", "learning_curve.png", "outputs_per_class.png", "solution_iv.png",
                 "history.json", "history.csv"):  # fmt: skip
        assert (out / name).is_file(), name
    rows = json.loads((out / "history.json").read_text())
    assert len({r["curve"] for r in rows}) == 1
    assert [r["step"] for r in rows] == list(range(1, 61))  # gd: {epochs: 60}
    csv_rows = (out / "history.csv").read_text().splitlines()
    assert csv_rows[0] == "curve,step,loss" and len(csv_rows) == 61
    assert float(csv_rows[-1].rsplit(",", 1)[1]) == pytest.approx(rows[-1]["loss"])
    assert json.loads((out / "run.json").read_text())["state"] == "finished"
    assert load_config(RunConfig, out / "config.yaml") == config
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == json.loads(json.dumps(outcome.metrics))
    assert {"task", "package_version", "seconds", "surrogate", "device", "gates_found_on_surrogate", "n_gates", "fit_seconds",
            "gates", "gates_found_on_device", "validation_seconds"} <= set(metrics)  # fmt: skip
    assert metrics["task"] == "gates" and metrics["n_gates"] == 2
    assert metrics["device"]["device"]["type"] == "analytic"
    per_gate = {"surrogate_accuracy", "loss", "surrogate_output_na", "device_accuracy", "device_accuracy_min",
                "device_accuracy_surrogate_threshold", "rms_difference_na", "device_output_na", "surrogate_separation_na",
                "device_separation_na", "device_separation_over_noise", "device_mean_separation_na",
                "device_mean_separation_stderr_na", "device_mean_separation_over_noise"}  # fmt: skip
    assert set(metrics["gates"]) == {"AND", "XOR"}
    # the noise unit: the bundled surrogate's model card records the RMS standard error of its test measurements
    card = json.loads((default_model_dir() / "summary.json").read_text())["test_metrics"]
    assert metrics["noise_source"] == "model card" and metrics["noise_na"] == card["noise_floor_na"]
    assert config.validation.repeats == 1  # so the worst repeat's class gap is the gap of the reported outputs
    for gate, entry in metrics["gates"].items():
        assert set(entry) == per_gate
        assert all(
            0.0 <= entry[k] <= 1.0 for k in ("surrogate_accuracy", "device_accuracy", "device_accuracy_surrogate_threshold")
        )
        # class gap by hand: nearest points of the two classes, either class on top
        for outputs, key in (
            (entry["surrogate_output_na"], "surrogate_separation_na"),
            (entry["device_output_na"], "device_separation_na"),
        ):
            ones = [y for y, t in zip(outputs, GATES[gate]) if t == 1]
            zeros = [y for y, t in zip(outputs, GATES[gate]) if t == 0]
            assert entry[key] == pytest.approx(max(min(ones) - max(zeros), min(zeros) - max(ones)), abs=1e-4)
        assert entry["device_separation_over_noise"] == pytest.approx(entry["device_separation_na"] / metrics["noise_na"])
        # one repeat: the gap of the mean is the measured gap, without a standard error
        assert entry["device_mean_separation_na"] == pytest.approx(entry["device_separation_na"])
        assert entry["device_mean_separation_stderr_na"] is None
        assert entry["device_mean_separation_over_noise"] == pytest.approx(entry["device_separation_over_noise"])
    assert metrics["min_device_separation_over_noise"] == min(
        e["device_separation_over_noise"] for e in metrics["gates"].values()
    )
    assert metrics["gates_found_on_surrogate"] == sum(e["surrogate_accuracy"] == 1.0 for e in metrics["gates"].values()) == 2
    assert metrics["gates_found_on_device"] == sum(e["device_accuracy"] == 1.0 for e in metrics["gates"].values())
    assert metrics["min_device_mean_separation_over_noise"] == min(
        e["device_mean_separation_over_noise"] for e in metrics["gates"].values()
    )
    assert [row[0] for row in outcome.rows] == ["AND", "XOR"] and len(outcome.columns) == 6
    assert outcome.columns[-1] == "gap/noise (worst, mean)"
    for row, entry in zip(outcome.rows, metrics["gates"].values()):
        assert row[-1] == f"{entry['device_separation_over_noise']:.1f}, {entry['device_mean_separation_over_noise']:.1f}"


def test_gates_gap_of_the_mean_over_noisy_repeats(tmp_path):
    spec = {"type": "gates", "gates": ["AND", "XOR"], "attempts": 2, "gd": {"epochs": 30}}
    device = {**ANALYTIC, "noise_na": 2.0}
    config = validate_config(RunConfig, {"task": spec, "validation": {"device": device, "repeats": 5}})
    metrics = run_task(config, tmp_path / "run", progress=False).metrics
    for gate, entry in metrics["gates"].items():
        outputs = entry["device_output_na"]  # the mean over the five repeats
        ones = [y for y, t in zip(outputs, GATES[gate]) if t == 1]
        zeros = [y for y, t in zip(outputs, GATES[gate]) if t == 0]
        assert entry["device_mean_separation_na"] == pytest.approx(max(min(ones) - max(zeros), min(zeros) - max(ones)), abs=1e-4)
        # min over classes of the means >= mean of the per-repeat minima >= the worst repeat's gap
        assert entry["device_mean_separation_na"] >= entry["device_separation_na"]
        # two points of noise 2 nA, each averaged over 5 repeats: sqrt(2) * 2 / sqrt(5) = 1.26 nA (sample spread)
        assert 0.3 < entry["device_mean_separation_stderr_na"] < 3.0
        assert entry["device_mean_separation_over_noise"] == pytest.approx(
            entry["device_mean_separation_na"] / metrics["noise_na"]
        )


def test_gates_controls_and_device_outputs_by_hand(gates_run):
    _, out, _ = gates_run
    controls = json.loads((out / "controls.json").read_text())
    metrics = json.loads((out / "metrics.json").read_text())
    device = AnalyticDevice()  # the {type: analytic} of the config
    x, _ = gate_data("AND")
    for gate in ("AND", "XOR"):
        c = controls[gate]
        assert list(c) == CONTROL_NAMES  # the five control electrodes, not the inputs e3, e4
        assert all(LOW - RANGE_TOLERANCE_V <= v <= HIGH + RANGE_TOLERANCE_V for v in c.values())
        v = hand_voltages(c, LOW + (HIGH - LOW) * x)
        # the noise-free device holds each point on a plateau: its mean is the closed form
        np.testing.assert_allclose(metrics["gates"][gate]["device_output_na"], analytic_current(device, v), rtol=1e-5, atol=1e-3)
        surrogate_by_hand = load_default_surrogate()(v.float()).detach().numpy()
        np.testing.assert_allclose(metrics["gates"][gate]["surrogate_output_na"], surrogate_by_hand, rtol=1e-5, atol=1e-3)
        assert separates(surrogate_by_hand, gate_data(gate)[1])


def test_results_folder_not_overwritten_unless_asked(gates_run):
    config, out, outcome = gates_run
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
    again = run_task(config, out, progress=False)  # a finished run is read back, not run again
    assert again.rows == outcome.rows and again.metrics == outcome.metrics
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"} == before
    other = config.model_copy(update={"seed": config.seed + 1})
    with pytest.raises(ConfigError, match="seed: 0 in the folder, 1 now"):
        run_task(other, out, progress=False)
    run_task(config, out, progress=False, overwrite=True)
    assert (out / "controls.json").read_bytes() == before["controls.json"]  # seeded: the same solutions again


# ---------------------------------------------------------------------------------- run_task: rings


@pytest.mark.parametrize("architecture, nodes", [("single", [1]), ("2-2-1", [2, 2, 1])])
def test_rings_run_and_multiplexed_validation(tmp_path, monkeypatch, architecture, nodes):
    played = []
    original = AnalyticDevice.measure
    monkeypatch.setattr(AnalyticDevice, "measure", lambda self, v: played.append(len(v)) or original(self, v))
    n_test, plateau, ramp, repeats = 30, 2, 3, 2
    config = validate_config(RunConfig, {
        "task": {"type": "rings", "architecture": architecture, "n_train": 50, "n_test": n_test, "attempts": 1, "gd": {"epochs": 20}},
        "validation": {"device": ANALYTIC, "plateau_samples": plateau, "ramp_samples": ramp, "repeats": repeats},
    })  # fmt: skip
    assert config.task.gd.learning_rate == 0.0065  # the task's default survives a partial gd mapping
    outcome = run_task(config, tmp_path, progress=False)
    m = outcome.metrics
    for key in ("architecture", "loss", "stage_one_loss", "fisher_train", "surrogate_train_accuracy", "surrogate_test_accuracy",
                "threshold_na", "epochs", "fit_seconds", "n_dnpu_nodes", "device_accuracy", "device_accuracy_min",
                "device_accuracy_surrogate_threshold", "rms_difference_na", "validation_seconds", "validation_repeats"):  # fmt: skip
        assert key in m, key
    for key in (
        "surrogate_train_accuracy",
        "surrogate_test_accuracy",
        "device_accuracy",
        "device_accuracy_min",
        "device_accuracy_surrogate_threshold",
    ):
        assert 0.0 <= m[key] <= 1.0, key
    assert (
        m["epochs"] == 20
        and m["n_dnpu_nodes"] == sum(nodes)
        and m["fisher_train"] == pytest.approx(-m["stage_one_loss"], rel=1e-4)
    )
    # one node per waveform (time multiplexing one device): each holds the 2 * n_test points of one node
    assert played == [2 * ramp + 2 * n_test * plateau] * (sum(nodes) * repeats)
    controls = json.loads((tmp_path / "controls.json").read_text())
    assert [len(controls[f"layer{i}"]) for i in range(len(nodes))] == nodes
    assert all(list(node) == CONTROL_NAMES for i in range(len(nodes)) for node in controls[f"layer{i}"])
    assert {p.name for p in tmp_path.iterdir()} >= {
        "config.yaml",
        "metrics.json",
        "controls.json",
        "learning_curve.png",
        "outputs_per_class.png",
        "solution_iv.png",
        "model.safetensors",
    }
    # the saved network (controls and batch-norm state) reproduces the recorded Fisher criterion
    from safetensors.torch import load_file

    from inmaterio.data.rings import make_rings
    from inmaterio.tasks.rings import build_ring_model
    from inmaterio.training.losses import fisher

    model = build_ring_model(architecture, SurrogateProcessor(load_default_surrogate()), (3, 4), seed=12345)
    model.load_state_dict(load_file(tmp_path / "model.safetensors"))
    model.eval()
    x_train, y_train = make_rings(50, gap=0.1, seed=0)
    with torch.no_grad():
        assert float(-fisher(model(x_train), y_train)) == pytest.approx(m["fisher_train"], rel=1e-4)


# ------------------------------------------------------------------------------- run_task: capacity


def test_capacity_run_counts_constant_labellings(tmp_path, surrogate):
    config = validate_config(RunConfig, {
        "task": {"type": "capacity", "n_points": [4], "attempts": 1, "gd": {"epochs": 50}},
        "validation": {"device": ANALYTIC},
    })  # fmt: skip
    outcome = run_task(config, tmp_path, progress=False)
    entry = outcome.metrics["per_n"]["4"]
    assert set(entry) == {
        "labellings",
        "found_on_surrogate",
        "fraction_surrogate",
        "fit_seconds",
        "found_on_device",
        "fraction_device",
        "validation_seconds",
    }
    assert {"vc_dimension_lower_bound_surrogate", "vc_dimension_lower_bound_device"} <= set(outcome.metrics)
    found = json.loads((tmp_path / "controls.json").read_text())["4"]
    assert "0000" not in found and "1111" not in found  # never trained, counted as found
    assert entry["labellings"] == 16
    assert entry["found_on_surrogate"] == len(found) + 2
    assert entry["fraction_surrogate"] == entry["found_on_surrogate"] / 16
    assert (
        entry["fraction_device"] == entry["found_on_device"] / 16 and 2 <= entry["found_on_device"] <= entry["found_on_surrogate"]
    )
    assert (tmp_path / "capacity.png").is_file()
    # every labelling reported found is separated by the surrogate (data range = voltage range: points are volts)
    points = torch.tensor(CAPACITY_POINTS[:4], dtype=torch.float64)
    for label, controls in found.items():
        out = surrogate.model(hand_voltages(controls, points).float()).detach()
        assert separates(out, torch.tensor([int(c) for c in label])), label


# ----------------------------------------------------------------------------------- config errors


def _validate(task: dict, **rest):
    return validate_config(RunConfig, {"task": task, **rest})


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="unknown key 'task.gates.gatez'"):
        _validate({"type": "gates", "gatez": ["AND"]})
    with pytest.raises(ConfigError, match="unknown key 'validation.repeat'"):
        _validate({"type": "gates"}, validation={"repeat": 2})


def test_unknown_loss_lists_the_choices():
    with pytest.raises(ConfigError) as err:
        _validate({"type": "rings", "loss": "hinge"})
    assert "task.rings.loss" in str(err.value) and "'hinge'" in str(err.value)
    for name in ("fisher", "corrsig", "sigmoid_distance", "bce", "mse", "cross_entropy"):
        assert name in str(err.value)


def test_unknown_task_type():
    with pytest.raises(ConfigError, match="'mnist'.*'gates', 'rings', 'capacity'"):
        _validate({"type": "mnist"})


def test_gate_lists():
    with pytest.raises(ConfigError, match=r"gates repeats a gate: \['AND', 'OR', 'AND'\]"):
        _validate({"type": "gates", "gates": ["AND", "OR", "AND"]})
    with pytest.raises(ConfigError, match="gates is empty"):
        _validate({"type": "gates", "gates": []})
    with pytest.raises(ConfigError, match="task.gates.gates.0"):
        _validate({"type": "gates", "gates": ["IMPLY"]})


@pytest.mark.parametrize("n_points", [[3], [4, 11], []])
def test_capacity_n_points_range(n_points):
    with pytest.raises(ConfigError, match=r"n_points must be a non-empty list of values in 4\.\.10"):
        _validate({"type": "capacity", "n_points": n_points})


def test_partial_gd_keeps_the_task_defaults():
    task = _validate({"type": "capacity", "gd": {"epochs": 7}}).task
    assert (task.gd.learning_rate, task.gd.betas, task.gd.epochs) == (0.03, (0.995, 0.999), 7)
    assert _validate({"type": "gates", "gd": {"epochs": 7}}).task.gd.learning_rate == 0.02
    sgd = _validate({"type": "capacity", "gd": {"optimizer": "sgd"}}).task.gd  # betas unused by sgd: not carried over
    assert (sgd.optimizer, sgd.learning_rate, sgd.betas) == ("sgd", 0.03, (0.9, 0.999))


@pytest.mark.parametrize("electrodes, message", [(["e3", "e9"], "unknown input electrode 'e9'"), ([3, 3], "repeat an electrode")])
def test_bad_input_electrode_refused_before_anything_is_written(tmp_path, electrodes, message):
    config = _validate({"type": "gates", "gates": ["AND"], "input_electrodes": electrodes}, validation={"device": ANALYTIC})
    with pytest.raises(ConfigError, match=message):
        run_task(config, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_surrogate_and_validation_device_must_match(tmp_path):
    info = DeviceInfo(electrode_names=[f"e{k}" for k in range(5)], readout_name="e5", voltage_ranges_v=[(LOW, HIGH)] * 5)
    torch.manual_seed(0)
    save_surrogate(SurrogateModel(info, hidden_sizes=(8,)), tmp_path / "five")
    config = validate_config(RunConfig, {
        "task": {"type": "gates", "gates": ["AND"]},
        "surrogate": {"model_dir": str(tmp_path / "five")},
        "validation": {"device": ANALYTIC},
    })  # fmt: skip
    with pytest.raises(ConfigError, match=r"surrogate has 5 activation electrodes .* validation device 7"):
        run_task(config, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    narrow = _validate({"type": "gates", "gates": ["AND"]}, validation={"device": {"type": "analytic", "low_v": -1.0}})
    with pytest.raises(ConfigError, match=r"e0: \[-1.2, 0.6\] V on the surrogate, \[-1.0, 0.6\] V on the device"):
        run_task(narrow, tmp_path / "out", progress=False)


def test_validation_device_needed_without_provenance(tmp_path):
    info = DeviceInfo(electrode_names=[f"e{k}" for k in range(7)], readout_name="e7", voltage_ranges_v=[(LOW, HIGH)] * 7)
    save_surrogate(SurrogateModel(info, hidden_sizes=(8,)), tmp_path / "anonymous")
    config = validate_config(RunConfig, {"task": {"type": "gates"}, "surrogate": {"model_dir": str(tmp_path / "anonymous")}})
    with pytest.raises(ConfigError, match="give validation.device or set validation.enabled: false"):
        run_task(config, tmp_path / "out", progress=False)


def test_nan_loss_stops_the_task(tmp_path, monkeypatch):
    monkeypatch.setitem(losses.LOSSES, "mse", lambda output, target: (output * float("nan")).mean(dim=-1))
    config = _validate(
        {"type": "gates", "gates": ["AND"], "loss": "mse", "attempts": 1, "gd": {"epochs": 3}}, validation={"enabled": False}
    )
    with pytest.raises(
        TrainingDivergedError,
        match=r"training diverged in epoch 1: the objective of batch 1 of 1 is nan \(optimizer Adam, learning rate 0.02\)",
    ):
        run_task(config, tmp_path, progress=False)
    assert not (tmp_path / "metrics.json").exists()  # not a finished run: a re-run is allowed


def test_written_config_is_the_loaded_one(tmp_path):
    path = Path(__file__).resolve().parents[1] / "examples" / "gates_gd.yaml"
    config = load_config(RunConfig, path)
    assert config.task.input_electrodes == ("e3", "e4") and config.task.gd.epochs == 400
    data = yaml.safe_load(path.read_text())
    assert validate_config(RunConfig, data) == config


# ------------------------------------------------------------------------ evolution on the device, resume


def test_gates_evolved_on_the_device_through_run_task(tmp_path):
    """train_on: device runs the GA on the (analytic) device and reports the surrogate's view beside it."""
    config = validate_config(RunConfig, {
        "task": {"type": "gates", "gates": ["XOR"], "input_electrodes": ["e0", "e1"], "algorithm": "ga",
                 "train_on": "device", "attempts": 1, "ga": {"population_size": 16, "n_elite": 2, "generations": 25}},
        "validation": {"device": ANALYTIC, "enabled": False},
    })  # fmt: skip
    outcome = run_task(config, tmp_path, progress=False)
    xor = outcome.metrics["gates"]["XOR"]
    assert outcome.metrics["trained_on"] == "device"
    assert xor["device_accuracy"] == 1.0  # measured on the device it was evolved on
    controls = json.loads((tmp_path / "controls.json").read_text())["XOR"]
    v = hand_voltages(controls, LOW + (HIGH - LOW) * gate_data("XOR")[0], ("e0", "e1"))
    assert separates(analytic_current(AnalyticDevice(), v), gate_data("XOR")[1])


def test_device_training_needs_the_genetic_algorithm():
    with pytest.raises(ConfigError, match="train_on: device needs algorithm: ga"):
        _validate({"type": "gates", "train_on": "device"})


def test_capacity_resumes_after_interruption(tmp_path, monkeypatch):
    """N = 4 finishes, N = 5 is interrupted; the rerun trains only N = 5 and gives the uninterrupted result."""
    import inmaterio.tasks.fitting as fitting

    spec = {"type": "capacity", "n_points": [4, 5], "attempts": 1, "gd": {"epochs": 30}}
    config = validate_config(RunConfig, {"task": spec, "validation": {"enabled": False}})
    reference = run_task(config, tmp_path / "reference", progress=False).metrics["per_n"]

    real = fitting.fit_binary_nodes
    trained = []

    def interrupt_at_five(processor, x, targets, **kw):
        trained.append(len(x))
        if len(x) == 5 and len(trained) == 2:
            raise KeyboardInterrupt
        return real(processor, x, targets, **kw)

    monkeypatch.setattr(fitting, "fit_binary_nodes", interrupt_at_five)
    with pytest.raises(RunInterrupted, match="run the same command again to resume"):
        run_task(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["state"] == "interrupted"
    other = validate_config(RunConfig, {"task": {**spec, "attempts": 2}, "validation": {"enabled": False}})
    with pytest.raises(ConfigError, match="config.task.attempts: 1 in the folder, 2 now"):
        run_task(other, tmp_path / "run", progress=False)
    resumed = run_task(config, tmp_path / "run", progress=False).metrics["per_n"]
    assert trained == [4, 5, 5]  # N = 4 was not trained again
    for n in ("4", "5"):
        assert resumed[n]["found_on_surrogate"] == reference[n]["found_on_surrogate"]
