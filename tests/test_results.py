"""results/README.md is exactly what ``inmaterio report`` builds from the stored run folders (the tables stay true)."""

import json
from pathlib import Path

from inmaterio.tasks.report import build_report

RESULTS = Path(__file__).resolve().parents[1] / "results"
FOLDERS = [
    "capacity_study",
    "mnist_10dnpu",
    "ep_learning",
    "ep_mnist",
    "rings_study",
    "crossbar_inference",
    "weight_extraction",
    "shd_toy",
    "ep_asymmetric",
    "ep_asymmetric_digits",
    "pulsed_mnist",
    "pulsed_mnist_ttv2_states",
    "drn_mnist",
    "drn_mnist_h1024",
    "smg_adaptive",
    "ep_ebm",
]


def test_results_readme_is_rebuilt_from_the_run_folders(monkeypatch):
    monkeypatch.chdir(RESULTS)
    assert build_report(FOLDERS) == (RESULTS / "README.md").read_text()


def test_stored_runs_are_finished_and_without_checkpoints():
    records = list(RESULTS.rglob("run.json"))
    assert len(records) > 20
    assert not list(RESULTS.rglob("checkpoint.pt"))
    assert {json.loads(r.read_text())["state"] for r in records} == {"finished"}
