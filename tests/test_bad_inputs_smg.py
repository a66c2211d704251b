"""Bad inputs of the surrogate-model generator and of surrogate model files, each answered by name.

Every row gives a bad input as a user would (a corrupted or foreign model folder, a malicious brains-py
pickle, an SMG config with a wrong value, an unusable ``--out``, an export that would replace the
bundled model) and checks the exact error class, that the message names the field / value / range,
that the command line answers with one line and exit code 2, and that nothing saved was changed.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

import inmaterio.devices.analytic as analytic
from bad_inputs import BadInput, expect_api_error, expect_cli_error, snapshot, table_ids
from inmaterio.cli import app
from inmaterio.config import load_config
from inmaterio.errors import ConfigError, ModelFileError, SimulationError
from inmaterio.smg import SMGConfig, run_smg
from inmaterio.surrogate import (
    DeviceInfo,
    SurrogateModel,
    default_model_dir,
    load_brainspy_checkpoint,
    load_surrogate,
    save_surrogate,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RANGES = [(-1.2, 0.6), (-0.8, 0.4), (-0.5, 0.5)]
SMALL_RUN = {
    "device": {"type": "analytic", "n_activation": 3, "noise_na": 0.5},
    "sampling": {"kind": "lhs", "n_samples": 400, "seed": 0},
    "test_sampling": {"kind": "uniform", "n_samples": 100, "seed": 1},
    "acquisition": {"batch_size": 200, "progress": False},
    "training": {"hidden_sizes": [8], "max_epochs": 2, "num_threads": 1},
    "consistency_repeats": 0,
    "iv_points": 3,
}
SHARED: dict[str, Path] = {}  # a finished SMG run, made once per module; rows copy it


@pytest.fixture(scope="module", autouse=True)
def finished_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("smg") / "run"
    run_smg(SMGConfig(**SMALL_RUN), folder, progress=False, notify=lambda message: None)
    SHARED["run"] = folder
    yield folder
    SHARED.clear()


def copy_run(tmp_path: Path) -> Path:
    return Path(shutil.copytree(SHARED["run"], tmp_path / "run"))


def write_config(tmp_path: Path, text: str | bytes, name: str = "smg.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def config_with(tmp_path: Path, section: str | None, key: str, value) -> Path:
    """SMALL_RUN with ``[section.]key = value``, as YAML."""
    data = json.loads(json.dumps(SMALL_RUN))
    (data[section] if section else data)[key] = value
    return write_config(tmp_path, yaml.safe_dump(data))


def smg_run(config: Path, out: Path, *extra: str) -> list[str]:
    return ["smg", "run", str(config), "--out", str(out), "--no-progress", *extra]


# --- model folders ------------------------------------------------------------------------------


def saved_model(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    info = DeviceInfo(electrode_names=["e0", "e1", "e2"], readout_name="out", voltage_ranges_v=RANGES)
    model = SurrogateModel(info, hidden_sizes=(7, 5))
    model.set_output_normalization(mean_na=-2.0, std_na=15.0)
    return save_surrogate(model, tmp_path / "model")


def edit_json(directory: Path, change) -> None:
    path = directory / "model.json"
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def edit_weights(directory: Path, change, hash_kept: bool) -> None:
    """Change the tensors; then drop ``weights_sha256`` (an older or hand-made file) or record the new one."""
    path = directory / "weights.safetensors"
    tensors = load_file(path)
    change(tensors)
    save_file(tensors, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    edit_json(directory, lambda d: d.update(weights_sha256=digest) if hash_kept else d.pop("weights_sha256"))


def set_element(name: str, index: tuple[int, ...], value: float):
    def change(tensors):
        tensors[name][index] = value

    return change


def check_model(tmp_path: Path, corrupt, pattern: str) -> None:
    """The corrupted model folder is refused by load_surrogate and by ``surrogate info``; the folder is left as it is."""
    directory = saved_model(tmp_path)
    corrupt(directory)
    expect_api_error(lambda: load_surrogate(directory), ModelFileError, pattern, unchanged=[directory])
    expect_cli_error(app, ["surrogate", "info", str(directory)], pattern, unchanged=[directory])


def model_row(id: str, given: str, corrupt, pattern: str) -> BadInput:
    return BadInput(id, given, lambda tmp_path: check_model(tmp_path, corrupt, pattern))


def absurd_sizes_fail_at_once(tmp_path: Path) -> None:
    """hidden_sizes of 200,000 x 200,000 would be 160 GB of weights: refused from the file's shapes, nothing allocated."""
    directory = saved_model(tmp_path)
    edit_json(directory, lambda d: d["architecture"].update(hidden_sizes=[200_000, 200_000]))
    start = time.perf_counter()
    expect_api_error(
        lambda: load_surrogate(directory),
        ModelFileError,
        r"tensor 'mlp\.0\.weight' has shape \(7, 3\), the architecture \{'hidden_sizes': \[200000, 200000\].* needs \(200000, 3\)",
        unchanged=[directory],
    )
    assert time.perf_counter() - start < 5.0


MODEL_ROWS = [
    model_row("model-no-hash-huge-weight", "model.json without weights_sha256 and a weight of 1e37 (the reported case)",
              lambda d: edit_weights(d, set_element("mlp.2.weight", (3, 1), 1e37), hash_kept=False),
              r"tensor 'mlp\.2\.weight' element \[3, 1\] = 1e\+37 is outside \[-1e\+06, 1e\+06\]"),
    model_row("model-nan-bias-with-hash", "a NaN bias, with a weights hash that matches it",
              lambda d: edit_weights(d, set_element("mlp.0.bias", (4,), float("nan")), hash_kept=True),
              r"tensor 'mlp\.0\.bias' element \[4\] is nan, not a finite number"),
    model_row("model-inf-offset", "an infinite output offset",
              lambda d: edit_weights(d, lambda t: t["output_offset"].fill_(float("inf")), hash_kept=False),
              r"tensor 'output_offset' element \[\] is inf, not a finite number"),
    model_row("model-zero-output-scale", "output scale (the training std) 0",
              lambda d: edit_weights(d, lambda t: t["output_scale"].fill_(0.0), hash_kept=False),
              r"tensor 'output_scale' = 0 nA must be > 0"),
    model_row("model-zero-input-scale", "input scale 0 for electrode e1",
              lambda d: edit_weights(d, set_element("input_scale", (1,), 0.0), hash_kept=False),
              r"tensor 'input_scale' element \[1\] \(electrode 'e1'\) is 0"),
    model_row("model-exploding-prediction", "moderate weights that multiply to 1e18 nA at the corners",
              lambda d: edit_weights(d, lambda t: [t[k].fill_(9e5) for k in ("mlp.0.weight", "mlp.2.weight", "mlp.4.weight")],
                                     hash_kept=False),
              r"predicts [0-9.e+]+ nA at voltages \[.*\] V, [0-9.e+]+ output scales from its offset \(bound ±1e\+06\)"),
    model_row("model-int-weights", "weights stored as integers",
              lambda d: edit_weights(d, lambda t: t.update({"mlp.0.weight": t["mlp.0.weight"].to(torch.int32)}), hash_kept=False),
              r"tensor 'mlp\.0\.weight' has dtype torch\.int32, expected a float dtype"),
    model_row("model-json-binary", "model.json replaced by binary bytes",
              lambda d: (d / "model.json").write_bytes(bytes(range(256)) * 4), r"model\.json' is not valid JSON"),
    model_row("model-json-truncated", "model.json cut in the middle",
              lambda d: (d / "model.json").write_text((d / "model.json").read_text()[:200]), r"model\.json' is not valid JSON"),
    model_row("model-json-foreign", "a package.json in place of model.json",
              lambda d: (d / "model.json").write_text('{"name": "left-pad", "version": "1.3.0"}'),
              r"is not an inmaterio surrogate \(format=None, expected 'inmaterio-surrogate'\)"),
    model_row("model-json-deeply-nested", "model.json of 100000 nested lists",
              lambda d: (d / "model.json").write_text("[" * 100_000 + "]" * 100_000), r"nested too deeply"),
    model_row("model-hash-not-hex", "weights_sha256 a number",
              lambda d: edit_json(d, lambda j: j.update(weights_sha256=12345)),
              r"weights_sha256 must be 64 lower-case hex digits, got 12345"),
    model_row("model-hidden-size-bool", "hidden_sizes [true, 5]",
              lambda d: edit_json(d, lambda j: j["architecture"].update(hidden_sizes=[True, 5])),
              r"invalid 'architecture': hidden_sizes must be integers, got \[True, 5\]"),
    model_row("model-weights-truncated-no-hash", "weights file truncated, no hash to compare",
              lambda d: ((d / "weights.safetensors").write_bytes((d / "weights.safetensors").read_bytes()[:-50]),
                         edit_json(d, lambda j: j.pop("weights_sha256"))),
              r"weights\.safetensors' is not a readable safetensors file \(corrupt or truncated\)"),
    BadInput("model-absurd-hidden-sizes", "model.json claims hidden sizes of 200000 x 200000", absurd_sizes_fail_at_once),
]  # fmt: skip


# --- brains-py imports --------------------------------------------------------------------------


class Payload:
    """Pickles to a call that creates ``marker`` when unpickled by plain pickle."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def brainspy_file(path: Path, hidden=(6, 4), state_change=None, **info_changes) -> Path:
    torch.manual_seed(1)
    widths = (3, *hidden, 1)
    state = {}
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        state[f"model.{2 * i}.weight"] = torch.randn(n_out, n_in) * 0.3
        state[f"model.{2 * i}.bias"] = torch.randn(n_out) * 0.1
    if state_change:
        state_change(state)
    info = {
        "model_structure": {"hidden_sizes": list(hidden), "D_in": 3, "D_out": 1, "activation": "relu"},
        "electrode_info": {
            "activation_electrodes": {"voltage_ranges": np.array(RANGES)},
            "output_electrodes": {"amplification": np.array([28.5]), "clipping_value": [-114.0, 114.0]},
        },
        **info_changes,
    }
    torch.save({"model_state_dict": state, "info": info}, path)
    return path


def malicious_pickle_refused(tmp_path: Path) -> None:
    witness = tmp_path / "witness"
    torch.save({"x": Payload(witness)}, tmp_path / "witness.pt")
    torch.load(tmp_path / "witness.pt", weights_only=False)
    assert witness.exists()  # the payload works when unpickled by plain pickle

    marker = tmp_path / "pwned"
    path = brainspy_file(tmp_path / "training_data.pt", training_configs={"hook": Payload(marker)})
    pattern = r"training_data\.pt' cannot be read safely as tensors and plain data .*nothing in it was run\): Unsupported global: GLOBAL getattr"
    expect_api_error(lambda: load_brainspy_checkpoint(path), ModelFileError, pattern, unchanged=[tmp_path])
    expect_cli_error(app, ["surrogate", "import-brainspy", str(path), str(tmp_path / "out")], pattern)
    assert not marker.exists() and not (tmp_path / "out").exists()


def brainspy_row(id: str, given: str, make, pattern: str) -> BadInput:
    def check(tmp_path: Path) -> None:
        path = make(tmp_path / "training_data.pt")
        start = time.perf_counter()
        expect_api_error(lambda: load_brainspy_checkpoint(path), ModelFileError, pattern, unchanged=[tmp_path])
        assert time.perf_counter() - start < 5.0
        expect_cli_error(app, ["surrogate", "import-brainspy", str(path), str(tmp_path / "out")], pattern)
        assert not (tmp_path / "out").exists()

    return BadInput(id, given, check)


BRAINSPY_ROWS = [
    BadInput("brainspy-malicious-pickle", "a training_data.pt whose info runs code when unpickled", malicious_pickle_refused),
    brainspy_row("brainspy-absurd-hidden-sizes", "model_structure hidden_sizes [1000000, 4] on a [6, 4] network",
                 lambda p: brainspy_file(p, model_structure={"hidden_sizes": [10**6, 4], "activation": "relu"}),
                 r"tensor 'mlp\.0\.weight' has shape \(6, 3\), the architecture .* needs \(1000000, 3\)"),
    brainspy_row("brainspy-nan-weight", "a NaN in the first layer's weights",
                 lambda p: brainspy_file(p, state_change=lambda s: s["model.0.weight"].__setitem__((2, 1), float("nan"))),
                 r"tensor 'mlp\.0\.weight' element \[2, 1\] is nan, not a finite number"),
    brainspy_row("brainspy-hidden-sizes-text", "hidden_sizes 'ninety'",
                 lambda p: brainspy_file(p, model_structure={"hidden_sizes": "ninety", "activation": "relu"}),
                 r"invalid model_structure: hidden_sizes must be integers"),
]  # fmt: skip


# --- SMG configs --------------------------------------------------------------------------------


def config_row(id: str, given: str, make, pattern: str, error=ConfigError) -> BadInput:
    """Refused by load_config + run_smg with ``error`` and by ``smg run``, before any folder is made."""

    def check(tmp_path: Path) -> None:
        config = make(tmp_path)
        out = tmp_path / "out"
        api = lambda: run_smg(load_config(SMGConfig, config), out, progress=False, notify=lambda message: None)  # noqa: E731
        expect_api_error(api, error, pattern, unchanged=[config])
        expect_cli_error(app, smg_run(config, out), pattern, unchanged=[config])
        assert not out.exists()

    return BadInput(id, given, check)


CONFIG_ROWS = [
    config_row("smg-unknown-key", "training.learnign_rate (a typo)",
               lambda t: config_with(t, "training", "learnign_rate", 0.01),
               r"unknown key 'training\.learnign_rate' \(value 0\.01\)"),
    config_row("smg-learning-rate-inf", "training.learning_rate .inf",
               lambda t: write_config(t, yaml.safe_dump(SMALL_RUN).replace("num_threads: 1", "num_threads: 1\n  learning_rate: .inf")),
               r"field 'training\.learning_rate' = inf: Input should be a finite number"),
    config_row("smg-split-nan", "postprocess.split [.nan, 0.5, 0.5]",
               lambda t: write_config(t, yaml.safe_dump(SMALL_RUN) + "postprocess: {split: [.nan, 0.5, 0.5]}\n"),
               r"field 'postprocess\.split\.0' = nan: Input should be a finite number"),
    config_row("smg-zero-samples", "sampling.n_samples 0",
               lambda t: config_with(t, "sampling", "n_samples", 0),
               r"field 'sampling\.n_samples' = 0: Input should be greater than 0"),
    config_row("smg-negative-epochs", "training.max_epochs -3",
               lambda t: config_with(t, "training", "max_epochs", -3),
               r"field 'training\.max_epochs' = -3: Input should be greater than 0"),
    config_row("smg-huge-plan", "sampling.n_samples 10^12 (55 TB of voltages)",
               lambda t: config_with(t, "sampling", "n_samples", 10**12),
               r"field 'sampling\.n_samples' = 1000000000000: Input should be less than or equal to 100000000"),
    config_row("smg-huge-network", "training.hidden_sizes [100000, 100000]",
               lambda t: config_with(t, "training", "hidden_sizes", [100_000, 100_000]),
               r"hidden_sizes \[100000, 100000\] make a network of at least 1e\+10 parameters; at most 1e\+08 are allowed"),
    config_row("smg-batch-size-text", "acquisition.batch_size 'large'",
               lambda t: config_with(t, "acquisition", "batch_size", "large"),
               r"field 'acquisition.*batch_size' = 'large'.*expected (an )?int"),
    config_row("smg-same-test-plan", "test_sampling equal to sampling",
               lambda t: config_with(t, None, "test_sampling", SMALL_RUN["sampling"]),
               r"test_sampling \(kind 'lhs', seed 0\) must differ from sampling in kind or seed"),
    config_row("smg-adaptive-no-rounds", "adaptive.rounds 0",
               lambda t: config_with(t, None, "adaptive", {"rounds": 0, "points_per_round": 10}),
               r"field 'adaptive\.rounds' = 0: Input should be greater than or equal to 1"),
    config_row("smg-adaptive-slice-fraction", "adaptive.slice_fraction 1.5",
               lambda t: config_with(t, None, "adaptive", {"rounds": 1, "points_per_round": 10, "slice_fraction": 1.5}),
               r"field 'adaptive\.slice_fraction' = 1\.5: Input should be less than or equal to 1"),
    config_row("smg-adaptive-one-member", "adaptive.members 1 (no spread to select by)",
               lambda t: config_with(t, None, "adaptive", {"rounds": 1, "points_per_round": 10, "members": 1}),
               r"field 'adaptive\.members' = 1: Input should be greater than or equal to 2"),
    config_row("smg-adaptive-stop-ratio", "adaptive.stop_ratio 0.5 (picks always worse than validation: never stops)",
               lambda t: config_with(t, None, "adaptive", {"rounds": 2, "points_per_round": 10, "stop_ratio": 0.5}),
               r"field 'adaptive\.stop_ratio' = 0\.5: Input should be greater than 1"),
    config_row("smg-binary-yaml", "a binary file as the config",
               lambda t: write_config(t, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe"),
               r"configuration file '.*smg\.yaml' is not UTF-8 text \(bad byte at offset 0\)"),
    config_row("smg-nyquist", "sine waves sampled at 1 Hz",
               lambda t: config_with(t, None, "sampling", {"kind": "sine", "n_samples": 400, "seed": 0, "sample_rate_hz": 1.0}),
               r"sampling\.sample_rate_hz = 1\.0 Hz is too low: electrode 2 oscillates at 1\.118 Hz"),
    config_row("smg-unbuildable-device", "a virtual DNPU whose electrodes reach no dopant",
               lambda t: config_with(t, None, "device", {"type": "hopping", "n_acceptors": 5, "electrode_cutoff_nm": 1.0}),
               r"electrode e\d has no acceptor within electrode_cutoff_nm=1\.0 nm", error=SimulationError),
]  # fmt: skip


def clipped_away(tmp_path: Path) -> None:
    """clip_na [-1, 1] nA on a device whose currents are mostly larger: too few points are left to train."""
    config = write_config(tmp_path, yaml.safe_dump({**SMALL_RUN, "postprocess": {"clip_na": [-0.001, 0.001]}}))
    expect_cli_error(app, smg_run(config, tmp_path / "out"),
                     r"postprocess kept 0 of 400 measured points \(0 not finite, 400 clipped, 0 outliers; postprocess "
                     r"clip_na \(-0\.001, 0\.001\).*gives 0 training and 0 validation points")  # fmt: skip
    assert (tmp_path / "out" / "train_data" / "data.npz").is_file()  # the measurement is kept for a corrected re-run


# --- output folders -----------------------------------------------------------------------------


def out_is_a_file(tmp_path: Path) -> None:
    stray = tmp_path / "notes.txt"
    stray.write_text("my notes")
    config = write_config(tmp_path, yaml.safe_dump(SMALL_RUN))
    expect_cli_error(app, smg_run(config, stray), r"'.*notes\.txt' is a file, not a folder; choose a folder", unchanged=[stray])


def out_is_foreign(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "cat.jpg").write_bytes(b"\xff\xd8\xff")
    config = write_config(tmp_path, yaml.safe_dump(SMALL_RUN))
    expect_cli_error(app, smg_run(config, photos), r"'.*photos' is not a run folder \(it holds cat\.jpg and no run\.json\)",
                     unchanged=[photos])  # fmt: skip


def out_is_another_kind(tmp_path: Path) -> None:
    run = copy_run(tmp_path)
    config = write_config(tmp_path, yaml.safe_dump(SMALL_RUN))
    expect_cli_error(app, smg_run(config, run / "training"),
                     r"holds a run of kind 'inmaterio\.smg\.training', not 'inmaterio\.smg'; choose another folder \(nothing was changed\)",
                     unchanged=[run])  # fmt: skip


def out_has_another_config(tmp_path: Path) -> None:
    run = copy_run(tmp_path)
    config = config_with(tmp_path, None, "iv_points", 7)
    expect_cli_error(app, smg_run(config, run),
                     r"holds a finished run of 'inmaterio\.smg' made with other settings: config\.iv_points: 3 in the folder, 7 now.*--overwrite",
                     unchanged=[run])  # fmt: skip


def training_resumed_with_other_data(tmp_path: Path) -> None:
    """The training folder of a run, fed other data through the API: the fields that differ are named."""
    from inmaterio.smg.config import TrainConfig
    from inmaterio.smg.dataset import Dataset
    from inmaterio.smg.train import train_surrogate

    run = copy_run(tmp_path)
    device = analytic.AnalyticDevice(n_activation=3)
    v = np.random.default_rng(5).uniform(-1.2, 0.6, (50, 3))
    data = Dataset(v, device.measure(v), np.zeros(50))
    config = TrainConfig(**SMALL_RUN["training"])
    expect_api_error(lambda: train_surrogate(data, data, config, run / "training", DeviceInfo.from_device(device), progress=False),
                     ConfigError, r"data_fingerprint: '[0-9a-f]{8}.*' in the folder, '[0-9a-f]{8}.*' now", unchanged=[run])  # fmt: skip


# --- export -------------------------------------------------------------------------------------


class _BundledCopy:
    """The bundled model copied into ``tmp_path`` and installed as the package default for the block;
    the real one is checked untouched."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = Path(shutil.copytree(default_model_dir(), tmp_path / "bundled"))
        self._patch = pytest.MonkeyPatch()
        self._real = snapshot(default_model_dir())

    def __enter__(self) -> Path:
        self._patch.setattr("inmaterio.surrogate.io.default_model_dir", lambda: self.path)
        return self.path

    def __exit__(self, *exc) -> None:
        self._patch.undo()
        assert snapshot(default_model_dir()) == self._real


def export_over_bundled_default(tmp_path: Path) -> None:
    run = copy_run(tmp_path)
    with _BundledCopy(tmp_path) as bundled:
        expect_cli_error(app, ["smg", "export", str(run), "--overwrite"],
                         r"'.*bundled' is the bundled default surrogate .* pass --replace-bundled", unchanged=[bundled, run])  # fmt: skip
        expect_cli_error(app, ["smg", "export", str(run), "--to", str(bundled), "--overwrite"],
                         r"is the bundled default surrogate", unchanged=[bundled, run])  # fmt: skip


def export_replace_bundled_with_foreign_device(tmp_path: Path) -> None:
    """Even asked for, the bundled model is replaced only by one that records the virtual DNPU demo rebuilds."""
    run = copy_run(tmp_path)
    with _BundledCopy(tmp_path) as bundled:
        expect_cli_error(app, ["smg", "export", str(run), "--overwrite", "--replace-bundled"],
                         r"cannot become the bundled surrogate: demo rebuilds the virtual device from its info\.provenance\.device, "
                         r"and .*type 'analytic'", unchanged=[bundled, run])  # fmt: skip


def export_of_unfinished_run(tmp_path: Path) -> None:
    run = copy_run(tmp_path)
    record = json.loads((run / "run.json").read_text())
    (run / "run.json").write_text(json.dumps({**record, "state": "interrupted"}))
    expect_cli_error(app, ["smg", "export", str(run), "--to", str(tmp_path / "dest")],
                     r"'.*run' is not a finished SMG run: it is interrupted; run the same 'smg run' command", unchanged=[run])  # fmt: skip
    expect_cli_error(app, ["smg", "export", str(run / "training"), "--to", str(tmp_path / "dest")],
                     r"is not a finished SMG run: it holds a run of kind 'inmaterio\.smg\.training'", unchanged=[run])  # fmt: skip
    assert not (tmp_path / "dest").exists()


def export_to_a_file(tmp_path: Path) -> None:
    run = copy_run(tmp_path)
    stray = tmp_path / "model.txt"
    stray.write_text("keep me")
    expect_cli_error(app, ["smg", "export", str(run), "--to", str(stray), "--overwrite"],
                     r"cannot export the surrogate to '.*model\.txt': it exists and is not a directory", unchanged=[stray])  # fmt: skip


def export_over_a_folder_without_model(tmp_path: Path) -> None:
    run = copy_run(tmp_path)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "thesis.tex").write_text("\\chapter{}")
    expect_cli_error(app, ["smg", "export", str(run), "--to", str(docs), "--overwrite"],
                     r"'.*docs' holds no surrogate \(it holds thesis\.tex\); --overwrite replaces only a surrogate folder",
                     unchanged=[docs])  # fmt: skip


OUTPUT_ROWS = [
    BadInput("smg-clipped-away", "postprocess.clip_na [-0.001, 0.001] nA that drops every point", clipped_away),
    BadInput("smg-out-is-file", "smg run --out pointing at a file", out_is_a_file),
    BadInput("smg-out-foreign", "smg run --out pointing at a folder of photos", out_is_foreign),
    BadInput("smg-out-other-kind", "smg run --out pointing at the training folder of a run", out_is_another_kind),
    BadInput("smg-out-other-config", "smg run of another config on a finished run folder", out_has_another_config),
    BadInput("training-other-data", "train_surrogate on a training folder with other data", training_resumed_with_other_data),
    BadInput("export-over-bundled", "smg export --overwrite with the default destination", export_over_bundled_default),
    BadInput("export-bundled-foreign-device", "smg export --replace-bundled of an analytic-device model",
             export_replace_bundled_with_foreign_device),
    BadInput("export-unfinished", "smg export of an interrupted run / of a training folder", export_of_unfinished_run),
    BadInput("export-to-file", "smg export --to an existing file", export_to_a_file),
    BadInput("export-over-non-model", "smg export --overwrite into a folder that holds no model", export_over_a_folder_without_model),
]  # fmt: skip

ROWS = MODEL_ROWS + BRAINSPY_ROWS + CONFIG_ROWS + OUTPUT_ROWS


@pytest.mark.parametrize("row", ROWS, ids=table_ids(ROWS))
def test_bad_input(row: BadInput, tmp_path: Path) -> None:
    row.check(tmp_path)


def test_the_table_is_large_enough():
    assert len(ROWS) >= 15


def test_model_without_the_optional_hash_still_loads(tmp_path):
    """The weights hash is optional: an intact folder without it loads and predicts as before."""
    directory = saved_model(tmp_path)
    before = load_surrogate(directory)
    edit_json(directory, lambda d: d.pop("weights_sha256"))
    after = load_surrogate(directory)
    v = np.random.default_rng(0).uniform(np.array(RANGES)[:, 0], np.array(RANGES)[:, 1], (20, 3))
    np.testing.assert_array_equal(after.predict(v), before.predict(v))


def test_export_is_whole_or_nothing(tmp_path, monkeypatch):
    """A write failing in the middle of an export leaves the old model in place, complete."""
    run = copy_run(tmp_path)
    dest = tmp_path / "dest"

    assert CliRunner().invoke(app, ["smg", "export", str(run), "--to", str(dest)]).exit_code == 0
    (dest / "README.md").write_text("notes kept across exports")
    before = snapshot(dest)
    original = Path.write_bytes
    calls = {"n": 0}

    def failing(self, data):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(28, "No space left on device")
        return original(self, data)

    monkeypatch.setattr(Path, "write_bytes", failing)
    expect_cli_error(app, ["smg", "export", str(run), "--to", str(dest), "--overwrite"],
                     r"cannot export the surrogate to '.*dest': the disk is full; the folder is unchanged")  # fmt: skip
    monkeypatch.undo()
    assert snapshot(dest) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "run"]  # no staging folder left behind
    load_surrogate(dest)
    # and a successful overwrite keeps the README
    assert CliRunner().invoke(app, ["smg", "export", str(run), "--to", str(dest), "--overwrite"]).exit_code == 0
    assert (dest / "README.md").read_text() == "notes kept across exports"
