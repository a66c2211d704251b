"""SIGKILL at a random point of a GD run and of a GA evolving on a noisy device, then the same command:
the resumed result equals the uninterrupted one bit for bit.

The jobs are this file run as a script (``python tests/test_training_killresume.py gd|ga FOLDER``);
each sleeps a little after every epoch / generation (which changes no number), so the kill lands
in the middle of the run. The uninterrupted reference runs in the test process with the same
thread count as the jobs.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from pathlib import Path

import torch

from inmaterio.runs import CHECKPOINT_FILE
from killresume import kill_then_resume, python_argv

GD_EPOCHS = 40
GA_GENERATIONS = 40
PAUSE_S = 0.05  # per epoch / generation in the killed job: about 2 s after the first checkpoint


def gd_job(folder: Path, pause_s: float = 0.0) -> None:
    """A noisy MLP (dropout and output noise from the global RNG), mini-batches, a per-step schedule and
    a stateful callback, trained in the run folder ``folder``."""
    from inmaterio.training.gd import Callback, GDConfig, train_gd
    from test_training_gd import Noisy

    class Pause(Callback):
        def __init__(self):
            self.epochs = 0

        def on_epoch_end(self, end):
            self.epochs += 1
            time.sleep(pause_s)
            return {"epochs_seen": self.epochs}

        def state_dict(self):
            return {"epochs": self.epochs}

        def load_state_dict(self, state):
            self.epochs = state["epochs"]

    g = torch.Generator().manual_seed(5)
    x = torch.rand(96, 1, generator=g) * 2 - 1
    y = torch.sin(3 * x).squeeze(-1)
    torch.manual_seed(0)
    model = Noisy()
    config = GDConfig(learning_rate=0.02, epochs=GD_EPOCHS, batch_size=32, validation_fraction=0.25, seed=7)
    train_gd(
        model, lambda out, t: ((out - t) ** 2).mean(), x, y, config,
        scheduler=lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3 * GD_EPOCHS),
        scheduler_interval="step",
        callbacks=[Pause()],
        metrics={"mae": lambda out, t: float((out - t).abs().mean())},
        directory=folder,
    )  # fmt: skip


def ga_job(folder: Path, pause_s: float = 0.0) -> None:
    """Evolution in materio: a one-node DNPU's controls evolved on the analytic device with 2 nA noise."""
    from inmaterio.devices.analytic import AnalyticDevice
    from inmaterio.nn import DNPU
    from inmaterio.processors import DeviceProcessor
    from inmaterio.training.ga import GAConfig, GeneticAlgorithm
    from inmaterio.training.losses import get_loss

    device = AnalyticDevice(noise_na=2.0, seed=1)
    probe = DNPU(DeviceProcessor(device), 1, ("e0", "e1"), (0.0, 1.0))
    x = torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    target = torch.tensor([0.0, 1.0, 1.0, 0.0])  # XOR
    loss = get_loss("fisher")

    def fitness(genomes):
        return -loss(probe(x, genomes[:, None, :])[..., 0], target)

    ga = GeneticAlgorithm(GAConfig(generations=GA_GENERATIONS, population_size=12, n_elite=3, seed=4), probe.control_bounds())
    ga.evolve(
        fitness, callback=lambda generation, so_far: time.sleep(pause_s), random_streams=device.random_streams, directory=folder
    )


JOBS = {"gd": gd_job, "ga": ga_job}


@contextlib.contextmanager
def one_thread():
    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # as the jobs (OMP_NUM_THREADS=1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def final_state(folder: Path) -> dict:
    """The checkpoint's state and the history without wall times."""
    state = torch.load(folder / CHECKPOINT_FILE, weights_only=True)["state"]
    history = [{k: v for k, v in row.items() if k != "time_s"} for row in json.loads((folder / "history.json").read_text())]
    return {"state": state, "history": history, "run": json.loads((folder / "run.json").read_text())}


def assert_same(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            assert_same(u, v, f"{where}[{i}]")
    else:
        assert a == b, where


def check_kill_and_resume(kind: str, tmp_path: Path, seed: int, unstable: set[str]) -> None:
    with one_thread():
        JOBS[kind](tmp_path / "clean")
    killed = tmp_path / "killed"
    report = kill_then_resume(
        python_argv(__file__, kind, str(killed)), killed / "checkpoint.pt", seed=seed, max_delay_s=1.5, timeout=120
    )
    assert report.killed_while_running, report
    assert "resuming the running run" in report.resumed_output, report.resumed_output
    clean, resumed = final_state(tmp_path / "clean"), final_state(killed)
    assert resumed["history"] == clean["history"], report
    assert resumed["run"]["state"] == "finished" and resumed["run"]["sessions"] == 2
    for key, value in clean["state"].items():
        if key not in unstable:
            assert_same(value, resumed["state"][key], key)


def test_gd_killed_at_a_random_point_resumes_bit_identically(tmp_path):
    # history_json holds the wall times; the histories are compared without them
    check_kill_and_resume("gd", tmp_path, seed=11, unstable={"history_json"})


def test_ga_on_a_noisy_device_killed_at_a_random_point_resumes_bit_identically(tmp_path):
    check_kill_and_resume("ga", tmp_path, seed=12, unstable={"history_json"})


if __name__ == "__main__":
    JOBS[sys.argv[1]](Path(sys.argv[2]), pause_s=PAUSE_S)
