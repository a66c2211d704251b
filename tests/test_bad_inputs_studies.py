"""Bad inputs to the paper studies (capacity, rings, electrode sweep, MNIST): configs, data folders, IDX files, specs.

Each row is a bad input a user could give; the check asserts the exact error
class (CLI: exit code 2, one line, no traceback), that the message names the
field, file or value and what is allowed, and that nothing was written: every
refusal happens before the run folder is made. The decisions the rows encode:
N is one of the 4..10 capacity points; counts (epochs, trials, workers,
threads) are whole numbers >= 1; rates and temperatures are finite and
positive; a study's device and surrogate must have the same electrodes and
ranges; the MNIST folder comes from the config or ``$INMATERIO_MNIST_DIR``
(never a built-in path) and a damaged IDX file is named with what is wrong;
the trial functions take their typed specs only.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from bad_inputs import BadInput, expect_api_error, expect_cli_error, table_ids
from inmaterio.cli import app
from inmaterio.data.mnist import MNIST_DIR_ENV
from inmaterio.errors import ConfigError
from inmaterio.studies.capacity_trial import capacity_trial
from inmaterio.studies.ring_trials import ring_trials
from inmaterio.surrogate import DeviceInfo, SurrogateModel, save_surrogate
from test_studies_mnist import write_idx, write_synthetic_mnist

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CAPACITY = "task: {{type: capacity_study, models: [logistic2], n_points: [4], epochs: 5, restarts: 1{extra}}}\nexecutor: {{kind: serial}}\n"
RINGS = "task: {{type: rings_study, trials: 2, group: 2, epochs: 2, candidates: 1, validate_repeats: 0{extra}}}\nexecutor: {{kind: serial}}\n"


def _run(tmp_path: Path, yaml_text: str, match: str) -> None:
    """``inmaterio run`` of ``yaml_text`` is refused with ``match``; the run folder is not made."""
    config = tmp_path / "study.yaml"
    config.write_text(yaml_text)
    out = tmp_path / "out"
    expect_cli_error(app, ["run", str(config), "--out", str(out), "--no-progress"], match, unchanged=[out])
    assert not out.exists()


def _capacity(extra: str) -> str:
    return CAPACITY.format(extra=extra)


def _rings(extra: str) -> str:
    return RINGS.format(extra=extra)


def _mnist(data: str, extra: str = "") -> str:
    return f"task: {{type: mnist_10dnpu, model: relu, epochs: 1{extra}}}\ndata: {{{data}}}\n"


def _surrogate_without_rmse(tmp_path: Path) -> str:
    names = [f"e{k}" for k in range(7)]
    info = DeviceInfo(electrode_names=names, readout_name="e7", voltage_ranges_v=[(-1.2, 0.6)] * 7)
    torch.manual_seed(0)
    save_surrogate(SurrogateModel(info, hidden_sizes=(8,)), tmp_path / "no_rmse")
    return str(tmp_path / "no_rmse")


def _annealed_without_rmse(tmp_path: Path) -> None:
    model_dir = _surrogate_without_rmse(tmp_path)
    text = ("task: {type: capacity_study, models: [dnpu_annealed], n_points: [4]}\n"
            f"surrogate: {{model_dir: {model_dir}}}\ndevice: {{spec: {{type: analytic}}}}\n")  # fmt: skip
    _run(tmp_path, text, r"the surrogate has no test RMSE \(info\.noise_na\); the model dnpu_annealed needs it")


def _device_with_other_ranges(tmp_path: Path) -> None:
    text = "task: {type: capacity_study, models: [dnpu_search_device], n_points: [4]}\ndevice: {spec: {type: analytic, low_v: -1.0}}\n"
    _run(tmp_path, text, r"e0: \[-1\.2, 0\.6\] V on the surrogate, \[-1\.0, 0\.6\] V on the device")


def _mnist_folder_missing(tmp_path: Path) -> None:
    _run(tmp_path, _mnist(f"dir: {tmp_path / 'nowhere'}"), r"MNIST directory '.*nowhere' \(from data_dir\) does not exist")


def _mnist_no_folder_given(tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(MNIST_DIR_ENV, raising=False)
        _run(tmp_path, _mnist("dir: null"), r"no MNIST directory given: .* set the environment variable INMATERIO_MNIST_DIR")


def _mnist_file_missing(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "mnist", n_train=20, n_test=10)
    (data / "t10k-labels-idx1-ubyte.gz").unlink()
    _run(
        tmp_path,
        _mnist(f"dir: {data}, n_validation: 5"),
        r"has neither 't10k-labels-idx1-ubyte\.gz' nor 't10k-labels-idx1-ubyte'",
    )


def _mnist_corrupt_gzip(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "mnist", n_train=20, n_test=10)
    (data / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00 this is not a gzip stream")
    _run(
        tmp_path,
        _mnist(f"dir: {data}, n_validation: 5"),
        r"IDX file '.*train-images-idx3-ubyte\.gz' cannot be read \(corrupt gzip stream\?\)",
    )


def _mnist_truncated_idx(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "mnist", n_train=20, n_test=10)
    path = data / "t10k-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    _run(
        tmp_path,
        _mnist(f"dir: {data}, n_validation: 5"),
        r"IDX file '.*t10k-images-idx3-ubyte\.gz' is truncated: dims \(10, 28, 28\)",
    )


def _mnist_labels_do_not_fit(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "mnist", n_train=20, n_test=10)
    write_idx(data / "train-labels-idx1-ubyte.gz", np.zeros(19, dtype=np.uint8))
    _run(
        tmp_path,
        _mnist(f"dir: {data}, n_validation: 5"),
        r"MNIST labels '.*train-labels-idx1-ubyte\.gz' have shape \(19,\), expected \(20,\)",
    )


def _mnist_label_out_of_range(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "mnist", n_train=20, n_test=10)
    write_idx(data / "t10k-labels-idx1-ubyte.gz", np.full(10, 12, dtype=np.uint8))
    _run(
        tmp_path,
        _mnist(f"dir: {data}, n_validation: 5"),
        r"MNIST labels '.*t10k-labels-idx1-ubyte\.gz' hold class 12; digits are 0\.\.9",
    )


def _mnist_images_of_two_sizes(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "mnist", n_train=20, n_test=10)
    write_idx(data / "t10k-images-idx3-ubyte.gz", np.zeros((10, 20, 20), dtype=np.uint8))
    _run(
        tmp_path,
        _mnist(f"dir: {data}, n_validation: 5"),
        r"'.*t10k-images-idx3-ubyte\.gz' are 20 x 20 pixels, the training images .* 28 x 28",
    )


def _mnist_validation_too_large(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "mnist", n_train=20, n_test=10)
    _run(tmp_path, _mnist(f"dir: {data}, n_validation: 20"), r"n_validation must be in \[0, 20\) for 20 training images, got 20")


def _mnist_more_device_images_than_tests(tmp_path: Path) -> None:
    data = write_synthetic_mnist(tmp_path / "mnist", n_train=20, n_test=10)
    _run(
        tmp_path,
        f"task: {{type: mnist_10dnpu, epochs: 1}}\ndata: {{dir: {data}, n_validation: 5}}\n"
        "validation: {enabled: true, test_images: 11}\n",
        r"validation\.test_images = 11 is more than the 10 test images; give at most 10",
    )


def _reuse_what_is_not_a_run(tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    _run(tmp_path, _rings(f", reuse_training: {tmp_path / 'notes'}"), r"'.*notes' is not a run folder: it has no run\.json")


ROWS = [
    # capacity study
    BadInput("capacity-unknown-key", "a misspelt key (restart)", lambda t: _run(t, _capacity(", restart: 3"), r"unknown key 'task\.restart' \(value 3\)")),
    BadInput("capacity-n-outside", "N = 3 and 11 (the capacity points are 4..10)",
             lambda t: _run(t, _capacity(", n_points: [3, 11]"), r"n_points must be values in 4\.\.10 \(the capacity points\), got \[3, 11\]")),
    BadInput("capacity-n-repeated", "N = 4 twice", lambda t: _run(t, _capacity(", n_points: [4, 4]"), r"n_points repeats a value: \[4, 4\]")),
    BadInput("capacity-unknown-model", "model mlp", lambda t: _run(t, _capacity(", models: [mlp]"), r"field 'task\.models\.0' = 'mlp': Input should be 'dnpu', 'dnpu_annealed'")),
    BadInput("capacity-lr-inf", "learning_rate .inf", lambda t: _run(t, _capacity(", learning_rate: .inf"), r"field 'task\.learning_rate' = inf: Input should be a finite number")),
    BadInput("capacity-lr-nan", "learning_rate .nan", lambda t: _run(t, _capacity(", learning_rate: .nan"), r"field 'task\.learning_rate' = nan: Input should be a finite number")),
    BadInput("capacity-temperature-negative", "temperature_na -0.5", lambda t: _run(t, _capacity(", temperature_na: -0.5"), r"field 'task\.temperature_na' = -0\.5: Input should be greater than 0")),
    BadInput("capacity-epochs-text", "epochs 'many'", lambda t: _run(t, _capacity(", epochs: many"), r"field 'task\.epochs' = 'many': .*integer")),
    BadInput("capacity-epochs-zero", "epochs 0", lambda t: _run(t, _capacity(", epochs: 0"), r"field 'task\.epochs' = 0: Input should be greater than or equal to 1")),
    BadInput("capacity-screen-too-small", "fewer screened vectors than the search tries",
             lambda t: _run(t, _capacity(", models: [dnpu_search], screen_samples: 3, restarts: 5"),
                            r"screen_samples = 3 must be at least restarts = 5 for dnpu_search")),
    BadInput("capacity-data-range-reversed", "data_range [0.6, -1.2]",
             lambda t: _run(t, _capacity(", data_range: [0.6, -1.2]"), r"data_range must be \(low, high\) with low < high, got \[0\.6, -1\.2\]")),
    BadInput("capacity-workers-zero", "executor workers 0",
             lambda t: _run(t, _capacity("").replace("{kind: serial}", "{kind: local, workers: 0}"), r"field 'executor\.workers' = 0: Input should be greater than or equal to 1")),
    BadInput("capacity-device-threads-zero", "device threads 0",
             lambda t: _run(t, _capacity("") + "device: {threads: 0}\n", r"field 'device\.threads' = 0: Input should be greater than or equal to 1")),
    BadInput("capacity-unknown-electrode", "input electrode e9",
             lambda t: _run(t, "task: {type: capacity_study, models: [dnpu], n_points: [4], input_electrodes: [e3, e9]}\n", r"unknown input electrode 'e9'; activation electrodes are \['e0'")),
    BadInput("capacity-annealed-without-rmse", "dnpu_annealed on a surrogate with no test RMSE", _annealed_without_rmse),
    BadInput("capacity-device-other-ranges", "a device whose ranges differ from the surrogate's", _device_with_other_ranges),
    BadInput("capacity-trial-dict", "capacity_trial called with a spec dict",
             lambda t: expect_api_error(lambda: capacity_trial({"model": "dnpu", "n_points": 4}), ConfigError, r"capacity_trial takes a CapacityTrial, got dict")),
    # rings study and its electrode sweep
    BadInput("rings-architecture", "architecture 3-3-1",
             lambda t: _run(t, _rings(", architectures: [3-3-1]"), r"field 'task\.architectures\.0' = '3-3-1': Input should be 'single' or '2-2-1'")),
    BadInput("rings-candidates-above-trials", "5 candidates of 2 trials",
             lambda t: _run(t, _rings(", candidates: 5"), r"- in 'task': candidates = 5 must not exceed trials = 2")),
    BadInput("rings-trials-negative", "trials -10", lambda t: _run(t, _rings(", trials: -10"), r"field 'task\.trials' = -10: Input should be greater than or equal to 1")),
    BadInput("rings-gap-too-wide", "gap 2 (the disc has radius 1)", lambda t: _run(t, _rings(", data: {gap: 2}"), r"field 'task\.data\.gap' = 2: Input should be less than 1\.4")),
    BadInput("rings-same-electrode-twice", "input electrodes [e1, e1]",
             lambda t: _run(t, _rings(", input_electrodes: {single: [e1, e1]}"), r"input_electrodes of single must be two different electrodes, got \[e1, e1\]")),
    BadInput("rings-noise-negative", "noise_variance_factor -1", lambda t: _run(t, _rings(", noise_variance_factor: -1"), r"field 'task\.noise_variance_factor' = -1")),
    BadInput("rings-reuse-not-a-run", "reuse_training of a folder that holds no run", _reuse_what_is_not_a_run),
    BadInput("ring-electrodes-pair", "an electrode pair with one electrode twice",
             lambda t: _run(t, "task: {type: ring_electrodes, pairs: [[2, 2]]}\n", r"pairs must be two different electrodes each, got \[2, 2\]")),
    BadInput("ring-trials-dict", "ring_trials called with a spec dict",
             lambda t: expect_api_error(lambda: ring_trials({"architecture": "single"}), ConfigError, r"ring_trials takes a RingGroup, got dict")),
    # MNIST
    BadInput("mnist-folder-missing", "data.dir that does not exist", _mnist_folder_missing),
    BadInput("mnist-no-folder", "no data.dir and no $INMATERIO_MNIST_DIR", _mnist_no_folder_given),
    BadInput("mnist-file-missing", "a folder without the test labels", _mnist_file_missing),
    BadInput("mnist-corrupt-gzip", "a training-image file that is not gzip", _mnist_corrupt_gzip),
    BadInput("mnist-truncated", "a truncated test-image file", _mnist_truncated_idx),
    BadInput("mnist-label-count", "19 labels for 20 images", _mnist_labels_do_not_fit),
    BadInput("mnist-label-12", "a label 12", _mnist_label_out_of_range),
    BadInput("mnist-image-sizes", "test images of another size", _mnist_images_of_two_sizes),
    BadInput("mnist-validation-too-large", "as many validation images as training images", _mnist_validation_too_large),
    BadInput("mnist-inputs-per-node", "inputs_per_node 5",
             lambda t: _run(t, _mnist("dir: null", ", inputs_per_node: 5"), r"field 'task\.inputs_per_node' = 5: Input should be 3 or 7")),
    BadInput("mnist-unknown-setting", "a misspelt setting (lr)",
             lambda t: _run(t, _mnist("dir: null", ", settings: {lr: 0.1}"), r"unknown key 'task\.settings\.lr' \(value 0\.1\)")),
    BadInput("mnist-unknown-recipe", "recipe adam", lambda t: _run(t, _mnist("dir: null", ", recipe: adam"), r"field 'task\.recipe' = 'adam': Input should be 'paper' or 'ours'")),
    BadInput("mnist-threads-zero", "threads 0", lambda t: _run(t, _mnist("dir: null") + "threads: 0\n", r"field 'threads' = 0: Input should be greater than or equal to 1")),
    BadInput("mnist-validation-relu", "the ReLU baseline measured on a device",
             lambda t: _run(t, _mnist("dir: null") + "validation: {enabled: true}\n", r"study\.yaml: - validation\.enabled: true measures DNPUs on a device; task\.model 'relu' has none")),
    BadInput("mnist-refine-without-device", "refinement without validation on a device",
             lambda t: _run(t, _mnist("dir: null", ", model: dnpu, refine: {rounds: 1}"), r"task\.refine measures the device where the nodes operate: set validation\.enabled: true")),
    BadInput("mnist-device-images-zero", "validation.test_images 0",
             lambda t: _run(t, _mnist("dir: null") + "validation: {test_images: 0}\n", r"field 'validation\.test_images' = 0: Input should be greater than or equal to 1")),
    BadInput("mnist-device-images-above-tests", "more device images than test images", _mnist_more_device_images_than_tests),
    BadInput("mnist-data-range-zero", "data_range 0",
             lambda t: _run(t, _mnist("dir: null", ", settings: {data_range: 0}"), r"field 'task\.settings\.data_range' = 0: Input should be greater than 0")),
]  # fmt: skip


@pytest.mark.parametrize("row", ROWS, ids=table_ids(ROWS))
def test_bad_input(row: BadInput, tmp_path: Path) -> None:
    row.check(tmp_path)


def test_a_refused_reuse_leaves_the_reused_run_as_it_was(tmp_path):
    """Another training setting than the reused run's is refused naming it; the reused folder is unchanged."""
    from inmaterio.config import validate_config
    from inmaterio.studies.rings import RingsStudyConfig
    from inmaterio.tasks.run import run_task

    source = tmp_path / "source"
    config = {"task": {"type": "rings_study", "trials": 2, "group": 2, "epochs": 2, "candidates": 1, "validate_repeats": 0,
                       "data": {"n_train": 5, "n_test": 5}}, "executor": {"kind": "serial"}}  # fmt: skip
    run_task(validate_config(RingsStudyConfig, config), source, progress=False)
    other = {**config, "task": {**config["task"], "learning_rate": 0.01, "reuse_training": str(source)}}
    expect_api_error(
        lambda: run_task(validate_config(RingsStudyConfig, other), tmp_path / "again", progress=False), ConfigError,
        r"task\.reuse_training: '.*source' was trained with other settings \(task\.learning_rate: 0\.0065 in the folder, 0\.01 now\)",
        unchanged=[source],
    )  # fmt: skip
    assert not (tmp_path / "again").exists()
