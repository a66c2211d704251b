"""The PCM crossbar inference study as a task, on a tiny synthetic MNIST written in IDX .gz files (never the real files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from typer.testing import CliRunner

import inmaterio.crossbars.inference as inference
import inmaterio.training.losses as losses
from inmaterio.cli import app
from inmaterio.config import validate_config
from inmaterio.crossbars.layers import AnalogLinear, convert_to_analog
from inmaterio.errors import ConfigError, RunInterrupted
from inmaterio.studies.crossbar_inference import CrossbarInferenceConfig, build_digital
from inmaterio.studies.mnist import first_linear
from inmaterio.tasks.registry import load_run_config, parse_run_config
from inmaterio.tasks.report import build_report
from inmaterio.tasks.run import run_task
from killresume import without_timings
from test_studies_mnist import write_synthetic_mnist

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def mnist(tmp_path_factory) -> Path:
    return write_synthetic_mnist(tmp_path_factory.mktemp("data") / "mnist", n_train=120, n_test=40)


@pytest.fixture(scope="module")
def mnist_300_test(tmp_path_factory) -> Path:
    """More test images: small margins, so PCM noise changes some predictions."""
    return write_synthetic_mnist(tmp_path_factory.mktemp("data") / "mnist", n_train=120, n_test=300, seed=1)


def tiny(data: Path, model: dict | None = None, **task) -> dict:
    """A run of seconds: a small network, one epoch, two times, two repeats."""
    return {
        "task": {
            "type": "crossbar_inference", "model": model or {"kind": "mlp", "hidden": [16], "settings": {"batch_size": 20}},
            "epochs": 1, "seeds": 1, "inference": {"times_s": [1, 2592000], "repeats": 2}, **task,
        },
        "data": {"dir": str(data), "n_validation": 40},
    }  # fmt: skip


def test_the_task_is_listed_and_its_examples_validate():
    result = CliRunner().invoke(app, ["run", "--list"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "crossbar_inference" in result.output and "examples/crossbar_inference.yaml" in result.output
    configs = {
        p.stem: load_run_config(p)
        for p in [EXAMPLES / "crossbar_inference.yaml", *(EXAMPLES / "crossbar_inference").glob("*.yaml")]
    }
    assert set(configs) == {"crossbar_inference", "dnpu_mnist", "mlp_mnist", "cnn_mnist"}
    for name, config in configs.items():
        assert isinstance(config, CrossbarInferenceConfig) and config.data.dir is None
        assert config.task.trainings == ("plain", "hwa") and config.task.inference.noises == ("spoon2021", "spoon2021_gamma_half")
        assert config.task.inference.times_s == (1, 3600, 86400, 604800, 2592000)
        expected = {"crossbar_inference": (1, 5), "cnn_mnist": (3, 10)}.get(name, (5, 25))  # the CNN trimmed to ~2 h
        assert (config.task.seeds, config.task.inference.repeats) == expected, name
    assert configs["dnpu_mnist"].task.model.inputs_per_node == 7 and configs["dnpu_mnist"].task.epochs == 30
    assert configs["mlp_mnist"].task.model.hidden == (256, 128) and configs["cnn_mnist"].task.model.kind == "cnn"


def test_the_optimizer_of_the_mnist_study_finds_the_analog_linear_layer():
    config = parse_run_config({"task": {"type": "crossbar_inference", "model": {"kind": "dnpu_mnist", "inputs_per_node": 3}}})
    from inmaterio.studies.common import SurrogateChoice, surrogate_processor
    from inmaterio.studies.mnist import _optimizer

    digital = build_digital(config.task.model, surrogate_processor(SurrogateChoice()), 784, 0)
    analog = convert_to_analog(digital, None, seed=0)
    assert isinstance(first_linear(analog), AnalogLinear) and first_linear(digital) is digital[1]
    for model in (digital, analog):
        groups = _optimizer(model, config.task.model.settings, None).param_groups
        assert {id(p) for p in groups[0]["params"]} == {id(p) for p in first_linear(model).parameters()}
        assert groups[0]["weight_decay"] == 0.1 and all(g["weight_decay"] == 0.0 for g in groups[1:])
        assert sum(len(g["params"]) for g in groups) == len([p for p in model.parameters() if p.requires_grad])


def test_a_tiny_run_writes_the_table_the_figure_and_reports(tmp_path, mnist):
    config = parse_run_config(tiny(mnist, seeds=2))
    outcome = run_task(config, tmp_path / "run", progress=False)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m == outcome.metrics and m["images"] == {"train": 80, "validation": 40, "test": 40}
    assert (tmp_path / "run" / "accuracy_vs_time.png").stat().st_size > 10_000
    for training in ("plain", "hwa"):
        for seed in (0, 1):
            assert json.loads((tmp_path / "run" / training / f"seed_{seed}" / "run.json").read_text())["state"] == "finished"
    # 2 trainings x 2 noises x 2 compensations, each over 2 seeds x 2 repeats at both times
    assert len(m["results"]) == 8 and len(outcome.rows) == 8
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    for r in m["results"]:
        for a in r["accuracy"]:
            values = [h["accuracy"] for h in history if h["curve"].startswith(f"inference {r['training']}/")
                      and h["curve"].endswith(f" {r['noise']}") and h["t_s"] == a["t_s"] and h["compensated"] == r["compensated"]]  # fmt: skip
            assert a["n"] == len(values) == 4 and a["mean"] == pytest.approx(sum(values) / 4)
            assert all(v * 40 == round(v * 40) for v in values)  # accuracies are counts of the 40 test images
    assert m["hwa_weight_noise"] == pytest.approx(inference.hwa_weight_noise("spoon2021"))
    assert m["baselines"]["plain"]["digital"]["n"] == 2
    report = build_report([tmp_path / "run"])
    assert "## crossbar_inference" in report and "| plain | spoon2021 | yes |" in report and "1 mo %" in report
    assert "Spoon et al. (2021)" in report and "1.29%" in report and "accuracy_vs_time.png" in report


@pytest.mark.parametrize(
    "model",
    [{"kind": "mlp", "hidden": [16], "settings": {"batch_size": 20, "learning_rate": 0.02}},
     {"kind": "cnn", "channels": [4, 8], "kernel_size": 3, "settings": {"batch_size": 10, "learning_rate": 0.02}},
     {"kind": "dnpu_mnist", "inputs_per_node": 3, "settings": {"batch_size": 20}}],
    ids=lambda m: m["kind"],
)  # fmt: skip
def test_noiseless_pcm_on_ideal_tiles_gives_the_digital_accuracy_at_every_time(tmp_path, mnist_300_test, model):
    """The noiseless preset on ideal tiles is the digital network at every time (the same test images right);
    the PCM noise of spoon2021 on the same trained network changes some of them by a year without drift
    compensation (the check can fail)."""
    config = parse_run_config(tiny(mnist_300_test, model, epochs=4, trainings=["plain"], periphery="ideal", inference={"noises": ["noiseless", "spoon2021"], "times_s": [1, 86400, 31536000], "repeats": 2}))  # fmt: skip
    m = run_task(config, tmp_path / "run", progress=False).metrics
    digital = m["baselines"]["plain"]["per_seed"][0]["digital"]
    assert 0.2 < digital < 1.0 and m["baselines"]["plain"]["per_seed"][0]["periphery"] == digital
    noiseless = [r for r in m["results"] if r["noise"] == "noiseless"]
    assert len(noiseless) == 2  # without and with drift compensation
    for r in noiseless:
        assert [(a["mean"], a["std"], a["n"]) for a in r["accuracy"]] == [(digital, 0.0, 2)] * 3
        assert r["drop_at_last_time"] == 0.0
    noisy = [a for r in m["results"] if r["noise"] == "spoon2021" for a in r["accuracy"]]
    assert any(a["mean"] != digital or a["std"] > 0 for a in noisy)


def test_an_interrupted_run_resumes_to_the_same_numbers_and_refuses_other_settings(tmp_path, mnist, monkeypatch):
    data = tiny(mnist, epochs=2)
    config = parse_run_config(data)
    reference = run_task(config, tmp_path / "reference", progress=False).metrics

    # 1. killed inside the hardware-aware training (its second epoch): the tiles' noise streams resume with it
    real_loss, losses_seen = losses.cross_entropy, []

    def loss_then_stop(out, y):
        losses_seen.append(1)
        if len(losses_seen) == 2 * 5 + 5 + 2:  # plain: 2 epochs x (4 batches + validation); hwa: epoch 1, 2 batches
            raise KeyboardInterrupt
        return real_loss(out, y)

    monkeypatch.setattr(losses, "cross_entropy", loss_then_stop)
    with pytest.raises(RunInterrupted, match="run the same command again to resume"):
        run_task(config, tmp_path / "run", progress=False)
    monkeypatch.setattr(losses, "cross_entropy", real_loss)
    assert json.loads((tmp_path / "run" / "hwa" / "seed_0" / "run.json").read_text())["state"] == "interrupted"

    # 2. resumed in the HWA training, then interrupted in its inference of the second noise preset
    real_over_time, calls = inference.accuracy_over_time, []

    def over_time_then_stop(model, evaluate, config, generator, progress=False):
        calls.append(config.noise)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_over_time(model, evaluate, config, generator, progress)

    monkeypatch.setattr(inference, "accuracy_over_time", over_time_then_stop)
    with pytest.raises(RunInterrupted):
        run_task(config, tmp_path / "run", progress=False)

    # another setting is refused, naming it; the same settings resume without redoing the finished inference
    other = {**data, "task": {**data["task"], "inference": {**data["task"]["inference"], "repeats": 3}}}
    with pytest.raises(ConfigError, match=r"task\.inference\.repeats: 2 in the folder, 3 now"):
        run_task(parse_run_config(other), tmp_path / "run", progress=False)
    resumed = run_task(config, tmp_path / "run", progress=False).metrics
    assert calls == ["spoon2021", "spoon2021_gamma_half", "spoon2021_gamma_half"]  # plain's were done in session 1
    assert without_timings(resumed) == without_timings(reference)
    for name in ("history.json", "hwa/seed_0/history.json", "plain/seed_0/history.json"):  # losses: the HWA noise drawn alike
        pair = [without_timings(json.loads((d / name).read_text())) for d in (tmp_path / "reference", tmp_path / "run")]
        assert pair[0] == pair[1], name
    assert json.loads((tmp_path / "run" / "run.json").read_text())["sessions"] == 3


def test_bad_configs_name_the_field(tmp_path, mnist):
    def refused(pattern: str, **task) -> None:
        data = tiny(mnist)
        with pytest.raises(ConfigError, match=pattern):
            parse_run_config({**data, "task": {**data["task"], **task}})

    refused(r"task\.colour", colour="red")
    refused(r"task\.model", model={"kind": "transformer"})
    refused(r"task\.model\.mlp\.depth", model={"kind": "mlp", "depth": 3})
    refused(r"task\.model\.cnn\.kernel_size.*odd", model={"kind": "cnn", "kernel_size": 4})
    refused(r"task\.model\.dnpu_mnist\.inputs_per_node", model={"kind": "dnpu_mnist", "inputs_per_node": 5})
    refused(r"task\.model\.dnpu_mnist\.settings\.learning_rate", model={"kind": "dnpu_mnist", "settings": {"learning_rate": -1}})
    refused(r"task\.epochs", epochs=0)
    refused(r"task\.seeds", seeds=0)
    refused(r"task\.trainings.*at most once", trainings=["hwa", "hwa"])
    refused(r"task\.trainings", trainings=["pulsed"])
    refused(r"task\.hwa_noise.*'loud'", hwa_noise="loud")
    refused(r"task\.hwa_weight_noise", hwa_weight_noise=-0.1)
    refused(r"task\.periphery.*forward_weight_noise", periphery={"forward_weight_noise": 0.1})
    refused(r"task\.periphery", periphery={"adc_bits": 0, "output_bound": 1})
    refused(r"task\.pixels", pixels="inverted")
    refused(r"task\.inference\.noises.*'gamma2'", inference={"noises": ["spoon2021", "gamma2"]})
    refused(r"task\.inference\.noises", inference={"noises": ["spoon2021", "spoon2021"]})
    refused(r"task\.inference\.times_s.*increasing", inference={"times_s": [3600, 1]})
    refused(r"task\.inference\.times_s", inference={"times_s": [0, 1]})
    refused(r"task\.inference\.repeats", inference={"repeats": 0})
    with pytest.raises(ConfigError, match=r"threads"):
        validate_config(CrossbarInferenceConfig, {**tiny(mnist), "threads": 0})
    # checked before the folder is made
    with pytest.raises(ConfigError, match="task.train_size 500 exceeds the 80 training images"):
        run_task(parse_run_config(tiny(mnist, train_size=500)), tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_threads_and_the_data_folder_are_speed_only(tmp_path, mnist):
    config = parse_run_config(tiny(mnist, trainings=["plain"]))
    first = run_task(config, tmp_path / "run", progress=False).metrics
    moved = tmp_path / "moved"
    moved.mkdir()
    for f in mnist.iterdir():
        (moved / f.name).write_bytes(f.read_bytes())
    again = parse_run_config({**tiny(moved, trainings=["plain"]), "threads": 2})
    assert run_task(again, tmp_path / "run", progress=False).metrics == first
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["task"]["type"] == "crossbar_inference"
    assert torch.get_num_threads() == 1
