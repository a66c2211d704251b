"""Measurement files as xarray Datasets and NetCDF files (``inmaterio.devices.instruments.xarray_export``).

Independent truths: h5py's reading of the same file (every array bit for bit, every attribute), the
file's own definitions (time = sample index / sample_rate_hz; a point's current is the mean of the
corrected current over its window), and the files an export must (not) write.
"""

import json
import sys

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

import inmaterio
from inmaterio.cli import app
from inmaterio.devices.instruments import InstrumentDevice, export_netcdf, measurements_in, open_measurements
from inmaterio.errors import ConfigError, ModelFileError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# the analytic device behind a simulated DAQ with a latency: readout_v is 3 rows longer than waveform_v
DAQ = {"type": "instrument", "backend": {"kind": "simulated", "device": {"type": "analytic", "n_activation": 3, "noise_na": 0.2,
       "seed": 1}, "settling_tau_s": 0.0005, "adc_noise_v": 0.001, "latency_samples": 3, "seed": 2},
       "calibration": {"latency_samples": 3, "offset_na": [0.25]}, "settle_samples": 4, "average_samples": 3,
       "chunk_points": 3, "safety": {"max_ramp_v_per_s": 500.0}}  # fmt: skip
POINTS = np.random.default_rng(0).uniform(-0.8, 0.5, (5, 3))


@pytest.fixture
def xr():
    return pytest.importorskip("xarray")


@pytest.fixture
def measured(tmp_path):
    """A measurement file written the way a run writes it: two device objects (two sessions), 5 + 1 points,
    ``chunk_points`` 3 (so the first session holds two acquisitions)."""
    path = tmp_path / "run" / "measurements.h5"
    with measurements_in(path):
        InstrumentDevice(DAQ).measure(POINTS)
        InstrumentDevice(DAQ).measure(np.zeros((1, 3)))
    return path


def h5_read(path):
    """``{"session_k/acquisition_j": (datasets, acquisition attrs, session attrs)}`` and the root attrs, by h5py alone."""
    out = {}
    with h5py.File(path, "r") as f:
        root = dict(f.attrs)
        for s, session in f.items():
            for a, group in session.items():
                out[f"{s}/{a}"] = ({k: group[k][()] for k in group}, dict(group.attrs), dict(session.attrs))
    return out, root


def assert_bitwise(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, (what, actual.dtype, actual.shape)
    assert actual.tobytes() == expected.tobytes(), what


def assert_matches_file(datasets: dict, path, export_version: str | None = None) -> None:
    """Every acquisition of the file is a Dataset whose variables, coordinates and attrs are the file's."""
    groups, root = h5_read(path)
    assert list(datasets) == sorted(groups)
    for name, (arrays, attrs, session) in groups.items():
        ds = datasets[name]
        assert set(ds.data_vars) == set(arrays), name
        for key, value in arrays.items():
            assert_bitwise(ds[key].values, value, f"{name}/{key}")
        n_t, n_e = arrays["waveform_v"].shape
        latency = int(attrs["latency_samples"])
        assert ds["waveform_v"].dims == ("sample", "electrode") and ds["current_na"].dims == ("sample", "readout")
        assert ds["readout_v"].dims == ("raw_sample", "readout") and ds.sizes["raw_sample"] == n_t + latency
        assert ds["points_v"].dims == ("point", "electrode") and ds["window_start"].dims == ("point",)
        assert list(ds["electrode"].values) == json.loads(attrs["electrodes"]) == ["e0", "e1", "e2"]
        assert list(ds["readout"].values) == json.loads(attrs["readouts"])
        rate = attrs["sample_rate_hz"]
        assert_bitwise(ds["time_s"].values, np.arange(n_t) / rate, "time_s")
        assert_bitwise(ds["raw_time_s"].values, np.arange(n_t + latency) / rate, "raw_time_s")
        units = {k: ds[k].attrs["units"] for k in (*arrays, "time_s", "raw_time_s")}
        assert units == {"waveform_v": "V", "readout_v": "V", "current_na": "nA", "points_v": "V", "point_current_na": "nA",
                         "point_stderr_na": "nA", "window_start": "sample", "window_stop": "sample", "time_s": "s",
                         "raw_time_s": "s"}  # fmt: skip
        expected = {
            "source_file": path.name, "source_group": name, "file_format": root["format"],
            "file_format_version": root["format_version"], "file_created_at": root["created_at"],
            "instrument": session["instrument"], "calibration": session["calibration"],
            "package_version": session["package_version"], "session_started_at": session["started_at"],
            **attrs,
        }  # fmt: skip
        if export_version is not None:
            expected["export_package_version"] = export_version
        assert ds.attrs == expected, name
        assert json.loads(ds.attrs["instrument"])["calibration"]["latency_samples"] == 3


def test_open_measurements_gives_the_file_bit_for_bit(xr, measured):
    datasets = open_measurements(measured)
    assert list(datasets) == ["session_0000/acquisition_000000", "session_0000/acquisition_000001",
                              "session_0001/acquisition_000000"]  # fmt: skip
    assert_matches_file(datasets, measured)
    # the dimensions serve the file's definitions: a point's current is the mean over its window of the readout
    for ds in datasets.values():
        for p in range(ds.sizes["point"]):
            window = slice(int(ds["window_start"][p]), int(ds["window_stop"][p]))
            mean = ds["current_na"].isel(readout=0, sample=window).mean().item()
            np.testing.assert_allclose(ds["point_current_na"][p].item(), mean, rtol=1e-12)
            np.testing.assert_array_equal(
                ds["waveform_v"].isel(sample=window).values, np.repeat(ds["points_v"].values[[p]], 3, 0)
            )
    points = xr.concat([d[["points_v", "point_current_na"]] for d in datasets.values()], dim="point")
    np.testing.assert_array_equal(points["points_v"].values, np.concatenate([POINTS, np.zeros((1, 3))]))


def test_the_netcdf_export_reopens_equal_with_xarray_alone(xr, measured, tmp_path):
    pytest.importorskip("h5netcdf")
    out = tmp_path / "netcdf"
    written = export_netcdf(measured, out)
    names = ["session_0000_acquisition_000000.nc", "session_0000_acquisition_000001.nc", "session_0001_acquisition_000000.nc"]
    assert [p.name for p in written] == names and sorted(p.name for p in out.iterdir()) == names  # no partial file left
    opened = open_measurements(measured)
    reopened = {}
    for (name, ds), file in zip(opened.items(), written):
        with xr.open_dataset(file) as nc:  # the engine xarray picks for a NetCDF-4 file: no inmaterio involved
            reopened[name] = nc.load()
        assert reopened[name].attrs.pop("export_package_version") == inmaterio.__version__
        xr.testing.assert_identical(reopened[name], ds)
        reopened[name].attrs["export_package_version"] = inmaterio.__version__
    assert_matches_file(reopened, measured, export_version=inmaterio.__version__)


def test_an_export_never_overwrites(xr, measured, tmp_path):
    pytest.importorskip("h5netcdf")
    out = tmp_path / "netcdf"
    out.mkdir()
    (out / "session_0000_acquisition_000001.nc").write_text("a lab's own file")
    with pytest.raises(ModelFileError, match=r"session_0000_acquisition_000001\.nc' exists .*never overwrites"):
        export_netcdf(measured, out)
    assert [p.name for p in out.iterdir()] == ["session_0000_acquisition_000001.nc"]  # nothing written before refusing
    assert (out / "session_0000_acquisition_000001.nc").read_text() == "a lab's own file"
    (out / "session_0000_acquisition_000001.nc").unlink()
    written = export_netcdf(measured, out)
    before = {p: p.read_bytes() for p in written}
    with pytest.raises(ModelFileError, match=r"session_0000_acquisition_000000\.nc' exists \(3 of the 3"):
        export_netcdf(measured, out)
    assert {p: p.read_bytes() for p in written} == before
    with pytest.raises(ConfigError, match="is a file; give a folder"):
        export_netcdf(measured, written[0])


def test_an_export_on_a_file_system_without_hard_links_copies_exclusively(xr, measured, tmp_path, monkeypatch):
    pytest.importorskip("h5netcdf")
    import errno
    import os

    def no_links(src, dst):
        raise OSError(errno.EPERM, "hard links not supported", str(dst))

    monkeypatch.setattr(os, "link", no_links)
    written = export_netcdf(measured, tmp_path / "nc")
    assert len(written) == 3 and sorted(p.name for p in (tmp_path / "nc").iterdir()) == [p.name for p in written]
    with xr.open_dataset(written[-1]) as nc:
        xr.testing.assert_equal(nc.load(), open_measurements(measured)["session_0001/acquisition_000000"])
    real_exists = type(written[0]).exists
    monkeypatch.setattr(type(written[0]), "exists", lambda p: False if p.suffix == ".nc" else real_exists(p))  # a race
    before = written[0].read_bytes()
    with pytest.raises(ModelFileError, match=r"session_0000_acquisition_000000\.nc' exists; export to another --out"):
        export_netcdf(measured, tmp_path / "nc")
    assert written[0].read_bytes() == before and not list((tmp_path / "nc").glob(".*partial"))


def test_foreign_corrupt_and_missing_files_are_refused(xr, measured, tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f.attrs["format"] = "someone.elses"
        f["data"] = np.arange(3)
    with pytest.raises(ModelFileError, match=r"not an inmaterio measurement file \(format attribute 'someone.elses'"):
        open_measurements(foreign)
    text = tmp_path / "notes.h5"
    text.write_text("not HDF5")
    with pytest.raises(ModelFileError, match="cannot open .*notes.h5' as an HDF5 measurement file"):
        open_measurements(text)
    with pytest.raises(ModelFileError, match="no measurement file .*missing.h5"):
        open_measurements(tmp_path / "missing.h5")
    with h5py.File(measured, "a") as f:
        del f["session_0000/acquisition_000001"].attrs["sample_rate_hz"]
    with pytest.raises(ModelFileError, match=r"'session_0000/acquisition_000001' lacks the attribute\(s\) \['sample_rate_hz'\]"):
        open_measurements(measured)
    with h5py.File(measured, "a") as f:
        f.attrs["format_version"] = 2
    with pytest.raises(ModelFileError, match="format version 2; this inmaterio reads version 1"):
        open_measurements(measured)


def test_without_xarray_the_error_says_how_to_install(monkeypatch, measured):
    monkeypatch.setitem(sys.modules, "xarray", None)  # not installed: "import xarray" raises ImportError
    with pytest.raises(ConfigError, match=r'pip install "inmaterio\[xarray\]"'):
        open_measurements(measured)
    result = CliRunner().invoke(app, ["device", "export", str(measured), "--out", str(measured.parent / "nc")])
    assert result.exit_code == 2 and 'pip install "inmaterio[xarray]"' in result.output


def test_cli_export(xr, measured, tmp_path):
    pytest.importorskip("h5netcdf")
    runner = CliRunner()
    out = tmp_path / "nc"
    result = runner.invoke(app, ["device", "export", str(measured), "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "exported 3 acquisition(s) of 2 session(s)" in text and len(list(out.glob("*.nc"))) == 3
    for args, message in [
        ([str(measured), "--out", str(out)], "session_0000_acquisition_000000.nc' exists"),
        ([str(tmp_path / "missing.h5"), "--out", str(tmp_path / "nc2")], "no measurement file"),
        ([str(tmp_path), "--out", str(tmp_path / "nc2")], "(it is a folder)"),
    ]:
        result = runner.invoke(app, ["device", "export", *args])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
        assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.arange(3)
    result = runner.invoke(app, ["device", "export", str(foreign), "--out", str(tmp_path / "nc3")])
    assert result.exit_code == 2 and "not an inmaterio measurement file" in " ".join(result.output.split())
    assert not (tmp_path / "nc3").exists()
    result = runner.invoke(app, ["device", "export", str(measured)])  # --out is required: a usage error
    assert result.exit_code == 2
