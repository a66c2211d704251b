"""SMG runs killed (SIGKILL) at a random point resume to exactly the uninterrupted result (``inmaterio smg run``).

(a) killed while acquiring on the virtual DNPU: every batch's Monte Carlo noise is keyed by the plan and the
batch's first point, so the resumed batches measure what the uninterrupted run measured;
(b) killed while training: the model, Adam's state, the best model and the patience are restored from the
last epoch's checkpoint. In both, everything after the kill (training, test set, consistency check, I-V
curves) must come out the same, bit for bit.

Each test starts two jobs (the killed one and its resumption), and every job spends about 8 s of CPU
importing torch, numba and the package before it works: marked slow (``.ci/run`` runs them).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from inmaterio.config import load_config
from inmaterio.smg import SMGConfig, run_smg
from killresume import kill_then_resume, python_argv, without_timings

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

# a small virtual DNPU (40 acceptors in a 60 nm disc, 600 hops per point): 2000 points take a few seconds
HOPPING = """\
device: {type: hopping, n_acceptors: 40, radius_nm: 60, electrode_width_nm: 20, grid_spacing_nm: 5,
         equilibration_hops: 200, block_hops: 200, min_blocks: 2, max_blocks: 2}
sampling: {kind: lhs, n_samples: 2400, seed: 0}
test_sampling: {kind: uniform, n_samples: 100, seed: 1}
acquisition: {batch_size: 100}
training: {hidden_sizes: [16], max_epochs: 3, batch_size: 256, num_threads: 1}
consistency_repeats: 1
consistency_points: 50
iv_points: 3
"""

# a noisy analytic device and a training that takes seconds
# batch 16 and 100 epochs: the whole training must outlast the kill delay (up to 1 s after the first
# checkpoint) on a fast core; 30 epochs took 1.3 s on one and the job finished before the kill
TRAINING = """\
device: {type: analytic, n_activation: 5, noise_na: 1.0}
sampling: {kind: sine, n_samples: 8000, seed: 0}
test_sampling: {kind: uniform, n_samples: 500, seed: 1}
acquisition: {batch_size: 4000}
training: {hidden_sizes: [32, 32], max_epochs: 100, patience: 100, batch_size: 16, lr_schedule: cosine,
           learning_rate: 0.003, num_threads: 1}
consistency_repeats: 2
consistency_points: 200
iv_points: 11
"""


def _kill_and_compare(tmp_path: Path, yaml_text: str, watch: str, seed: int) -> tuple[Path, Path, object]:
    """The uninterrupted run in this process (one torch thread, as in the job), the killed one as a job."""
    config = tmp_path / "smg.yaml"
    config.write_text(yaml_text)

    def argv(out: Path) -> list[str]:
        return python_argv("-m", "inmaterio", "smg", "run", str(config), "--out", str(out), "--no-progress")

    clean, killed = tmp_path / "clean", tmp_path / "killed"
    run_smg(load_config(SMGConfig, config), clean, progress=False, notify=lambda message: None)
    report = kill_then_resume(argv(killed), killed / watch, seed=seed, max_delay_s=1.0)
    assert report.killed_while_running, report
    record = json.loads((killed / watch).with_name("run.json").read_text())
    assert record["state"] == "finished" and record["sessions"] == 2, (record, report)
    # the same data, the same weights, the same history and the same numbers everywhere after
    for name in ("train_data/data.npz", "test_data/data.npz"):
        a, b = np.load(clean / name), np.load(killed / name)
        for key in ("voltages_v", "current_na", "stderr_na"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}:{key} {report}")
    for name in ("training/weights.safetensors", "model/weights.safetensors"):
        a, b = load_file(clean / name), load_file(killed / name)
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}:{key} {report}")
    histories = [without_timings(json.loads((d / "training" / "history.json").read_text())) for d in (clean, killed)]
    assert histories[0] == histories[1], report
    metrics = [without_timings(json.loads((d / "metrics.json").read_text())) for d in (clean, killed)]
    assert metrics[0] == metrics[1], report
    return clean, killed, report


def test_acquisition_on_the_virtual_dnpu_killed_and_resumed(tmp_path):
    clean, _, _ = _kill_and_compare(tmp_path, HOPPING, "train_data/checkpoint.pt", seed=1)
    data = np.load(clean / "train_data" / "data.npz")
    # the device is noisy: equal numbers are not a matter of course
    assert np.median(data["stderr_na"]) > 1.0 and np.mean(data["stderr_na"] > 0) > 0.9


def test_training_killed_and_resumed(tmp_path):
    clean, killed, _ = _kill_and_compare(tmp_path, TRAINING, "training/checkpoint.pt", seed=2)
    history = json.loads((clean / "training" / "history.json").read_text())
    assert len(history) == 100
