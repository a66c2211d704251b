"""Bad voltages, device configs, descriptions and output folders: through the device, the processors and the CLI.

Each row is a bad input a user could give; the check asserts the exact error
class (CLI: exit code 2, one line, no traceback), that the message names the
electrode or field, the value and what is allowed, and that files already
saved are unchanged. The decisions the rows encode: voltages are real
numbers (integers are volts like floats and give float currents; complex,
bool, text, None and objects are refused), never clipped, and checked
before anything reaches a device.
"""

from __future__ import annotations

import errno
import json
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from bad_inputs import BadInput, expect_api_error, expect_cli_error, table_ids
from inmaterio.cli import app
from inmaterio.devices import AnalyticDevice
from inmaterio.devices.registry import device_from_description
from inmaterio.errors import ConfigError, VoltageError
from inmaterio.processors import DeviceProcessor, SurrogateProcessor
from inmaterio.surrogate import default_model_dir, load_default_surrogate

pytestmark = pytest.mark.usefixtures("one_torch_thread")

runner = CliRunner()
A3 = "device: {type: analytic, n_activation: 3, noise_na: 0.0}\n"
NOISY = "device: {type: analytic, n_activation: 3, noise_na: 1.5, seed: 2}\n"
RANGE = r"\[-1\.2, 0\.6\] V"


def _config(tmp_path: Path, text: str | bytes, name: str = "dev.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _measure_cli(tmp_path: Path, voltages: str, match: str, config: str | bytes = A3) -> None:
    expect_cli_error(app, ["device", "measure", voltages, "--config", str(_config(tmp_path, config))], match)


def _device(voltages, match: str) -> None:
    expect_api_error(lambda: AnalyticDevice(n_activation=3).measure(voltages), VoltageError, match)


_surrogate = None


def _surrogate_processor() -> SurrogateProcessor:
    global _surrogate
    if _surrogate is None:
        _surrogate = SurrogateProcessor(load_default_surrogate())
    return _surrogate


class _Counting(AnalyticDevice):
    """The analytic device, counting the calls that reach it."""

    calls = 0

    def _measure(self, voltages):
        type(self).calls += 1
        return super()._measure(voltages)


def _device_processor(voltages, match: str) -> None:
    _Counting.calls = 0
    processor = DeviceProcessor(_Counting(n_activation=3), plateau_samples=2, ramp_samples=2)
    expect_api_error(lambda: processor(voltages), VoltageError, match)
    assert _Counting.calls == 0, "a refused voltage reached the device"


def _finished_sweep(tmp_path: Path, points: int = 3) -> Path:
    out = tmp_path / "iv"
    result = runner.invoke(
        app, ["device", "iv", "--config", str(_config(tmp_path, A3)), "--out", str(out), "--points", str(points)]
    )
    assert result.exit_code == 0, result.output
    return out


def _iv(tmp_path: Path, out: Path, match: str, *extra: str, unchanged=()) -> None:
    argv = ["device", "iv", "--config", str(_config(tmp_path, A3)), "--out", str(out), "--points", "3", *extra]
    expect_cli_error(app, argv, match, unchanged=unchanged)


def _iv_out_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("my notes")
    _iv(tmp_path, tmp_path / "notes.txt", r"'.*notes\.txt' is a file, not a folder", unchanged=[tmp_path / "notes.txt"])


def _iv_out_is_foreign(tmp_path: Path) -> None:
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "thesis.tex").write_text("chapter 1")
    _iv(
        tmp_path,
        tmp_path / "thesis",
        r"is not a run folder \(it holds thesis\.tex and no run\.json\)",
        unchanged=[tmp_path / "thesis"],
    )


def _iv_other_settings(tmp_path: Path) -> None:
    out = _finished_sweep(tmp_path, points=4)
    _iv(tmp_path, out, r"points: 4 in the folder, 3 now.*--overwrite", unchanged=[out])


def _surrogate_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(default_model_dir(), folder)
    return folder


def _surrogate_corrupt_json(tmp_path: Path) -> None:
    folder = _surrogate_copy(tmp_path)
    (folder / "model.json").write_text("{bad")
    expect_cli_error(app, ["surrogate", "info", str(folder)], r"model\.json' is not valid JSON", unchanged=[folder])


def _surrogate_truncated_weights(tmp_path: Path) -> None:
    folder = _surrogate_copy(tmp_path)
    with open(folder / "weights.safetensors", "r+b") as fh:
        fh.truncate(100)
    expect_cli_error(
        app, ["surrogate", "info", str(folder)], r"weights\.safetensors' is not a readable safetensors file", unchanged=[folder]
    )


def _surrogate_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.jpg").write_bytes(b"\xff\xd8\xff")
    expect_cli_error(app, ["surrogate", "info", str(tmp_path / "photos")], r"has no model\.json", unchanged=[tmp_path / "photos"])


ROWS = [
    # through the device (Python API)
    BadInput("device-nan", "NaN on e1", lambda t: _device([[0, np.nan, 0]], rf"electrode 'e1' voltage nan in sample 0 is not finite; allowed range {RANGE}")),
    BadInput("device-inf", "inf on e2", lambda t: _device(np.array([[0, 0, np.inf]]), rf"electrode 'e2' voltage inf in sample 0 is not finite; allowed range {RANGE}")),
    BadInput("device-complex", "a complex voltage", lambda t: _device(np.array([[0.1 + 0.2j, 0, 0]]), rf"electrode 'e0' voltage \(0\.1\+0\.2j\) in sample 0 is complex; give a real number of volts in {RANGE}")),
    BadInput("device-string", "a list holding the text '0.1'", lambda t: _device([[0, 0, "0.1"]], rf"electrode 'e2' voltage '0\.1' in sample 0 is not a real number \(str\); .* in {RANGE}")),
    BadInput("device-text", "the text '0,0,0' instead of numbers", lambda t: _device("0,0,0", r"must be numbers of shape \(batch, 3\) or \(3,\) for electrodes \[e0, e1, e2\], got the text '0,0,0'")),
    BadInput("device-bool", "a boolean array", lambda t: _device(np.array([[True, False, False]]), rf"electrode 'e0' voltage True in sample 0 is not a real number \(bool\); .* in {RANGE}")),
    BadInput("device-none", "None in a list", lambda t: _device([[0, 0, 0], [0, None, 0]], r"electrode 'e1' voltage None in sample 1 is not a real number \(NoneType\)")),
    BadInput("device-3d", "a (2, 1, 3) array", lambda t: _device(np.zeros((2, 1, 3)), r"shape \(batch, 3\) or \(3,\) for electrodes \[e0, e1, e2\], got shape \(2, 1, 3\)")),
    BadInput("device-ragged", "rows of different lengths", lambda t: _device([[0, 0, 0], [0, 0]], r"rectangular \(batch, 3\) or \(3,\) array of numbers, got a ragged list")),
    BadInput("device-int-range", "integer 1 V on e1 (range ends at 0.6 V)", lambda t: _device(np.array([[0, 1, 0]]), rf"electrode 'e1' voltage 1 V in sample 0 outside {RANGE}")),
    # through the processors
    BadInput("surrogate-complex", "a complex tensor into the surrogate", lambda t: expect_api_error(lambda: _surrogate_processor()(torch.zeros(2, 7, dtype=torch.complex64)), VoltageError, rf"electrode 'e0' voltage 0j in sample 0 is complex; .* {RANGE}")),
    BadInput("surrogate-int-range", "integer tensor with 1 V on e0", lambda t: expect_api_error(lambda: _surrogate_processor()(torch.tensor([[1, 0, 0, 0, 0, 0, 0]])), VoltageError, rf"electrode 'e0' voltage 1 V in sample 0 outside {RANGE} .*nothing was evaluated")),
    BadInput("surrogate-last-dim", "6 voltages for 7 electrodes", lambda t: expect_api_error(lambda: _surrogate_processor()(torch.zeros(4, 6)), VoltageError, r"shape \(\.\.\., 7\) for electrodes \['e0', .*'e6'\], got shape \(4, 6\)")),
    BadInput("surrogate-string", "a list with a string into the surrogate", lambda t: expect_api_error(lambda: _surrogate_processor()([[0, 0, 0, "x", 0, 0, 0]]), VoltageError, rf"electrode 'e3' voltage 'x' in sample 0 is not a real number \(str\); .* {RANGE}")),
    BadInput("device-processor-nan", "NaN into the device path (never reaches the device)", lambda t: _device_processor(torch.tensor([[0.0, float("nan"), 0.0]]), rf"electrode 'e1' voltage nan V in sample 0 is not finite \(range {RANGE}\)")),
    BadInput("device-processor-bool", "a bool tensor into the device path", lambda t: _device_processor(torch.ones(1, 3, dtype=torch.bool), r"electrode 'e0' voltage True in sample 0 is not a real number \(bool\)")),
    # descriptions and device parameters
    BadInput("description-type", "a description of an unregistered device", lambda t: expect_api_error(lambda: device_from_description({"type": "daq", "seed": 0}), ConfigError, r"type 'daq'; registered device types: \['analytic', 'hopping', 'instrument'\]")),
    BadInput("analytic-range", "low_v above high_v", lambda t: expect_api_error(lambda: AnalyticDevice(low_v=1.0, high_v=0.0), ConfigError, r"low_v 1\.0 V must be below high_v 0\.0 V")),
    # through `inmaterio device measure`
    BadInput("cli-text", "device measure 0,a,0", lambda t: _measure_cli(t, "0,a,0", r"numbers separated by commas, got 'a' as value 1 of '0,a,0'")),
    BadInput("cli-empty-value", "device measure 0,,0", lambda t: _measure_cli(t, "0,,0", r"got an empty value as value 1 of '0,,0'")),
    BadInput("cli-count", "four voltages for three electrodes", lambda t: _measure_cli(t, "0,0,0,0", r"shape \(batch, 3\) or \(3,\) for electrodes \[e0, e1, e2\], got shape \(4,\)")),
    BadInput("cli-negative-range", "device measure -1.5,0,0 (below the range)", lambda t: _measure_cli(t, "-1.5,0,0", rf"electrode 'e0' voltage -1\.5 V in sample 0 outside {RANGE}")),
    BadInput("cli-nan", "device measure nan,0,0", lambda t: _measure_cli(t, "nan,0,0", rf"electrode 'e0' voltage nan in sample 0 is not finite; allowed range {RANGE}")),
    BadInput("cli-no-voltages", "device measure without voltages", lambda t: expect_cli_error(app, ["device", "measure"], r"Missing argument 'voltages'")),
    # device configs through --config
    BadInput("config-unknown-key", "n_activaton (misspelt)", lambda t: _measure_cli(t, "0,0,0", r"unknown key 'device\.analytic\.n_activaton' \(value 3\)", "device: {type: analytic, n_activaton: 3}\n")),
    BadInput("config-wrong-type", "n_activation: many", lambda t: _measure_cli(t, "0,0,0", r"field 'device\.analytic\.n_activation' = 'many': expected an integer, not str", "device: {type: analytic, n_activation: many}\n")),
    BadInput("config-nan", "amplitude_na: .nan", lambda t: _measure_cli(t, "0,0,0", r"field 'device\.analytic\.amplitude_na' = nan: Input should be a finite number", "device: {type: analytic, amplitude_na: .nan}\n")),
    BadInput("config-negative-noise", "noise_na: -1", lambda t: _measure_cli(t, "0,0,0", r"field 'device\.analytic\.noise_na' = -1: Input should be greater than or equal to 0", "device: {type: analytic, noise_na: -1}\n")),
    BadInput("config-zero-temperature", "temperature_k: 0 on the virtual DNPU", lambda t: _measure_cli(t, "0,0,0,0,0,0,0", r"field 'device\.hopping\.temperature_k' = 0: Input should be greater than 0", "device: {type: hopping, temperature_k: 0}\n")),
    BadInput("config-grid", "grid_spacing_nm: 0.01 (a 15000-ring Laplace grid)", lambda t: _measure_cli(t, "0,0,0,0,0,0,0", r"grid_spacing_nm 0\.01 gives 15000 grid rings over radius_nm 150\.0; at most 400", "device: {type: hopping, grid_spacing_nm: 0.01}\n")),
    BadInput("config-crowded", "min_site_distance_nm: 50 (dopants cannot be placed)", lambda t: _measure_cli(t, "0,0,0,0,0,0,0", r"203 dopants .* min_site_distance_nm 50\.0 nm apart would cover 564% of the disc", "device: {type: hopping, min_site_distance_nm: 50}\n")),
    BadInput("config-type", "device type daq", lambda t: _measure_cli(t, "0,0,0", r"Input tag 'daq' found using 'type' does not match any of the expected tags: 'hopping', 'analytic'", "device: {type: daq}\n")),
    BadInput("config-binary", "a binary file as --config", lambda t: _measure_cli(t, "0,0,0", r"'.*dev\.yaml' is not UTF-8 text \(bad byte at offset 128\)", bytes(range(256)))),
    BadInput("config-missing", "--config that does not exist", lambda t: expect_cli_error(app, ["device", "measure", "0,0,0", "--config", str(t / "nowhere.yaml")], r"configuration file '.*nowhere\.yaml' does not exist")),
    # `inmaterio device iv` output folders and numbers
    BadInput("iv-out-file", "device iv --out an existing file", _iv_out_is_a_file),
    BadInput("iv-out-foreign", "device iv --out a folder of other files", _iv_out_is_foreign),
    BadInput("iv-other-settings", "device iv --out a finished sweep with other --points", _iv_other_settings),
    BadInput("iv-points", "device iv --points 1", lambda t: _iv(t, t / "iv", r"Invalid value for '--points'", "--points", "1")),
    # `inmaterio surrogate info`
    BadInput("surrogate-missing", "surrogate info of a missing folder", lambda t: expect_cli_error(app, ["surrogate", "info", str(t / "nope")], r"surrogate '.*nope' does not exist")),
    BadInput("surrogate-corrupt", "surrogate info with a corrupt model.json", _surrogate_corrupt_json),
    BadInput("surrogate-truncated", "surrogate info with truncated weights", _surrogate_truncated_weights),
    BadInput("surrogate-foreign", "surrogate info of a folder of photos", _surrogate_foreign_folder),
]  # fmt: skip


@pytest.mark.parametrize("row", ROWS, ids=table_ids(ROWS))
def test_bad_input(row: BadInput, tmp_path: Path) -> None:
    row.check(tmp_path)


# ------------------------------------------------------------------------------------------------ accepted inputs


def test_integer_voltages_are_volts_and_give_float_currents():
    processor = _surrogate_processor()
    zeros_int, zeros = torch.zeros(1, 7, dtype=torch.int64), torch.zeros(1, 7)
    current = processor(zeros_int)
    assert current.dtype == torch.get_default_dtype()
    assert torch.equal(current, processor(zeros))
    assert abs(float(current)) < processor.info.noise_na  # zero bias, zero current: within the bundled model's error
    device = AnalyticDevice(n_activation=3)
    measured = device.measure(np.array([[-1, 0, 0]], dtype=np.int32))
    assert measured.dtype == np.float64
    np.testing.assert_array_equal(measured, device.measure(np.array([[-1.0, 0.0, 0.0]])))
    on_device = DeviceProcessor(device)(torch.tensor([[-1, 0, 0]]))
    assert on_device.dtype == torch.get_default_dtype()
    assert on_device.item() == pytest.approx(measured[0], rel=1e-6)  # float32: the default dtype


@pytest.mark.parametrize(
    "argv",
    [
        ["-0.9,-0.3,-0.6", "--config", "CFG"],
        ["--config", "CFG", "-0.9,-0.3,-0.6"],
        ["--config", "CFG", "-0.9", "-0.3", "-0.6"],
        ["--config", "CFG", "-0.9, -0.3, -0.6"],
        ["--config", "CFG", "--", "-0.9,-0.3,-0.6"],
    ],
)
def test_device_measure_reads_negative_numbers_as_a_person_types_them(tmp_path, argv):
    cfg = str(_config(tmp_path, A3))
    result = runner.invoke(app, ["device", "measure", *[cfg if a == "CFG" else a for a in argv]])
    assert result.exit_code == 0, result.output
    device = AnalyticDevice(n_activation=3)
    expected = device.measure([-0.9, -0.3, -0.6])[0]
    assert f"I = {expected:.3f} ± 0.000 nA" in result.output
    assert abs(expected - device.measure([0.0, 0.0, 0.0])[0]) > 10  # the negative voltages make the current


def test_device_measure_default_is_the_virtual_dnpu_with_seven_negative_voltages():
    result = runner.invoke(app, ["device", "measure", "-0.5,0,0,0,0,0,0"])
    assert result.exit_code == 0, result.output
    assert "I = " in result.output and " nA" in result.output


# ------------------------------------------------------------------------------------------------ device iv


def _iv_data(folder: Path) -> dict:
    return json.loads((folder / "iv.json").read_text())


def _plan(data: dict) -> np.ndarray:
    """The operating points of a sweep, rebuilt from iv.json: electrode k swept, the others at base_v."""
    sweep = np.array(data["sweep_v"])
    n, points = sweep.shape
    plan = np.repeat(np.array(data["base_v"])[None, :], n * points, axis=0)
    for k in range(n):
        plan[k * points : (k + 1) * points, k] = sweep[k]
    return plan


def test_iv_checks_the_folder_before_measuring(tmp_path, monkeypatch):
    import inmaterio.smg.iv

    measured = []
    monkeypatch.setattr(inmaterio.smg.iv, "iv_curves", lambda *a, **k: measured.append(1))
    (tmp_path / "notes.txt").write_text("mine")
    _iv(tmp_path, tmp_path / "notes.txt", r"is a file, not a folder", unchanged=[tmp_path / "notes.txt"])
    assert not measured


def test_iv_keeps_the_curves_and_repeats_its_numbers(tmp_path):
    cfg = str(_config(tmp_path, NOISY))
    for name in ("a", "b"):
        result = runner.invoke(app, ["device", "iv", "--config", cfg, "--out", str(tmp_path / name), "--points", "4"])
        assert result.exit_code == 0, result.output
    a, b = _iv_data(tmp_path / "a"), _iv_data(tmp_path / "b")
    assert a == b  # noise keyed by what the sweep is: the same command measures the same numbers
    device = AnalyticDevice(n_activation=3, noise_na=1.5, seed=2)
    truth = device.true_current(_plan(a))
    residual = (np.array(a["current_na"]).ravel() - truth) / 1.5
    assert np.abs(residual).max() < 5 and 0.3 < residual.std() < 2.5  # noise of 1.5 nA around the closed form
    assert (tmp_path / "a" / "iv_curves.png").stat().st_size > 1000
    before = (tmp_path / "a" / "iv.json").read_bytes()
    again = runner.invoke(app, ["device", "iv", "--config", cfg, "--out", str(tmp_path / "a"), "--points", "4"])
    assert again.exit_code == 0 and "already holds this sweep" in again.output
    assert (tmp_path / "a" / "iv.json").read_bytes() == before


def test_iv_data_survive_a_failed_write(tmp_path, monkeypatch):
    import inmaterio.runs

    original = inmaterio.runs.atomic_path

    @contextmanager
    def disk_full_for_data(path):
        if Path(path).name == "iv.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        with original(path) as tmp:
            yield tmp

    monkeypatch.setattr(inmaterio.runs, "atomic_path", disk_full_for_data)
    monkeypatch.setattr(inmaterio.runs.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    out = tmp_path / "iv"
    output = expect_cli_error(
        app, ["device", "iv", "--config", str(_config(tmp_path, A3)), "--out", str(out), "--points", "3"],
        r"could not write the iv\.json in '.*iv' \(the disk is full\); it was saved to '.*inmaterio-rescue.*iv\.json' instead",
    )  # fmt: skip
    rescued = Path(output.split("saved to '")[1].split("'")[0].replace("\n", ""))
    data = _iv_data(rescued.parent)
    np.testing.assert_allclose(
        np.array(data["current_na"]).ravel(), AnalyticDevice(n_activation=3).true_current(_plan(data)), rtol=1e-12
    )
    assert json.loads((out / "run.json").read_text())["state"] == "failed"
