"""The run folder (inmaterio.runs): life cycle, identity check, refusals, atomic writes and rescue, signals."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from inmaterio import runs
from inmaterio.errors import ConfigError, ModelFileError, RunFolderError, RunInterrupted
from inmaterio.runs import identity_differences, open_run, read_run

KIND = "inmaterio.test"
IDENTITY = {"config": {"lr": 0.01, "epochs": 3, "nested": {"a": 1}}, "data": "abc"}


def _quiet(_msg: str) -> None:
    pass


def test_new_run_writes_record_config_and_finishes(tmp_path):
    folder = tmp_path / "deep" / "run"
    with open_run(folder, KIND, identity=IDENTITY, config={"lr": 0.01}, notify=_quiet) as run:
        assert not run.finished and not run.resumed and run.state == "running"
        assert read_run(folder)["state"] == "running"  # the probe write happened before any work
        assert run.load_checkpoint() is None
        run.save_checkpoint({"epoch": 1, "w": torch.arange(3.0)})
        run.write_history([{"epoch": 1, "loss": 0.5}, {"epoch": 2, "loss": 0.25, "acc": 1.0}])
        run.finish({"loss": 0.25})
    record = read_run(folder)
    assert record["state"] == "finished" and record["kind"] == KIND and record["sessions"] == 1
    assert record["identity"] == IDENTITY and len(record["fingerprint"]) == 64
    assert record["wall_s"] >= 0 and record["ended"] is not None
    assert (folder / "config.yaml").read_text().strip() == "lr: 0.01"
    assert json.loads((folder / "metrics.json").read_text())["loss"] == 0.25
    assert (folder / "history.csv").read_text() == "epoch,loss,acc\n1,0.5,\n2,0.25,1.0\n"
    # a finished run opens finished: nothing is rewritten
    before = (folder / "run.json").read_text()
    with open_run(folder, KIND, identity=IDENTITY, notify=_quiet) as run:
        assert run.finished and run.metrics()["loss"] == 0.25
    assert (folder / "run.json").read_text() == before


def test_interrupted_run_resumes_with_checkpoint_and_summed_wall_time(tmp_path):
    with pytest.raises(RunInterrupted, match="run the same command again to resume") as info:
        with open_run(tmp_path / "r", KIND, identity=IDENTITY, notify=_quiet) as run:
            run.save_checkpoint({"epoch": 2})
            time.sleep(0.05)
            raise KeyboardInterrupt
    assert str(tmp_path / "r") in str(info.value)
    record = read_run(tmp_path / "r")
    assert record["state"] == "interrupted" and record["wall_s"] >= 0.05
    messages = []
    with open_run(tmp_path / "r", KIND, identity=IDENTITY, notify=messages.append) as run:
        assert run.resumed and run.load_checkpoint() == {"epoch": 2}
        assert run.wall_s >= 0.05
        run.finish()
    assert "resuming the interrupted run" in messages[0]
    assert read_run(tmp_path / "r")["sessions"] == 2


def test_failure_is_recorded_and_resumable(tmp_path):
    with pytest.raises(ValueError):
        with open_run(tmp_path / "r", KIND, identity=IDENTITY, notify=_quiet) as run:
            run.save_checkpoint({"step": 5})
            raise ValueError("boom")
    record = read_run(tmp_path / "r")
    assert record["state"] == "failed" and record["error"] == "ValueError: boom"
    with open_run(tmp_path / "r", KIND, identity=IDENTITY, notify=_quiet) as run:
        assert run.resumed and run.load_checkpoint() == {"step": 5}
    assert "error" not in read_run(tmp_path / "r")


def test_other_identity_is_refused_naming_each_field(tmp_path):
    with open_run(tmp_path / "r", KIND, identity=IDENTITY, notify=_quiet) as run:
        run.save_checkpoint({"x": 1})
    other = {"config": {"lr": 0.02, "epochs": 3, "nested": {"a": 2}}, "data": "abc", "device": "x"}
    before = {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir() if p.is_file()}
    with pytest.raises(ConfigError) as info:
        open_run(tmp_path / "r", KIND, identity=other, notify=_quiet)
    message = str(info.value)
    assert "config.lr: 0.01 in the folder, 0.02 now" in message
    assert "config.nested.a: 1 in the folder, 2 now" in message
    assert "device: absent in the folder, 'x' now" in message
    assert "epochs" not in message
    assert {p.name: p.read_bytes() for p in (tmp_path / "r").iterdir() if p.is_file()} == before


def test_identity_differences_lists_only_differences():
    assert identity_differences({"a": (1, 2), "b": {"c": 1}}, {"a": [1, 2], "b": {"c": 1}}) == []
    assert identity_differences({"a": 1}, {"b": 1}) == ["a: 1 in the folder, absent now", "b: absent in the folder, 1 now"]


def test_foreign_folder_file_and_other_kind_are_refused_untouched(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(RunFolderError, match=r"not a run folder \(it holds notes.txt"):
        open_run(foreign, KIND, identity=IDENTITY, overwrite=True, notify=_quiet)
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]

    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        open_run(a_file, KIND, identity=IDENTITY, notify=_quiet)
    with pytest.raises(RunFolderError, match="is a file, so the run folder"):
        open_run(a_file / "sub", KIND, identity=IDENTITY, notify=_quiet)

    with open_run(tmp_path / "gd", "inmaterio.other", identity=IDENTITY, notify=_quiet) as run:
        run.finish({})
    before = (tmp_path / "gd" / "run.json").read_text()
    with pytest.raises(RunFolderError, match="holds a run of kind 'inmaterio.other', not 'inmaterio.test'"):
        open_run(tmp_path / "gd", KIND, identity=IDENTITY, overwrite=True, notify=_quiet)
    assert (tmp_path / "gd" / "run.json").read_text() == before


def test_corrupt_or_foreign_run_record_and_checkpoint(tmp_path):
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "run.json").write_bytes(b"\x89PNG\x00\xff")
    with pytest.raises(RunFolderError, match="cannot be read as a run record"):
        open_run(folder, KIND, identity=IDENTITY, notify=_quiet)
    (folder / "run.json").write_text(json.dumps({"format": "something"}))
    with pytest.raises(RunFolderError, match="not an inmaterio run record"):
        open_run(folder, KIND, identity=IDENTITY, notify=_quiet)
    (folder / "run.json").write_text(json.dumps({"format": "inmaterio.run", "format_version": 99}))
    with pytest.raises(RunFolderError, match="format version 99"):
        open_run(folder, KIND, identity=IDENTITY, notify=_quiet)

    with open_run(tmp_path / "c", KIND, identity=IDENTITY, notify=_quiet) as run:
        run.save_checkpoint({"x": 1})
    ckpt = tmp_path / "c" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:40])  # truncated
    with open_run(tmp_path / "c", KIND, identity=IDENTITY, notify=_quiet) as run:
        with pytest.raises(ModelFileError, match="cannot be read"):
            run.load_checkpoint()
    torch.save({"format": "inmaterio.run.checkpoint", "kind": "inmaterio.other", "state": {}}, ckpt)
    with open_run(tmp_path / "c", KIND, identity=IDENTITY, notify=_quiet) as run:
        with pytest.raises(ModelFileError, match="belongs to a run of kind 'inmaterio.other'"):
            run.load_checkpoint()


def test_malicious_pickle_checkpoint_is_not_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open_run(tmp_path / "c", KIND, identity=IDENTITY, notify=_quiet) as run:
        pass
    torch.save({"format": "inmaterio.run.checkpoint", "kind": KIND, "state": Payload()}, tmp_path / "c" / "checkpoint.pt")
    with open_run(tmp_path / "c", KIND, identity=IDENTITY, notify=_quiet) as run:
        with pytest.raises(ModelFileError, match="cannot be read"):
            run.load_checkpoint()
    assert not marker.exists()
    torch.load(tmp_path / "c" / "checkpoint.pt", weights_only=False)  # the payload is real: it runs when unpickled
    assert marker.exists()


def test_overwrite_deletes_a_finished_run_and_moves_an_unfinished_one_aside(tmp_path):
    folder = tmp_path / "r"
    with open_run(folder, KIND, identity=IDENTITY, notify=_quiet) as run:
        run.write_json("extra.json", {"a": 1})
        run.finish({"done": True})
    messages = []
    with open_run(folder, KIND, identity={"other": 1}, overwrite=True, notify=messages.append) as run:
        assert not run.resumed and not (folder / "extra.json").exists() and not (folder / "metrics.json").exists()
        run.save_checkpoint({"step": 1})
    assert "replacing the finished run" in messages[0]
    messages.clear()
    with open_run(folder, KIND, identity={"other": 1}, overwrite=True, notify=messages.append):
        pass
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("r.replaced-")]
    assert len(aside) == 1 and str(aside[0]) in messages[0]
    assert (aside[0] / "checkpoint.pt").exists() and read_run(aside[0])["identity"] == {"other": 1}


def test_a_folder_in_use_is_refused(tmp_path):
    with open_run(tmp_path / "r", KIND, identity=IDENTITY, notify=_quiet):
        with pytest.raises(RunFolderError, match="in use by another process"):
            open_run(tmp_path / "r", KIND, identity=IDENTITY, notify=_quiet)
    with open_run(tmp_path / "r", KIND, identity=IDENTITY, notify=_quiet):  # released after the with-block
        pass


def test_full_disk_is_detected_before_work(tmp_path, monkeypatch):
    monkeypatch.setattr(runs.shutil, "disk_usage", lambda p: type("U", (), {"free": 1000})())
    with pytest.raises(RunFolderError, match=r"has 0\.0 MiB free, this run needs at least 1\.0 MiB"):
        open_run(tmp_path / "r", KIND, identity=IDENTITY, notify=_quiet)


def _failing_writes(monkeypatch, folder: Path, code: int) -> None:
    real = runs.atomic_path

    @contextlib.contextmanager
    def atomic_path(path):
        if Path(path).parent == folder:
            raise OSError(code, os.strerror(code))
        with real(path) as tmp:
            yield tmp

    monkeypatch.setattr(runs, "atomic_path", atomic_path)


@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "the disk is full"), (errno.EROFS, "read-only")])
def test_unwritable_folder_fails_at_open(tmp_path, monkeypatch, code, reason):
    folder = tmp_path / "r"
    _failing_writes(monkeypatch, folder, code)
    with pytest.raises(RunFolderError, match=f"not usable: could not write.*{reason}"):
        open_run(folder, KIND, identity=IDENTITY, notify=_quiet)


def test_a_failed_checkpoint_write_is_rescued_and_the_old_one_kept(tmp_path, monkeypatch):
    (tmp_path / "tmp").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    monkeypatch.setattr(runs.tempfile, "tempdir", None)
    folder = tmp_path / "r"
    with pytest.raises(RunFolderError) as info:
        with open_run(folder, KIND, identity=IDENTITY, notify=_quiet) as run:
            run.save_checkpoint({"epoch": 1})
            _failing_writes(monkeypatch, folder, errno.ENOSPC)
            run.save_checkpoint({"epoch": 2, "w": torch.ones(2)})
    message = str(info.value)
    assert "could not write the checkpoint" in message and "the disk is full" in message
    rescued = Path(message.split("saved to '")[1].split("'")[0])
    assert rescued.is_relative_to(tmp_path / "tmp")
    assert torch.load(rescued, weights_only=True)["state"]["epoch"] == 2
    monkeypatch.undo()
    with open_run(folder, KIND, identity=IDENTITY, notify=_quiet) as run:
        assert run.load_checkpoint() == {"epoch": 1}


def test_sigterm_leaves_an_interrupted_resumable_run(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        from inmaterio.runs import open_run
        from inmaterio.errors import RunInterrupted
        try:
            with open_run({str(tmp_path / "r")!r}, "inmaterio.test", identity={{}}) as run:
                run.save_checkpoint({{"step": 3}})
                print("ready", flush=True)
                time.sleep(60)
        except RunInterrupted as err:
            print("INTERRUPTED:", err, flush=True)
            sys.exit(130)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert "ready" in line
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert "terminated (SIGTERM)" in out and "run the same command again to resume" in out
    assert read_run(tmp_path / "r")["state"] == "interrupted"


def test_a_killed_run_resumes_from_its_last_checkpoint(tmp_path):
    script = f"""
from inmaterio.runs import open_run
import os, signal
with open_run({str(tmp_path / "r")!r}, "inmaterio.test", identity={{}}) as run:
    run.save_checkpoint({{"step": 7}})
    os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert read_run(tmp_path / "r")["state"] == "running"  # nobody could mark it
    with open_run(tmp_path / "r", KIND, identity={}, notify=_quiet) as run:
        assert run.resumed and run.load_checkpoint() == {"step": 7}


def test_an_interrupt_inside_a_nested_run_marks_both_interrupted_and_names_the_outer(tmp_path):
    outer_path, inner_path = tmp_path / "outer", tmp_path / "outer" / "inner"
    with pytest.raises(RunInterrupted) as info:
        with open_run(outer_path, "inmaterio.outer", identity={}, notify=_quiet):
            with open_run(inner_path, KIND, identity={}, notify=_quiet) as inner:
                inner.save_checkpoint({"step": 1})
                raise KeyboardInterrupt
    assert read_run(outer_path)["state"] == "interrupted" and read_run(inner_path)["state"] == "interrupted"
    assert f"'{outer_path}' holds the run" in str(info.value)


def test_a_finished_run_can_be_reopened_to_continue(tmp_path):
    with open_run(tmp_path / "r", KIND, identity=IDENTITY, config={"epochs": 3}, notify=_quiet) as run:
        time.sleep(0.02)
        run.finish({"epochs": 3})
    wall = read_run(tmp_path / "r")["wall_s"]
    with open_run(tmp_path / "r", KIND, identity=IDENTITY, notify=_quiet) as run:
        assert run.finished
        run.reopen(config={"epochs": 5})
        assert run.state == "running" and run.resumed and read_run(tmp_path / "r")["sessions"] == 2
        assert (tmp_path / "r" / "config.yaml").read_text().strip() == "epochs: 5"
        time.sleep(0.02)
        run.finish({"epochs": 5})
    record = read_run(tmp_path / "r")
    assert record["state"] == "finished" and record["wall_s"] >= wall + 0.02
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["epochs"] == 5
