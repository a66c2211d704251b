"""``inmaterio cost RUN_FOLDER`` on copies of the shipped run folders: tables, files, one-line errors."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from inmaterio.cli import app

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _copy(name: str, tmp_path: Path) -> Path:
    src = ROOT / "results" / name
    dest = tmp_path / src.name
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("seed_*", "*.png", "costs.*"))
    return dest


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()}


def test_crossbar_mlp_costs_are_written_and_consistent(tmp_path):
    folder = _copy("crossbar_inference/mlp_mnist", tmp_path)
    before = _digests(folder)
    result = runner.invoke(app, ["cost", str(folder)])
    assert result.exit_code == 0, result.output
    assert "dense1" in result.output and "total" in result.output and "digital" in result.output
    after = _digests(folder)
    assert {k: v for k, v in after.items() if not k.startswith("costs.")} == before  # nothing else touched
    data = json.loads((folder / "costs.json").read_text())
    lines, total = data["lines"], data["total"]
    assert [line["ops"] for line in lines] == [2 * 784 * 256, 2 * 256 * 128, 2 * 128 * 10]
    assert total["energy_j"] == pytest.approx(sum(line["energy_j"] for line in lines))
    assert total["tops_per_w"] == pytest.approx(total["ops"] / total["energy_j"] / 1e12)
    assert data["digital_energy_ratio"] == pytest.approx(data["digital_baseline"]["energy_j"] / total["energy_j"])
    assert data["assumptions"]["macro.input_bits"] == 7 and data["assumptions"]["macro.adc.bits"] == 9  # the run's periphery
    assert (folder / "costs.md").read_text().startswith("# MLP 784-256-128-10")


def test_ep_circuit_costs(tmp_path):
    folder = _copy("ep_learning/gates", tmp_path)  # the XOR circuit: 2 inputs, 6 hidden diode nodes, 4 outputs
    result = runner.invoke(app, ["cost", str(folder)])
    assert result.exit_code == 0, result.output
    data = json.loads((folder / "costs.json").read_text())
    lines, total = data["lines"], data["total"]
    assert [line["name"] for line in lines] == ["h (crossbar)", "y (crossbar)", "diodes"]
    assert [line["ops"] for line in lines] == [2 * (2 * 2 + 2) * 6, 2 * (6 + 2) * 4, 0]  # 2 per conductance
    assert total["energy_j"] == pytest.approx(sum(line["energy_j"] for line in lines))
    assert total["latency_s"] == lines[0]["latency_s"] > 0  # the parts settle together
    assert all(line["area_mm2"] is None for line in lines)
    assert data["training_step"]["energy_j"] == pytest.approx(3 * total["energy_j"], rel=1e-6)  # symmetric EP, beta -> 0
    assert "initial conductances" in " ".join(data["notes"])


def test_unsupported_corrupt_and_missing_folders_are_one_line_errors(tmp_path):
    unsupported = _copy("capacity_study", tmp_path)
    result = runner.invoke(app, ["cost", str(unsupported)])
    assert result.exit_code == 2
    assert "kind 'inmaterio.task.capacity_study'" in " ".join(result.output.split())
    assert "Traceback" not in result.output and not (unsupported / "costs.json").exists()
    corrupt = _copy("ep_learning/iris", tmp_path / "c")
    (corrupt / "run.json").write_text("{not json")
    result = runner.invoke(app, ["cost", str(corrupt)])
    assert result.exit_code == 2 and "cannot be read as a run record" in " ".join(result.output.split())
    result = runner.invoke(app, ["cost", str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and "is not a run folder" in " ".join(result.output.split())
    incomplete = _copy("crossbar_inference/mlp_mnist", tmp_path / "i")
    (incomplete / "metrics.json").write_text("{}")
    result = runner.invoke(app, ["cost", str(incomplete)])
    assert result.exit_code == 2 and "has no 'periphery'" in " ".join(result.output.split())


def test_dnpu_networks_rings_and_mnist(tmp_path):
    from inmaterio.costs.dnpu import DEFAULT_DNPU, surrogate_ops
    from inmaterio.surrogate import load_default_surrogate

    ops = surrogate_ops(load_default_surrogate())
    rings = _copy("rings_study", tmp_path)
    assert runner.invoke(app, ["cost", str(rings)]).exit_code == 0
    hidden, output = json.loads((rings / "costs.json").read_text())["lines"]
    assert hidden["energy_j"] == pytest.approx(2 * output["energy_j"]) and output["ops"] == ops
    mnist = _copy("mnist_10dnpu/dnpu_m3_ours", tmp_path)
    result = runner.invoke(app, ["cost", str(mnist)])
    assert result.exit_code == 0, result.output
    linear, dnpus = json.loads((mnist / "costs.json").read_text())["lines"]
    assert linear["ops"] == 2 * 784 * 30 and dnpus["ops"] == 10 * ops
    # same operating points, one more input electrode (3 vs 2): one more DAC conversion per node
    assert dnpus["energy_j"] / 10 - output["energy_j"] == pytest.approx(DEFAULT_DNPU.dac_energy_j, rel=1e-9)
    relu = _copy("mnist_10dnpu/relu_m3_ours", tmp_path / "r")
    result = runner.invoke(app, ["cost", str(relu)])
    assert result.exit_code == 2 and "model 'relu'" in " ".join(result.output.split())


def test_pulsed_devices_use_the_runs_conductance_range(tmp_path):
    folder = _copy("pulsed_mnist", tmp_path)
    assert runner.invoke(app, ["cost", str(folder)]).exit_code == 0
    data = json.loads((folder / "costs.json").read_text())
    device = json.loads((folder / "metrics.json").read_text())["device"]
    assert data["assumptions"]["macro.mean_conductance_s"] == pytest.approx(
        0.5 * (device["g_min_ns"] + device["g_max_ns"]) * 1e-9
    )
    assert [line["ops"] for line in data["lines"]] == [2 * 400 * 100, 2 * 100 * 10]


def test_several_folders_and_the_figure(tmp_path):
    mlp = _copy("crossbar_inference/mlp_mnist", tmp_path)
    dnpu = _copy("crossbar_inference/dnpu_mnist", tmp_path / "d")
    figure = tmp_path / "energy.png"
    result = runner.invoke(app, ["cost", str(mlp), str(dnpu), "--figure", str(figure)])
    assert result.exit_code == 0, result.output
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = json.loads((dnpu / "costs.json").read_text())["lines"]
    assert [line["name"] for line in lines] == ["linear 784x70", "10 DNPUs"]
    # one bad folder among good ones: an error, and nothing is written anywhere
    fresh = _copy("pulsed_mnist", tmp_path / "f")
    result = runner.invoke(app, ["cost", str(fresh), str(tmp_path / "nowhere")])
    assert result.exit_code == 2 and not (fresh / "costs.json").exists()


def test_gates_are_costed_at_their_trained_controls(tmp_path):
    from inmaterio.costs.dnpu import DEFAULT_DNPU
    from inmaterio.surrogate import load_default_surrogate

    folder = tmp_path / "gates"
    folder.mkdir()
    record = {"format": "inmaterio.run", "format_version": 1, "kind": "inmaterio.task.gates", "state": "finished",
              "identity": {"config": {"task": {"type": "gates", "input_electrodes": ["e3", "e4"]},
                                      "surrogate": {"model_dir": None}}}}  # fmt: skip
    (folder / "run.json").write_text(json.dumps(record))
    controls = {
        "XOR": {"e0": 0.3, "e1": -0.6, "e2": 0.1, "e5": -1.0, "e6": 0.5},
        "AND": {"e0": -0.2, "e1": 0.4, "e2": -0.9, "e5": 0.0, "e6": 0.2},
    }
    (folder / "controls.json").write_text(json.dumps(controls))
    result = runner.invoke(app, ["cost", str(folder)])
    assert result.exit_code == 0, result.output
    data = json.loads((folder / "costs.json").read_text())
    surrogate = load_default_surrogate()
    (lo3, hi3), (lo4, hi4) = surrogate.info.voltage_ranges_v[3], surrogate.info.voltage_ranges_v[4]
    lo3, lo4, hi3, hi4 = lo3 + 1e-6, lo4 + 1e-6, hi3 - 1e-6, hi4 - 1e-6  # inside the surrogate's float32 range check

    def power_w(c):
        rows = [
            [c["e0"], c["e1"], c["e2"], x3, x4, c["e5"], c["e6"]] for x3, x4 in ((lo3, lo4), (lo3, hi4), (hi3, lo4), (hi3, hi4))
        ]
        v = torch.tensor(rows, dtype=torch.float64)
        current_na = torch.as_tensor(surrogate.predict(v.numpy()), dtype=torch.float64).reshape(-1)
        return float((current_na.abs() * 1e-9 * v.abs().amax(1)).mean())  # |I_out| max|V|

    powers = [power_w(controls["XOR"]), power_w(controls["AND"])]
    assert data["assumptions"]["dnpu.mean_power_w"] == pytest.approx(sum(powers) / 2, rel=1e-4)
    expected = powers[0] * DEFAULT_DNPU.evaluation_time_s + 2 * DEFAULT_DNPU.dac_energy_j + DEFAULT_DNPU.readout_energy_j
    xor, gate_and = data["lines"]
    assert xor["name"] == "XOR (1 DNPU)" and xor["energy_j"] == pytest.approx(expected, rel=1e-5)
    assert data["total"]["energy_j"] == pytest.approx((xor["energy_j"] + gate_and["energy_j"]) / 2)  # alternatives: the mean
