"""results/README.md is exactly what ``inmaterio report`` builds from the stored run folders (the tables stay true)."""

import json
from pathlib import Path

from inmaterio.tasks.report import build_report

RESULTS = Path(__file__).resolve().parents[1] / "results"
FOLDERS = [
    "capacity_study",
    "capacity_device",
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


def test_every_stored_dnpu_run_names_a_surrogate_that_is_still_shipped():
    """Stored DNPU runs made with the previous bundled model can be re-run as made (it is kept); the rest name today's."""
    from inmaterio.runs import fingerprint_tensors
    from inmaterio.surrogate import load_default_surrogate, load_surrogate

    def fingerprint(model):
        weights = model.state_dict()
        return fingerprint_tensors(*(weights[k] for k in sorted(weights)))

    shipped = {fingerprint(load_default_surrogate()), fingerprint(load_surrogate(RESULTS / "previous_default_surrogate"))}
    named = {
        json.loads(r.read_text())["identity"].get("surrogate_weights")
        for r in RESULTS.rglob("run.json")
        if "surrogate_weights" in (json.loads(r.read_text()).get("identity") or {})
    }
    assert len(named) >= 1 and named <= shipped
