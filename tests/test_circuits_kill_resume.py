"""`inmaterio ep train` killed at a random point (SIGKILL) and run again: the same result as an uninterrupted run, bit for bit."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from inmaterio.checkpoints import history_of
from inmaterio.cli import app
from killresume import kill_then_resume, python_argv, without_timings

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # the uninterrupted run in this process, as the subprocesses run


def test_ep_train_killed_at_a_random_point_resumes_bit_for_bit(tmp_path):
    def args(out):
        return ["ep", "train", "xor", "--epochs", "100", "--out", str(out), "--no-progress"]

    clean, killed = tmp_path / "clean", tmp_path / "killed"
    result = CliRunner().invoke(app, args(clean))  # the uninterrupted reference, in this process (one process start saved)
    assert result.exit_code == 0, result.output
    report = kill_then_resume(python_argv("-m", "inmaterio", *args(killed)), killed / "checkpoint.pt", seed=14, max_delay_s=1.5)
    assert report.killed_while_running, report
    states = [torch.load(d / "checkpoint.pt", weights_only=True)["state"] for d in (clean, killed)]
    for key, value in states[0]["parameters"].items():
        assert torch.equal(value, states[1]["parameters"][key]), (key, report)
    assert without_timings(history_of(states[0])) == without_timings(history_of(states[1])), report
    history = [json.loads((d / "history.json").read_text()) for d in (clean, killed)]
    assert len(history[0]) == 100 and without_timings(history[0]) == without_timings(history[1]), report
    summaries = [json.loads((d / "summary.json").read_text()) for d in (clean, killed)]
    assert [(s["train"], s["test"]) for s in summaries][0] == [(s["train"], s["test"]) for s in summaries][1], report
    record = json.loads((killed / "run.json").read_text())
    assert record["state"] == "finished" and record["sessions"] == 2, record
