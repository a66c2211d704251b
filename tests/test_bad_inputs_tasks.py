"""Bad inputs to ``inmaterio run`` / ``inmaterio report`` and to the run folder: one line, exit code 2, nothing lost.

Each row is a bad input a user could give; the check asserts the exact error
(CLI: exit code 2, one line, no traceback; API: the error class), that the
message names the field, the value and what is allowed, and that files
already saved are unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bad_inputs import BadInput, expect_api_error, expect_cli_error, table_ids
from inmaterio.cli import app
from inmaterio.errors import ConfigError
from inmaterio.runs import open_run
from inmaterio.tasks.registry import load_run_config, parse_run_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

GATES = "task: {type: gates, gates: [AND], attempts: 1, gd: {epochs: 3}}\nvalidation: {enabled: false}\nseed: 0\n"


def _config(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _run(tmp_path: Path, text: str, match: str, out: str = "out", **kw) -> None:
    expect_cli_error(app, ["run", str(_config(tmp_path, text)), "--out", str(tmp_path / out), "--no-progress"], match, **kw)


def _finished_run(tmp_path: Path) -> Path:
    """A finished gates run in tmp_path/out (made with the API, as a user's earlier run)."""
    from inmaterio.tasks.run import run_task

    out = tmp_path / "out"
    run_task(load_run_config(_config(tmp_path, GATES, "first.yaml")), out, progress=False)
    return out


def _other_seed_is_refused(tmp_path: Path) -> None:
    out = _finished_run(tmp_path)
    _run(tmp_path, GATES.replace("seed: 0", "seed: 3"), r"config\.seed: 0 in the folder, 3 now.*--overwrite", unchanged=[out])


def _binary_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes(bytes(range(256)))
    expect_cli_error(app, ["run", str(path), "--out", str(tmp_path / "out")], r"'.*c\.yaml' is not UTF-8 text")
    assert not (tmp_path / "out").exists()


def _latin1_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_bytes("task: {type: gates}\n# température\n".encode("latin-1"))
    expect_api_error(lambda: load_run_config(path), ConfigError, r"is not UTF-8 text \(bad byte at offset 26\)")


def _out_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "out").write_text("my notes")
    _run(tmp_path, GATES, r"'.*out' is a file, not a folder", unchanged=[tmp_path / "out"])


def _out_is_foreign(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thesis.tex").write_text("chapter 1")
    _run(tmp_path, GATES, r"is not a run folder \(it holds thesis\.tex and no run\.json\)", unchanged=[tmp_path / "out"])


def _out_of_another_kind(tmp_path: Path) -> None:
    with open_run(tmp_path / "out", "inmaterio.smg", identity={}, notify=lambda m: None) as run:
        run.finish({})
    _run(tmp_path, GATES, r"holds a run of kind 'inmaterio\.smg', not 'inmaterio\.task\.gates'", unchanged=[tmp_path / "out"])


def _out_in_use(tmp_path: Path) -> None:
    with open_run(tmp_path / "out", "inmaterio.task.gates", identity={}, notify=lambda m: None):
        _run(tmp_path, GATES, r"is in use by another process \(pid \d+", unchanged=[])


def _out_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("x")
    _run(tmp_path, GATES, r"'.*blocker' is a file, so the run folder", out="blocker/run", unchanged=[tmp_path / "blocker"])


def _report_of_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    expect_cli_error(app, ["report", str(tmp_path / "empty")], r"is not a run folder and holds none")


def _report_missing(tmp_path: Path) -> None:
    expect_cli_error(app, ["report", str(tmp_path / "nowhere")], r"'.*nowhere' does not exist")


def _report_damaged_record(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "run.json").write_text("{not json")
    expect_cli_error(app, ["report", str(tmp_path / "r")], r"run\.json' cannot be read as a run record")


def _report_out_is_a_folder(tmp_path: Path) -> None:
    out = _finished_run(tmp_path)
    expect_cli_error(app, ["report", str(out), "--out", str(tmp_path)], r"cannot write the report to '.*': it is a folder")


ROWS = [
    BadInput(
        "unknown-key",
        "a misspelt key (gatez)",
        lambda t: _run(t, "task: {type: gates, gatez: [AND]}\n", r"unknown key 'task\.gates\.gatez' \(value \['AND'\]\)"),
    ),
    BadInput(
        "unknown-top-key",
        "an unknown top-level key",
        lambda t: _run(t, "task: {type: gates}\nseeed: 1\n", r"unknown key 'seeed' \(value 1\)"),
    ),
    BadInput(
        "unknown-type",
        "task type mnist_100",
        lambda t: _run(t, "task: {type: mnist_100}\n", r"unknown task type 'mnist_100'; choose one of \[.*'gates'"),
    ),
    BadInput(
        "no-task",
        "a config without task",
        lambda t: _run(t, "seed: 0\n", r"'task' must be a mapping with a 'type'.*got task = None"),
    ),
    BadInput(
        "not-a-mapping",
        "a YAML list instead of a mapping",
        lambda t: _run(t, "- gates\n", r"expected a mapping with a 'task' key, got list"),
    ),
    BadInput("bad-yaml", "broken YAML", lambda t: _run(t, "task: [gates\n", r"is not valid YAML")),
    BadInput("binary-config", "a binary file as config", _binary_config),
    BadInput("latin1-config", "a Latin-1 config file", _latin1_config),
    BadInput(
        "config-folder",
        "a folder given as config",
        lambda t: expect_cli_error(app, ["run", str(t)], r"configuration file '.*' does not exist \(it is a folder\)"),
    ),
    BadInput(
        "lr-inf",
        "learning_rate: .inf",
        lambda t: _run(
            t,
            "task: {type: gates, gd: {learning_rate: .inf}}\n",
            r"task\.gates\.gd\.learning_rate' = inf: Input should be a finite number",
        ),
    ),
    BadInput(
        "lr-nan",
        "learning_rate: .nan",
        lambda t: _run(t, "task: {type: rings, gd: {learning_rate: .nan}}\n", r"task\.rings\.gd\.learning_rate' = nan"),
    ),
    BadInput(
        "lr-negative",
        "learning_rate: -0.1",
        lambda t: _run(
            t, "task: {type: gates, gd: {learning_rate: -0.1}}\n", r"learning_rate' = -0\.1: Input should be greater than 0"
        ),
    ),
    BadInput(
        "epochs-zero",
        "epochs: 0",
        lambda t: _run(
            t, "task: {type: gates, gd: {epochs: 0}}\n", r"gd\.epochs' = 0: Input should be greater than or equal to 1"
        ),
    ),
    BadInput(
        "attempts-string",
        "attempts: many",
        lambda t: _run(
            t, "task: {type: gates, attempts: many}\n", r"task\.gates\.attempts' = 'many': expected an integer, not str"
        ),
    ),
    BadInput(
        "epochs-bool",
        "epochs: true",
        lambda t: _run(
            t, "task: {type: gates, gd: {epochs: true}}\n", r"task\.gates\.gd\.epochs' = True: expected an integer, not bool"
        ),
    ),
    BadInput(
        "gap-too-big",
        "rings gap 2",
        lambda t: _run(t, "task: {type: rings, gap: 2}\n", r"task\.rings\.gap' = 2: Input should be less than 1\.4"),
    ),
    BadInput(
        "n-points",
        "capacity N = 11",
        lambda t: _run(
            t,
            "task: {type: capacity, n_points: [4, 11]}\n",
            r"n_points must be a non-empty list of values in 4\.\.10, got \[4, 11\]",
        ),
    ),
    BadInput(
        "electrode",
        "input electrode e9",
        lambda t: _run(
            t, "task: {type: gates, input_electrodes: [e3, e9]}\nvalidation: {enabled: false}\n", r"unknown input electrode 'e9'"
        ),
    ),
    BadInput(
        "surrogate-missing",
        "a surrogate folder that does not exist",
        lambda t: _run(t, f"task: {{type: gates}}\nsurrogate: {{model_dir: {t / 'nope'}}}\n", r"'.*nope'"),
    ),
    BadInput(
        "rings-refine-candidates",
        "task.refine.candidates 2 on the rings' one network",
        lambda t: _run(
            t,
            "task: {type: rings, refine: {candidates: 2}}\n",
            r"refine\.candidates: the ring task refines its one trained network; give 1, got 2",
        ),
    ),
    BadInput(
        "predictive-noise-single",
        "surrogate.predictive_noise on one model",
        lambda t: _run(
            t, f"task: {{type: gates}}\nsurrogate: {{model_dir: {t}, predictive_noise: true}}\n", r"set ensemble: true"
        ),
    ),
    BadInput("other-seed", "the same --out with another seed", _other_seed_is_refused),
    BadInput("out-file", "--out is an existing file", _out_is_a_file),
    BadInput("out-foreign", "--out is a folder of other files", _out_is_foreign),
    BadInput("out-other-kind", "--out holds another kind of run", _out_of_another_kind),
    BadInput("out-busy", "--out is used by another process", _out_in_use),
    BadInput("out-under-file", "--out inside a path that is a file", _out_under_a_file),
    BadInput("report-empty", "report of a folder without runs", _report_of_nothing),
    BadInput("report-missing", "report of a missing folder", _report_missing),
    BadInput("report-damaged", "report of a damaged run.json", _report_damaged_record),
    BadInput("report-out-folder", "report --out is a folder", _report_out_is_a_folder),
    BadInput("no-config", "run without a config", lambda t: expect_cli_error(app, ["run"], r"give a task or study YAML")),
    BadInput(
        "api-not-mapping",
        "parse_run_config of a string",
        lambda t: expect_api_error(
            lambda: parse_run_config("gates"), ConfigError, r"expected a mapping with a 'task' key, got str"
        ),
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=table_ids(ROWS))
def test_bad_input(row: BadInput, tmp_path: Path) -> None:
    row.check(tmp_path)


def test_a_refused_run_leaves_no_folder(tmp_path):
    _run(tmp_path, "task: {type: gates, gd: {learning_rate: .inf}}\n", r"finite number")
    assert not (tmp_path / "out").exists()


def test_the_interrupted_run_record_is_intact_after_a_refusal(tmp_path):
    out = _finished_run(tmp_path)
    before = json.loads((out / "run.json").read_text())
    _run(tmp_path, GATES.replace("epochs: 3", "epochs: 4"), r"config\.task\.gd\.epochs: 3 in the folder, 4 now")
    assert json.loads((out / "run.json").read_text()) == before
