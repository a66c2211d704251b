"""Bad inputs to the training stack (GDConfig, GAConfig, train_gd, the genetic algorithm and their run folders).

Each row is a bad input a user could give through the Python API; the check
asserts the exact error class, that the message names the field or value and
what is allowed, and that files already saved are unchanged. (The same
configs reached through ``inmaterio run`` are rows of test_bad_inputs_tasks.py.)
"""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bad_inputs import BadInput, expect_api_error, table_ids
from inmaterio.config import load_config, validate_config
from inmaterio.errors import ConfigError, ModelFileError, RunFolderError
from inmaterio.runs import CHECKPOINT_FILE, RUN_FILE
from inmaterio.training.ga import GAConfig, GeneticAlgorithm
from inmaterio.training.gd import GDConfig, train_gd
from inmaterio.training.losses import get_loss

pytestmark = pytest.mark.usefixtures("one_torch_thread")

X = torch.linspace(-1, 1, 12)[:, None]
Y = 2 * X[:, 0] + 1
BOUNDS = torch.tensor([[-1.0, 1.0]] * 3)


def mse(out, target):
    return ((out.squeeze(-1) - target) ** 2).mean()


def _gd(data=(X, Y), config=None, **kw):
    x, y = data
    return lambda: train_gd(nn.Linear(1, 1), mse, x, y, config or GDConfig(epochs=2), **kw)


def _gd_config(fields: dict, match: str) -> None:
    expect_api_error(lambda: validate_config(GDConfig, fields), ConfigError, match)


def _ga_config(fields: dict, match: str) -> None:
    expect_api_error(lambda: validate_config(GAConfig, fields), ConfigError, match)


def _yaml_learning_rate_inf(tmp_path: Path) -> None:
    path = tmp_path / "gd.yaml"
    path.write_text("learning_rate: .inf\nepochs: 5\n")
    expect_api_error(
        lambda: load_config(GDConfig, path), ConfigError, r"field 'learning_rate' = inf: Input should be a finite number"
    )


def _gd_run(folder: Path, epochs: int = 3) -> Path:
    """A finished train_gd run in ``folder`` (a user's earlier run)."""
    train_gd(nn.Linear(1, 1), mse, X, Y, GDConfig(epochs=epochs), directory=folder)
    return folder


def _interrupted_gd_run(folder: Path) -> Path:
    """An unfinished train_gd run: its checkpoint would be read on the next call."""
    calls = {"n": 0}

    def stop_in_epoch_2(out, target):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return 0.0

    with pytest.raises(KeyboardInterrupt):
        train_gd(nn.Linear(1, 1), mse, X, Y, GDConfig(epochs=3), directory=folder, metrics={"m": stop_in_epoch_2})
    return folder


def _resume(folder: Path, **kw):
    return lambda: train_gd(
        nn.Linear(1, 1), mse, X, Y, GDConfig(epochs=3), directory=folder, metrics={"m": lambda o, t: 0.0}, **kw
    )


def _truncated_checkpoint(tmp_path: Path) -> None:
    folder = _interrupted_gd_run(tmp_path / "run")
    data = (folder / CHECKPOINT_FILE).read_bytes()
    (folder / CHECKPOINT_FILE).write_bytes(data[: len(data) // 2])
    expect_api_error(_resume(folder), ModelFileError, r"checkpoint '.*checkpoint\.pt' cannot be read .*--overwrite",
                     unchanged=[folder / CHECKPOINT_FILE])  # fmt: skip


def _foreign_checkpoint(tmp_path: Path) -> None:
    folder = _interrupted_gd_run(tmp_path / "run")
    torch.save({"weights": torch.zeros(3)}, folder / CHECKPOINT_FILE)  # someone else's torch file
    expect_api_error(
        _resume(folder),
        ModelFileError,
        r"'.*checkpoint\.pt' is not an inmaterio checkpoint",
        unchanged=[folder / CHECKPOINT_FILE],
    )


def _checkpoint_of_another_kind(tmp_path: Path) -> None:
    folder = _interrupted_gd_run(tmp_path / "run")
    calls = {"n": 0}

    def stop(generation, so_far):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        GeneticAlgorithm(GAConfig(generations=5), BOUNDS).evolve(lambda p: -p.sum(1), callback=stop, directory=tmp_path / "ga")
    (folder / CHECKPOINT_FILE).write_bytes((tmp_path / "ga" / CHECKPOINT_FILE).read_bytes())
    expect_api_error(_resume(folder), ModelFileError, r"belongs to a run of kind 'inmaterio\.training\.ga', not 'inmaterio\.training\.gd'",
                     unchanged=[folder / CHECKPOINT_FILE])  # fmt: skip


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "the payload ran"))


def _malicious_checkpoint(tmp_path: Path) -> None:
    folder = _interrupted_gd_run(tmp_path / "run")
    marker = tmp_path / "pwned"
    # first prove the payload runs when unpickled without protection
    pickle.loads(pickle.dumps(_Payload(marker)))
    assert marker.read_text() == "the payload ran"
    marker.unlink()
    torch.save(
        {"format": "inmaterio.run.checkpoint", "kind": "inmaterio.training.gd", "state": _Payload(marker)},
        folder / CHECKPOINT_FILE,
    )
    expect_api_error(_resume(folder), ModelFileError, r"checkpoint '.*checkpoint\.pt' cannot be read \(UnpicklingError")
    assert not marker.exists()


def _checkpoint_missing_fields(tmp_path: Path) -> None:
    folder = _interrupted_gd_run(tmp_path / "run")
    payload = torch.load(folder / CHECKPOINT_FILE, weights_only=True)
    del payload["state"]["packed"]
    torch.save(payload, folder / CHECKPOINT_FILE)
    expect_api_error(_resume(folder), ModelFileError, r"does not fit this run \(KeyError: 'packed'\).*overwrite=True",
                     unchanged=[folder / CHECKPOINT_FILE])  # fmt: skip


def _directory_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("my notes")
    expect_api_error(_gd(directory=path), RunFolderError, r"'.*notes\.txt' is a file, not a folder", unchanged=[path])


def _directory_is_foreign(tmp_path: Path) -> None:
    folder = tmp_path / "thesis"
    folder.mkdir()
    (folder / "chapter1.tex").write_text("...")
    expect_api_error(
        _gd(directory=folder),
        RunFolderError,
        r"is not a run folder \(it holds chapter1\.tex and no run\.json\)",
        unchanged=[folder],
    )
    assert sorted(p.name for p in folder.iterdir()) == ["chapter1.tex"]


def _directory_of_a_ga_run(tmp_path: Path) -> None:
    folder = tmp_path / "ga"
    GeneticAlgorithm(GAConfig(generations=2), BOUNDS).evolve(lambda p: -p.sum(1), directory=folder)
    expect_api_error(_gd(directory=folder), RunFolderError, r"holds a run of kind 'inmaterio\.training\.ga', not 'inmaterio\.training\.gd'",
                     unchanged=[folder])  # fmt: skip


def _ga_in_a_gd_folder(tmp_path: Path) -> None:
    folder = _gd_run(tmp_path / "gd")
    expect_api_error(lambda: GeneticAlgorithm(GAConfig(generations=2), BOUNDS).evolve(lambda p: -p.sum(1), directory=folder),
                     RunFolderError, r"holds a run of kind 'inmaterio\.training\.gd', not 'inmaterio\.training\.ga'", unchanged=[folder])  # fmt: skip


def _resume_with_other_config(tmp_path: Path) -> None:
    folder = _interrupted_gd_run(tmp_path / "run")
    expect_api_error(
        lambda: train_gd(nn.Linear(1, 1), mse, X, Y, GDConfig(epochs=3, learning_rate=0.05, batch_size=4), directory=folder,
                         metrics={"m": lambda o, t: 0.0}),
        ConfigError,
        r"holds an? interrupted run .* config\.batch_size: None in the folder, 4 now; config\.learning_rate: 0\.01 in the folder, 0\.05 now; "
        r"optimizer\.param_groups\.group 0\.lr: 0\.01 in the folder, 0\.05 now; run with the same settings to resume",
        unchanged=[folder / CHECKPOINT_FILE, folder / "history.json"],
    )  # fmt: skip


def _ga_resume_with_other_bounds(tmp_path: Path) -> None:
    folder = tmp_path / "ga"
    GeneticAlgorithm(GAConfig(generations=2), BOUNDS).evolve(lambda p: -p.sum(1), directory=folder)
    other = BOUNDS.clone()
    other[1, 0] = -0.5
    expect_api_error(lambda: GeneticAlgorithm(GAConfig(generations=2), other).evolve(lambda p: -p.sum(1), directory=folder),
                     ConfigError, r"bounds\.gene 1: \[-1\.0, 1\.0\] in the folder, \[-0\.5, 1\.0\] now", unchanged=[folder])  # fmt: skip


def _damaged_run_record(tmp_path: Path) -> None:
    folder = _gd_run(tmp_path / "run")
    (folder / RUN_FILE).write_text("{not json")
    expect_api_error(_gd(directory=folder), RunFolderError, r"run\.json' cannot be read as a run record", unchanged=[folder])


def _nan_in_inputs(tmp_path: Path) -> None:
    x = X.clone()
    x[3, 0] = math.nan
    expect_api_error(_gd((x, Y)), ConfigError, r"training inputs hold nan at sample 3; every value must be finite")
    assert not any(tmp_path.iterdir())


def _inf_in_targets(tmp_path: Path) -> None:
    y = Y.clone()
    y[7] = -math.inf
    expect_api_error(_gd((X, y), directory=tmp_path / "run"), ConfigError, r"training targets hold -inf at sample 7")
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


def _nan_in_validation(tmp_path: Path) -> None:
    xv = X[:4].clone()
    xv[2, 0] = math.nan
    expect_api_error(_gd(validation=(xv, Y[:4])), ConfigError, r"validation inputs hold nan at sample 2")


def _integer_inputs(tmp_path: Path) -> None:
    expect_api_error(
        _gd((torch.arange(12)[:, None], Y)), ConfigError, r"training inputs have dtype torch\.int64; give floating-point inputs"
    )


def _numpy_inputs(tmp_path: Path) -> None:
    expect_api_error(_gd((X.numpy(), Y)), ConfigError, r"training inputs and targets must be torch tensors, got ndarray, Tensor")


def _mismatched_lengths(tmp_path: Path) -> None:
    expect_api_error(_gd((X, Y[:10])), ConfigError, r"training inputs have 12 samples but targets 10")


def _empty_data(tmp_path: Path) -> None:
    expect_api_error(_gd((X[:0], Y[:0])), ConfigError, r"training data are empty \(0 samples\)")


def _complex_targets(tmp_path: Path) -> None:
    expect_api_error(_gd((X, Y.to(torch.complex64))), ConfigError, r"training targets have the complex dtype torch\.complex64")


def _unknown_select_by(tmp_path: Path) -> None:
    expect_api_error(_gd(config=GDConfig(epochs=2, select_by="accuracy")), ConfigError,
                     r"select_by 'accuracy' is not a value of this run; choose one of: loss, train_loss")  # fmt: skip


def _not_a_scheduler(tmp_path: Path) -> None:
    expect_api_error(
        _gd(scheduler=lambda opt: 0.5), ConfigError, r"scheduler must be a torch\.optim\.lr_scheduler instance .* got float"
    )


def _ga_fitness_shape(tmp_path: Path) -> None:
    ga = GeneticAlgorithm(GAConfig(generations=2), BOUNDS)
    expect_api_error(lambda: ga.evolve(lambda p: np.zeros(3)), ConfigError,
                     r"fitness_fn returned shape \(3,\) for a population of shape \(26, 3\); expected \(26,\)")  # fmt: skip


def _ga_bounds_nan(tmp_path: Path) -> None:
    expect_api_error(lambda: GeneticAlgorithm(GAConfig(), torch.tensor([[0.0, 1.0], [math.nan, 1.0]])), ConfigError,
                     r"gene 1 bounds \[nan, 1\] are not finite")  # fmt: skip


ROWS = [
    BadInput("gd-lr-inf-yaml", "learning_rate: .inf in a GDConfig YAML", _yaml_learning_rate_inf),
    BadInput("gd-lr-nan", "learning_rate NaN", lambda t: _gd_config({"learning_rate": math.nan}, r"field 'learning_rate' = nan: Input should be a finite number")),
    BadInput("gd-lr-zero", "learning_rate 0", lambda t: _gd_config({"learning_rate": 0}, r"field 'learning_rate' = 0: Input should be greater than 0")),
    BadInput("gd-lr-negative", "learning_rate -0.01", lambda t: _gd_config({"learning_rate": -0.01}, r"field 'learning_rate' = -0\.01: Input should be greater than 0")),
    BadInput("gd-weight-decay-inf", "weight_decay inf", lambda t: _gd_config({"weight_decay": math.inf}, r"field 'weight_decay' = inf: Input should be a finite number")),
    BadInput("gd-regularization-negative", "regularization_weight -1", lambda t: _gd_config({"regularization_weight": -1}, r"'regularization_weight' = -1: Input should be greater than or equal to 0")),
    BadInput("gd-epochs-zero", "epochs 0", lambda t: _gd_config({"epochs": 0}, r"field 'epochs' = 0: Input should be greater than or equal to 1")),
    BadInput("gd-epochs-negative", "epochs -5", lambda t: _gd_config({"epochs": -5}, r"field 'epochs' = -5: Input should be greater than or equal to 1")),
    BadInput("gd-epochs-fraction", "epochs 2.5", lambda t: _gd_config({"epochs": 2.5}, r"field 'epochs' = 2\.5: Input should be a valid integer")),
    BadInput("gd-betas-one", "betas [0.9, 1.0]", lambda t: _gd_config({"betas": [0.9, 1.0]}, r"field 'betas' = \[0\.9, 1\.0\]: .*must both lie in \[0, 1\)")),
    BadInput("gd-betas-nan", "betas [nan, 0.999]", lambda t: _gd_config({"betas": [math.nan, 0.999]}, r"field 'betas\.0' = nan: Input should be a finite number")),
    BadInput("gd-batch-size-zero", "batch_size 0", lambda t: _gd_config({"batch_size": 0}, r"field 'batch_size' = 0: Input should be greater than or equal to 1")),
    BadInput("gd-fraction-one", "validation_fraction 1.0", lambda t: _gd_config({"validation_fraction": 1.0}, r"field 'validation_fraction' = 1\.0: Input should be less than 1")),
    BadInput("gd-optimizer-unknown", "optimizer 'adamm'", lambda t: _gd_config({"optimizer": "adamm"}, r"field 'optimizer' = 'adamm': Input should be 'adam', 'sgd', 'adamw' or 'rmsprop'")),
    BadInput("gd-momentum-for-adam", "momentum with adam", lambda t: _gd_config({"momentum": 0.9}, r"momentum 0\.9 is not used by optimizer 'adam' \(sgd, rmsprop only\)")),
    BadInput("gd-select-max-loss", "select_mode max for a loss", lambda t: _gd_config({"select_mode": "max"}, r"select_by 'loss' is a loss and is minimised; select_mode must be 'min'")),
    BadInput("gd-seed-huge", "seed 2**64", lambda t: _gd_config({"seed": 2**64}, r"field 'seed' = 18446744073709551616: Input should be less than or equal to 9223372036854775807")),
    BadInput("gd-unknown-key", "lr instead of learning_rate", lambda t: _gd_config({"lr": 0.1}, r"unknown key 'lr' \(value 0\.1\)")),
    BadInput("ga-mutation-scale-inf", "mutation_scale inf", lambda t: _ga_config({"mutation_scale": math.inf}, r"field 'mutation_scale' = inf: Input should be a finite number")),
    BadInput("ga-alpha-nan", "crossover_alpha NaN", lambda t: _ga_config({"crossover_alpha": math.nan}, r"field 'crossover_alpha' = nan: Input should be a finite number")),
    BadInput("ga-population-small", "population_size 2", lambda t: _ga_config({"population_size": 2}, r"field 'population_size' = 2: Input should be greater than or equal to 4")),
    BadInput("ga-generations-zero", "generations 0", lambda t: _ga_config({"generations": 0}, r"field 'generations' = 0: Input should be greater than or equal to 1")),
    BadInput("ga-elite-all", "n_elite = population_size", lambda t: _ga_config({"population_size": 8, "n_elite": 8}, r"n_elite 8 must be < population_size 8")),
    BadInput("ga-rate-above-one", "mutation_rate_start 1.5", lambda t: _ga_config({"mutation_rate_start": 1.5}, r"field 'mutation_rate_start' = 1\.5: Input should be less than or equal to 1")),
    BadInput("loss-unknown", "loss 'msee'", lambda t: expect_api_error(lambda: get_loss("msee"), ConfigError, r"unknown loss 'msee'; choose one of: .*corrsig")),
    BadInput("data-nan-inputs", "NaN in the training inputs", _nan_in_inputs),
    BadInput("data-inf-targets", "-inf in the training targets", _inf_in_targets),
    BadInput("data-nan-validation", "NaN in the validation inputs", _nan_in_validation),
    BadInput("data-integer-inputs", "integer inputs", _integer_inputs),
    BadInput("data-numpy-inputs", "numpy inputs", _numpy_inputs),
    BadInput("data-complex-targets", "complex targets", _complex_targets),
    BadInput("data-mismatched", "12 inputs, 10 targets", _mismatched_lengths),
    BadInput("data-empty", "no samples", _empty_data),
    BadInput("config-dict", "a dict instead of a GDConfig", lambda t: expect_api_error(lambda: train_gd(nn.Linear(1, 1), mse, X, Y, {"epochs": 3}), ConfigError, r"config must be a GDConfig, got dict")),
    BadInput("select-by-unknown", "select_by a metric that is not given", _unknown_select_by),
    BadInput("scheduler-not", "a scheduler factory returning a number", _not_a_scheduler),
    BadInput("checkpoint-truncated", "a truncated checkpoint.pt", _truncated_checkpoint),
    BadInput("checkpoint-foreign", "someone else's torch file as checkpoint.pt", _foreign_checkpoint),
    BadInput("checkpoint-other-kind", "a GA checkpoint in a GD run", _checkpoint_of_another_kind),
    BadInput("checkpoint-malicious", "a checkpoint with a pickled payload", _malicious_checkpoint),
    BadInput("checkpoint-missing-fields", "a checkpoint without its tensors", _checkpoint_missing_fields),
    BadInput("dir-is-file", "directory is an existing file", _directory_is_a_file),
    BadInput("dir-foreign", "directory is a folder of other files", _directory_is_foreign),
    BadInput("dir-ga-run", "train_gd in a GA run folder", _directory_of_a_ga_run),
    BadInput("dir-gd-run", "the GA in a GD run folder", _ga_in_a_gd_folder),
    BadInput("dir-damaged-record", "a damaged run.json", _damaged_run_record),
    BadInput("resume-other-config", "resuming with another learning rate and batch size", _resume_with_other_config),
    BadInput("ga-resume-other-bounds", "resuming the GA with other bounds", _ga_resume_with_other_bounds),
    BadInput("ga-fitness-shape", "a fitness function returning 3 values for 26 genomes", _ga_fitness_shape),
    BadInput("ga-bounds-nan", "NaN in the GA bounds", _ga_bounds_nan),
]  # fmt: skip


@pytest.mark.parametrize("row", ROWS, ids=table_ids(ROWS))
def test_bad_input(row: BadInput, tmp_path: Path) -> None:
    row.check(tmp_path)


@pytest.mark.parametrize("model", [GDConfig, GAConfig])
def test_every_float_field_refuses_nan_and_inf_by_name(model):
    floats = [name for name, field in model.model_fields.items() if field.annotation in (float, float | None)]
    assert floats, model
    for name in floats:
        for value in (math.nan, math.inf, -math.inf):
            check = lambda name=name, value=value: validate_config(model, {name: value})
            expect_api_error(check, ConfigError, rf"field '{name}' = {value}: Input should be a finite number")


def test_a_refused_resume_leaves_the_run_resumable(tmp_path):
    folder = _interrupted_gd_run(tmp_path / "run")
    _resume_with_other_config(tmp_path)
    record = json.loads((folder / RUN_FILE).read_text())
    assert record["state"] == "interrupted"
    result = _resume(folder)()  # the same settings resume it
    assert len(result.history) == 3 and json.loads((folder / RUN_FILE).read_text())["state"] == "finished"
