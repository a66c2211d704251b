"""The weight-extraction study as a task: a tiny run end to end, its numbers against the closed forms, resume, bad configs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from inmaterio.crossbars.tile import REALISTIC_IO
from inmaterio.errors import ConfigError
from inmaterio.studies.weight_extraction import WeightExtractionConfig, effective_noise
from inmaterio.tasks.registry import load_run_config, parse_run_config
from inmaterio.tasks.report import build_report
from inmaterio.tasks.run import run_task
from killresume import without_timings

pytestmark = pytest.mark.usefixtures("one_torch_thread")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def tiny(**task) -> dict:
    """A run of about a second: a 16x64 tile, up to 4096 reads, two peripheries, two seeds."""
    return {
        "task": {
            "type": "weight_extraction", "in_features": 16, "out_features": 64, "weight_amplitudes": [0.5],
            "n_reads": [16, 512, 4096], "one_hot_repeats": [1, 4], "seeds": 2, "batch": 1000,
            "peripheries": [{"name": "noise", "io": {"output_noise": 0.1}},
                            {"name": "realistic", "io": REALISTIC_IO.model_dump(mode="json")}],
            **task,
        }
    }  # fmt: skip


def test_the_example_validates_with_the_paper_and_our_noise():
    config = load_run_config(EXAMPLES / "weight_extraction.yaml")
    assert isinstance(config, WeightExtractionConfig)
    task = config.task
    assert (task.in_features, task.out_features) == (512, 512) and 10240 in task.n_reads and task.n_reads[0] == 512
    ios = {p.name: p.io for p in task.peripheries}
    assert ios["realistic_io"] == REALISTIC_IO
    assert ios["paper_aihwkit_preset"].output_noise == 0.1 and ios["paper_aihwkit_preset"].output_bound == 20.0


def test_a_tiny_run_writes_the_table_the_figure_and_reports(tmp_path):
    outcome = run_task(parse_run_config(tiny()), tmp_path / "run", progress=False)
    m = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert m["results"] == outcome.metrics["results"] and m["tile"] == [64, 16]
    assert (tmp_path / "run" / "error_vs_reads.png").stat().st_size > 10_000
    noise, realistic = m["results"]
    # pure output noise: error std at 4096 reads = sigma sqrt(3 / (n - in - 1)) (1024 entries x 2 seeds: ~1.6 %)
    last = noise["random"][-1]
    assert last["reads"] == 4096 and last["closed_form"] == pytest.approx(0.1 * math.sqrt(3 / 4096))
    assert last["error_std"]["mean"] == pytest.approx(0.1 * math.sqrt(3 / (4096 - 17)), rel=0.06)
    assert last["predicted"] == pytest.approx(0.1 * math.sqrt(3 / (4096 - 17)))
    assert noise["random"][0]["predicted"] is None  # n = in: no finite prediction
    for e in noise["one_hot"]:  # sigma / sqrt(repeats)
        assert e["reads"] == 16 * e["repeats"] and e["error_std"]["mean"] == pytest.approx(
            0.1 / math.sqrt(e["repeats"]), rel=0.08
        )
    assert noise["clipped_share"] == 0.0
    # the realistic periphery: converters add noise beyond its output noise; the prediction holds within 15 %
    assert realistic["sigma_eff"] > realistic["sigma_out"]
    assert realistic["random"][-1]["error_std"]["mean"] == pytest.approx(realistic["random"][-1]["predicted"], rel=0.15)
    # more reads, smaller error
    for r in (noise, realistic):
        errs = [e["error_std"]["mean"] for e in r["random"]]
        assert errs == sorted(errs, reverse=True)
    assert len(outcome.rows) == 2 * (3 + 2)
    report = build_report([tmp_path / "run"])
    assert "## weight_extraction" in report and "| noise | 0.5 | random U[-1,1] | 4096 |" in report
    assert "one-hot x4" in report and "error_vs_reads.png" in report


def test_a_rerun_resumes_to_the_same_numbers_and_threads_are_speed_only(tmp_path):
    first = run_task(parse_run_config(tiny(seeds=1)), tmp_path / "run", progress=False).metrics
    again = run_task(parse_run_config({**tiny(seeds=1), "threads": 2}), tmp_path / "run", progress=False).metrics
    fresh = run_task(parse_run_config(tiny(seeds=1)), tmp_path / "fresh", progress=False).metrics
    assert without_timings(again) == without_timings(first) == without_timings(fresh)
    assert first["results"] == fresh["results"]
    assert torch.get_num_threads() == 1


def test_effective_noise_adds_the_converters_as_uniform_rounding():
    w = torch.full((4, 10), 0.5)
    io = REALISTIC_IO
    expected = math.sqrt(io.output_noise**2 + io.adc_step**2 / 12 + io.dac_step**2 / 12 * 10 * 0.25)
    assert effective_noise(io, w, 1.0) == pytest.approx(expected)
    assert effective_noise(io, w, 1.0, one_hot=True) == pytest.approx(math.sqrt(io.output_noise**2 + io.adc_step**2 / 12))


def test_bad_configs_name_the_field():
    def refused(pattern: str, **task) -> None:
        with pytest.raises(ConfigError, match=pattern):
            parse_run_config(tiny(**task))

    refused(r"task\.colour", colour="red")
    refused(r"n_reads 8 < in_features = 16", n_reads=[8, 100])
    refused(r"task\.n_reads.*strictly increasing", n_reads=[100, 50])
    refused(r"task\.one_hot_repeats", one_hot_repeats=[0])
    refused(r"weight amplitude 2.0 must be in \(0, weight_range = 1.0\]", weight_amplitudes=[2.0])
    refused(r"periphery names must be distinct", peripheries=[{"name": "a", "io": {}}, {"name": "a", "io": {}}])
    refused(r"task\.peripheries\.0\.io.*adc_bits = 9 needs an output_bound", peripheries=[{"name": "a", "io": {"adc_bits": 9}}])
    refused(r"task\.seeds", seeds=0)
    refused(r"task\.in_features", in_features=0)
