"""Bad inputs to the analog circuits and EP: circuits, data, labels, configs, parameter files, run folders, the CLI.

Each row is a bad input a user could give; the check asserts the exact error
class (CLI: exit code 2, one line, no traceback), that the message names the
node, field or sample, the value and what is allowed, and that files already
saved are unchanged. The decisions the rows encode: circuits that cannot have
a DC solution (floating nodes, nodes cut off by 0 S resistors) are refused
naming the node; input voltages are real numbers (integers are volts like
floats; complex, bool, text and objects are refused) inside the input's range;
labels are class indices in range or finite target scores; configs take no
NaN, infinite or negative learning rates or betas; a parameter file that is
corrupt, truncated, foreign, non-finite or out of bounds leaves the model as
it was; a run folder made with other settings is refused before it changes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from bad_inputs import BadInput, expect_api_error, expect_cli_error, table_ids
from inmaterio.circuits import (
    GROUND,
    Circuit,
    Dense,
    DiodeGroup,
    EPTrainConfig,
    Input,
    ShockleyDiode,
    ep_gradients,
    evaluate,
    fit,
    solve_dc,
)
from inmaterio.circuits.examples import get_example
from inmaterio.circuits.io import load_parameters, save_parameters
from inmaterio.cli import app
from inmaterio.config import validate_config
from inmaterio.errors import ConfigError, ModelFileError, RunFolderError, SimulationError, VoltageError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

G = GROUND
XOR = get_example("xor")
X = XOR.load(0).x_train  # (4, 2) volts
Y = XOR.load(0).y_train  # (4,) classes 0 and 1
ONE_EPOCH = XOR.config.model_copy(update={"epochs": 1})


def _model():
    return XOR.build(0)


def _circuit(match: str, error: type[Exception] = ConfigError, **fields) -> None:
    expect_api_error(lambda: solve_dc(Circuit(**fields)), error, match)


def _unchanged_model(call, error: type[Exception], match: str) -> None:
    """``call(model)`` is refused and the model's parameters stay bit for bit."""
    model = _model()
    before = {k: v.clone() for k, v in model.normalised_parameters().items()}
    expect_api_error(lambda: call(model), error, match)
    assert all(torch.equal(before[k], p) for k, p in model.normalised_parameters().items()), "a refused input changed the model"


def _config(match: str, **fields) -> None:
    expect_api_error(lambda: validate_config(EPTrainConfig, {**ONE_EPOCH.model_dump(), **fields}), ConfigError, match)


def _parameter_file(tmp_path: Path, make, match: str) -> None:
    """``make(path)`` writes a bad parameter file; loading it raises ModelFileError and changes neither file nor model."""
    path = tmp_path / "parameters.safetensors"
    make(path)
    model = _model()
    before = {k: v.clone() for k, v in model.normalised_parameters().items()}
    expect_api_error(lambda: load_parameters(model, path), ModelFileError, match, unchanged=[path])
    assert all(torch.equal(before[k], p) for k, p in model.normalised_parameters().items()), "a refused file changed the model"


def _valid_file(path: Path, **replace) -> None:
    model = _model()
    save_parameters(model, path)
    if replace:
        from safetensors import safe_open
        from safetensors.torch import load_file

        tensors = load_file(path)
        with safe_open(path, "pt") as f:
            metadata = f.metadata()
        for key, fn in replace.items():
            tensors[key.replace("__", ".")] = fn(tensors[key.replace("__", ".")])
        save_file(tensors, str(path), metadata=metadata)


def _truncated(path: Path) -> None:
    _valid_file(path)
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _foreign(path: Path) -> None:
    save_file({"h.conductance_s": torch.zeros(6, 6, dtype=torch.float64)}, str(path), metadata={"producer": "someone else"})


_FINISHED: dict[str, Path] = {}


def _finished_run(tmp_path: Path, *, cli: bool = False) -> Path:
    """A copy of a finished 2-epoch XOR run folder (made once per session)."""
    key = "cli" if cli else "api"
    if key not in _FINISHED:
        base = Path(tmp_path.parent) / f"finished-{key}"
        if cli:
            expect_cli_error(
                app, ["ep", "train", "xor", "--epochs", "2", "--out", str(base), "--no-progress"], r"results:", code=0
            )
        else:
            fit(_model(), X, Y, XOR.config.model_copy(update={"epochs": 2}), directory=base, progress=False)
        _FINISHED[key] = base
    target = tmp_path / "run"
    shutil.copytree(_FINISHED[key], target)
    return target


def _interrupted_run(tmp_path: Path) -> Path:
    """A finished run marked interrupted (as a run killed after its last checkpoint leaves it)."""
    folder = _finished_run(tmp_path)
    record = json.loads((folder / "run.json").read_text())
    record["state"] = "interrupted"
    (folder / "run.json").write_text(json.dumps(record))
    return folder


def _fit_in(folder_of, config, error, match) -> Callable[[Path], None]:
    def check(tmp_path: Path) -> None:
        folder = folder_of(tmp_path)
        expect_api_error(lambda: fit(_model(), X, Y, config, directory=folder, progress=False), error, match, unchanged=[folder])

    return check


def _file_in_the_way(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("my notes")
    return path


def _foreign_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"\xff\xd8")
    return folder


ROWS = [
    # circuits that cannot have a DC solution
    BadInput(
        "circuit-floating",
        "two nodes joined to each other only",
        lambda t: _circuit(
            r"node 1 'a' floats: no path of resistors or diodes to ground or to a voltage source \(2 such nodes\)",
            node_names=("in", "a", "b"),
            resistor_nodes=[[0, G], [1, 2]],
            conductance_s=[1e-6, 1e-6],
            source_nodes=[0],
            source_v=[1.0],
        ),
    ),
    BadInput(
        "circuit-disconnected",
        "a node with only a current source",
        lambda t: _circuit(
            r"node 1 'x' is disconnected: no element is attached to it",
            node_names=("in", "x"),
            resistor_nodes=[[0, G]],
            conductance_s=[1e-6],
            source_nodes=[0],
            source_v=[1.0],
            current_nodes=[1],
            current_a=[1e-9],
        ),
    ),
    BadInput(
        "circuit-zero-conductance",
        "the only resistor of a node is 0 S",
        lambda t: _circuit(
            r"singular circuit matrix for sample\(s\) \[0\]: node\(s\) 'mid' have no DC path to ground or a source in sample 0 "
            r"\(their resistors to the rest of the circuit have conductance 0 S\)",
            SimulationError,
            node_names=("in", "mid"),
            resistor_nodes=[[0, 1], [1, G]],
            conductance_s=[0.0, 0.0],
            source_nodes=[0],
            source_v=[1.0],
        ),
    ),
    BadInput(
        "circuit-negative-conductance",
        "a conductance of -1 uS",
        lambda t: _circuit(
            r"resistor 1 conductance -1e-06 S is negative \(must be >= 0\)",
            node_names=("in", "mid"),
            resistor_nodes=[[0, 1], [1, G]],
            conductance_s=[1e-6, -1e-6],
            source_nodes=[0],
            source_v=[1.0],
        ),
    ),
    BadInput(
        "circuit-nan-conductance",
        "a NaN conductance",
        lambda t: _circuit(
            r"conductance_s has a non-finite value nan at index \[0\]",
            node_names=("in", "mid"),
            resistor_nodes=[[0, 1], [1, G]],
            conductance_s=[float("nan"), 1e-6],
            source_nodes=[0],
            source_v=[1.0],
        ),
    ),
    BadInput(
        "circuit-complex-source",
        "a complex source voltage",
        lambda t: _circuit(
            r"source_v must be real numbers, got complex values",
            node_names=("in", "mid"),
            resistor_nodes=[[0, 1], [1, G]],
            conductance_s=[1e-6, 1e-6],
            source_nodes=[0],
            source_v=[1.0 + 0.5j],
        ),
    ),
    BadInput(
        "circuit-fractional-node",
        "node index 0.5",
        lambda t: _circuit(
            r"resistor_nodes must be integer node indices, got dtype torch.float64",
            node_names=("in", "mid"),
            resistor_nodes=[[0, 0.5], [1, G]],
            conductance_s=[1e-6, 1e-6],
            source_nodes=[0],
            source_v=[1.0],
        ),
    ),
    BadInput(
        "circuit-two-sources",
        "two voltage sources on one node",
        lambda t: _circuit(
            r"node 0 'in' is driven by more than one voltage source or amplifier output",
            node_names=("in", "mid"),
            resistor_nodes=[[0, 1], [1, G]],
            conductance_s=[1e-6, 1e-6],
            source_nodes=[0, 0],
            source_v=[1.0, 2.0],
        ),
    ),
    BadInput(
        "circuit-amplifier-loop",
        "two amplifiers driving each other",
        lambda t: _circuit(
            r"amplifiers form a loop through amplifier 0",
            node_names=("a", "b"),
            amplifier_nodes=[[0, 1], [1, 0]],
            gain=[2.0, 2.0],
            current_gain=[0.5, 0.5],
            diodes=(DiodeGroup(ShockleyDiode(), [0, 1], [G, G], [0.0, 0.0]),),
        ),
    ),
    BadInput(
        "layer-zero-conductance",
        "Dense with bounds_s (0, 1e-5)",
        lambda t: expect_api_error(
            lambda: Dense(3, bounds_s=(0.0, 1e-5), name="h"),
            ConfigError,
            r"Dense 'h' bounds_s must be \(g_min, g_max\) with 0 < g_min < g_max, got \(0\.0, 1e-05\)",
        ),
    ),
    BadInput(
        "layer-name-dot",
        "a layer named 'h.1'",
        lambda t: expect_api_error(
            lambda: Input(2, name="h.1"), ConfigError, r"layer name must be a non-empty string without '/' or '\.', got 'h\.1'"
        ),
    ),
    # data into predict / evaluate / fit / EP
    BadInput(
        "predict-nan",
        "NaN in sample 2",
        lambda t: _unchanged_model(
            lambda m: m.predict(torch.tensor([[0.0, 0.0], [0.0, 1.0], [1.0, float("nan")]])),
            VoltageError,
            r"Input 'x' feature 1 of sample 2 is nan: voltages must be finite",
        ),
    ),
    BadInput(
        "predict-inf",
        "-inf in sample 0",
        lambda t: _unchanged_model(
            lambda m: m.predict(np.array([[-np.inf, 0.0]])),
            VoltageError,
            r"Input 'x' feature 0 of sample 0 is -inf: voltages must be finite",
        ),
    ),
    BadInput(
        "predict-range",
        "12 V (range -10..10 V)",
        lambda t: _unchanged_model(
            lambda m: m.predict([[0.0, 12.0]]), VoltageError, r"Input 'x' feature 1 of sample 0: 12 V outside \[-10\.0, 10\.0\] V"
        ),
    ),
    BadInput(
        "predict-complex",
        "complex voltages",
        lambda t: _unchanged_model(
            lambda m: m.predict(torch.zeros(2, 2, dtype=torch.complex128)),
            VoltageError,
            r"Input 'x' data must be real numbers, got complex values",
        ),
    ),
    BadInput(
        "predict-bool",
        "a boolean array",
        lambda t: _unchanged_model(
            lambda m: m.predict(np.array([[True, False]])), VoltageError, r"Input 'x' data must be real numbers, got booleans"
        ),
    ),
    BadInput(
        "predict-text",
        "the text '0,1'",
        lambda t: _unchanged_model(
            lambda m: m.predict("0,1"), VoltageError, r"Input 'x' data must be real numbers, got the string '0,1'"
        ),
    ),
    BadInput(
        "predict-shape",
        "3 features for 2",
        lambda t: _unchanged_model(
            lambda m: m.predict(torch.zeros(4, 3)), VoltageError, r"Input 'x' expects data of shape \(batch, 2\), got \(4, 3\)"
        ),
    ),
    BadInput(
        "predict-empty",
        "no samples",
        lambda t: _unchanged_model(
            lambda m: m.predict(torch.zeros(0, 2)),
            VoltageError,
            r"Input 'x' got an empty batch \(shape \(0, 2\)\); give at least one sample",
        ),
    ),
    BadInput(
        "predict-batch-size",
        "predict batch_size 0",
        lambda t: _unchanged_model(
            lambda m: m.predict(X, batch_size=0), ConfigError, r"predict batch_size must be an int >= 1, got 0"
        ),
    ),
    BadInput(
        "fit-label-range",
        "class 2 in a 2-class task",
        lambda t: _unchanged_model(
            lambda m: fit(m, X, torch.tensor([0, 1, 1, 2]), ONE_EPOCH, progress=False),
            ConfigError,
            r"y of sample 3 is class 2, outside \[0, 1\]",
        ),
    ),
    BadInput(
        "fit-label-count",
        "3 labels for 4 samples",
        lambda t: _unchanged_model(
            lambda m: fit(m, X, Y[:3], ONE_EPOCH, progress=False), ConfigError, r"y has 3 targets for 4 samples"
        ),
    ),
    BadInput(
        "fit-float-labels-ce",
        "float labels with cross-entropy",
        lambda t: _unchanged_model(
            lambda m: fit(m, X, Y.double(), ONE_EPOCH.model_copy(update={"loss": "cross_entropy"}), progress=False),
            ConfigError,
            r"y: cross_entropy needs integer class indices in \[0, 1\], got dtype torch\.float64",
        ),
    ),
    BadInput(
        "evaluate-nan-target",
        "a NaN target score",
        lambda t: _unchanged_model(
            lambda m: evaluate(m, X, torch.tensor([[0.1, -0.1], [float("nan"), 0.1], [0.1, 0.1], [0.0, 0.0]]), ONE_EPOCH),
            ConfigError,
            r"y of sample 1, class 0 is nan: target scores must be finite",
        ),
    ),
    BadInput(
        "fit-validation-labels",
        "validation labels of another length",
        lambda t: _unchanged_model(
            lambda m: fit(m, X, Y, ONE_EPOCH, validation=(X, Y[:2]), progress=False),
            ConfigError,
            r"validation y has 2 targets for 4 samples",
        ),
    ),
    BadInput(
        "fit-config-dict",
        "a dict instead of EPTrainConfig",
        lambda t: _unchanged_model(
            lambda m: fit(m, X, Y, {"epochs": 1}, progress=False), ConfigError, r"config must be an EPTrainConfig, got dict"
        ),
    ),
    BadInput(
        "ep-beta-nan",
        "ep_gradients beta NaN",
        lambda t: _unchanged_model(
            lambda m: ep_gradients(m, X, Y, ONE_EPOCH.loss_fn(), beta=float("nan")),
            ConfigError,
            r"EP beta must be a finite number > 0, got nan",
        ),
    ),
    BadInput(
        "set-values-complex",
        "complex parameter values",
        lambda t: _unchanged_model(
            lambda m: m.set_parameter_values({"h.conductance_s": torch.full((6, 6), 1e-6 + 0j)}),
            ConfigError,
            r"parameter 'h\.conductance_s' must be real numbers, got complex values",
        ),
    ),
    BadInput(
        "set-values-bounds",
        "a conductance of 1 S (bounds 1e-7..1e-5)",
        lambda t: _unchanged_model(
            lambda m: m.set_parameter_values({"y.conductance_s": torch.full((8, 4), 1.0)}),
            ConfigError,
            r"parameter 'y\.conductance_s'\[0, 0\] = 1 outside its bounds \[1e-07, 1e-05\]",
        ),
    ),
    # configs
    BadInput(
        "config-lr-nan", "lr: .nan", lambda t: _config(r"field 'lr' = nan: Input should be a finite number", lr=float("nan"))
    ),
    BadInput(
        "config-beta-inf",
        "beta: .inf",
        lambda t: _config(r"field 'beta' = inf: Input should be a finite number", beta=float("inf")),
    ),
    BadInput(
        "config-lr-negative", "lr: -0.01", lambda t: _config(r"field 'lr' = -0\.01: Input should be greater than 0", lr=-0.01)
    ),
    BadInput("config-beta-zero", "beta: 0", lambda t: _config(r"field 'beta' = 0: Input should be greater than 0", beta=0)),
    BadInput(
        "config-betas",
        "betas: [1.0, 0.999]",
        lambda t: _config(r"field 'betas\.0' = 1\.0: Input should be less than 1", betas=[1.0, 0.999]),
    ),
    BadInput(
        "config-epochs-zero",
        "epochs: 0",
        lambda t: _config(r"field 'epochs' = 0: Input should be greater than or equal to 1", epochs=0),
    ),
    BadInput(
        "config-unknown-key",
        "learning_rate: 0.1 (the key is lr)",
        lambda t: _config(r"unknown key 'learning_rate' \(value 0\.1\)", learning_rate=0.1),
    ),
    # parameter files
    BadInput(
        "params-corrupt",
        "20 zero bytes as parameters.safetensors",
        lambda t: _parameter_file(
            t, lambda p: p.write_bytes(b"\x00" * 20), r"is not a readable safetensors file \(corrupt or truncated\)"
        ),
    ),
    BadInput(
        "params-truncated",
        "a parameter file cut in half",
        lambda t: _parameter_file(t, _truncated, r"is not a readable safetensors file \(corrupt or truncated\)"),
    ),
    BadInput(
        "params-foreign",
        "a safetensors file of another program",
        lambda t: _parameter_file(t, _foreign, r"is not an inmaterio circuit parameter file \(format 'inmaterio-circuit'\)"),
    ),
    BadInput(
        "params-nan",
        "a NaN conductance in the file",
        lambda t: _parameter_file(
            t,
            lambda p: _valid_file(p, h__conductance_s=lambda v: v.index_fill(0, torch.tensor([2]), float("nan"))),
            r"does not fit the model: parameter 'h\.conductance_s'\[2, 0\] is nan: values must be finite",
        ),
    ),
    BadInput(
        "params-bounds",
        "a conductance of 1 mS in the file",
        lambda t: _parameter_file(
            t,
            lambda p: _valid_file(p, y__conductance_s=lambda v: v.index_fill(1, torch.tensor([3]), 1e-3)),
            r"does not fit the model: parameter 'y\.conductance_s'\[0, 3\] = 0\.001 outside its bounds \[1e-07, 1e-05\]",
        ),
    ),
    BadInput(
        "params-shape",
        "parameters of the Iris network",
        lambda t: _parameter_file(
            t,
            lambda p: save_parameters(get_example("iris").build(0), p),
            r"parameter 'h\.conductance_s' has shape \(10, 10\), the model's is \(6, 6\)",
        ),
    ),
    BadInput(
        "params-folder",
        "a folder as the parameter file",
        lambda t: expect_api_error(
            lambda: load_parameters(_model(), t), ModelFileError, r"circuit parameter file '.*' is a folder, not a file"
        ),
    ),
    # run folders of fit
    BadInput(
        "fit-folder-is-file",
        "directory is an existing file",
        _fit_in(_file_in_the_way, ONE_EPOCH, RunFolderError, r"'.*notes\.txt' is a file, not a folder"),
    ),
    BadInput(
        "fit-foreign-folder",
        "directory holds someone's photos",
        _fit_in(
            _foreign_folder, ONE_EPOCH, RunFolderError, r"'.*photos' is not a run folder \(it holds cat\.jpg and no run\.json\)"
        ),
    ),
    BadInput(
        "fit-other-settings",
        "a finished run resumed with another lr and batch size",
        _fit_in(
            _finished_run,
            ONE_EPOCH.model_copy(update={"lr": 0.5, "batch_size": 2, "epochs": 3}),
            ConfigError,
            r"made with other settings: config\.batch_size: 4 in the folder, 2 now; config\.lr: 0\.02 in the folder, 0\.5 now",
        ),
    ),
    BadInput(
        "fit-fewer-epochs",
        "an interrupted 2-epoch run asked for 1 epoch",
        _fit_in(
            _interrupted_run, ONE_EPOCH, ConfigError, r"already holds 2 epochs, more than epochs=1; ask for at least 2 epochs"
        ),
    ),
    # the command line
    BadInput(
        "cli-epochs-zero",
        "ep train xor --epochs 0",
        lambda t: expect_cli_error(
            app,
            ["ep", "train", "xor", "--epochs", "0", "--out", str(t / "run")],
            r"Invalid value for '--epochs': got 0; the number of epochs must be an integer >= 1",
        ),
    ),
    BadInput(
        "cli-epochs-negative",
        "ep train xor --epochs -1 on an existing run",
        lambda t: (
            lambda run: expect_cli_error(
                app,
                ["ep", "train", "xor", "--epochs", "-1", "--out", str(run)],
                r"got -1; the number of epochs must be an integer >= 1",
                unchanged=[run],
            )
        )(_finished_run(t, cli=True)),
    ),
    BadInput(
        "cli-epochs-text",
        "ep train xor --epochs many",
        lambda t: expect_cli_error(
            app, ["ep", "train", "xor", "--epochs", "many"], r"Invalid value for '--epochs': Input should be a valid integer"
        ),
    ),
    BadInput(
        "cli-seed-negative",
        "ep train xor --seed -2",
        lambda t: expect_cli_error(
            app,
            ["ep", "train", "xor", "--seed", "-2", "--out", str(t / "run")],
            r"Invalid value for '--seed': got -2; the seed must be an integer >= 0",
        ),
    ),
    BadInput(
        "cli-unknown-example",
        "ep train mnist",
        lambda t: expect_cli_error(
            app,
            ["ep", "train", "mnist", "--out", str(t / "run")],
            r"unknown example 'mnist'; choose one of \['digits', 'iris', 'wine', 'xor'\]",
        ),
    ),
    BadInput(
        "cli-out-is-file",
        "ep train xor --out notes.txt",
        lambda t: (
            lambda path: expect_cli_error(
                app,
                ["ep", "train", "xor", "--epochs", "1", "--out", str(path)],
                r"'.*notes\.txt' is a file, not a folder",
                unchanged=[path],
            )
        )(_file_in_the_way(t)),
    ),
    BadInput(
        "cli-other-seed",
        "ep train xor --seed 1 into a run made with seed 0",
        lambda t: (
            lambda run: expect_cli_error(
                app,
                ["ep", "train", "xor", "--epochs", "2", "--seed", "1", "--out", str(run)],
                r"made with other settings: config\.seed: 0 in the folder, 1 now; model\.seed: 0 in the folder, 1 now",
                unchanged=[run],
            )
        )(_finished_run(t, cli=True)),
    ),
    BadInput(
        "cli-check-samples",
        "ep check xor --samples 0",
        lambda t: expect_cli_error(
            app,
            ["ep", "check", "xor", "--samples", "0"],
            r"Invalid value for '--samples': got 0; the number of samples must be an integer >= 1",
        ),
    ),
    BadInput(
        "cli-check-corrupt",
        "ep check xor --parameters <a corrupt file>",
        lambda t: (
            lambda path: expect_cli_error(
                app,
                ["ep", "check", "xor", "--parameters", str(path)],
                r"is not a readable safetensors file \(corrupt or truncated\)",
                unchanged=[path],
            )
        )(_write(t / "p.safetensors", b"not safetensors")),
    ),
]


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("row", ROWS, ids=table_ids(ROWS))
def test_bad_input(row: BadInput, tmp_path: Path) -> None:
    row.check(tmp_path)


def test_integer_voltages_are_volts_and_give_float_outputs():
    model = _model()
    as_int = model.predict(torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]]))
    assert as_int.dtype == torch.float64
    assert torch.equal(as_int, model.predict(X))
    assert torch.equal(model.predict([[0, 1], [1, 1]]), model.predict(X[[1, 3]]))  # nested lists, in float64
