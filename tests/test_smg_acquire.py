"""Resumable acquisition: interrupt + resume equals an uninterrupted run; foreign plans are refused."""

import os

import numpy as np
import pytest

from inmaterio.devices import AnalyticDevice
from inmaterio.errors import ModelFileError
from inmaterio.smg.acquire import acquire
from inmaterio.smg.config import AcquisitionConfig, SamplingConfig
from inmaterio.smg.dataset import load_dataset
from inmaterio.smg.sampling import sample_plan

CONFIG = AcquisitionConfig(batch_size=100, progress=False)


class InterruptingDevice(AnalyticDevice):
    """An analytic device whose operator presses Ctrl-C during call number ``interrupt_at`` (1-based)."""

    def __init__(self, interrupt_at: int, **kwargs):
        super().__init__(**kwargs)
        self.interrupt_at = interrupt_at
        self.calls = 0

    def _measure(self, voltages):
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return super()._measure(voltages)


def plan(seed=0, n=1050):
    return sample_plan(SamplingConfig(kind="uniform", n_samples=n, seed=seed), AnalyticDevice().voltage_ranges)


def snapshot(directory):
    return {
        p: (directory / p).read_bytes() for p in sorted(os.listdir(directory)) if (directory / p).is_file()
    }


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path, capsys):
    v = plan()
    reference = acquire(AnalyticDevice(), v, tmp_path / "ref", CONFIG)

    with pytest.raises(KeyboardInterrupt):
        acquire(InterruptingDevice(interrupt_at=4), v, tmp_path / "run", CONFIG)
    assert (tmp_path / "run" / "acquisition_state.json").is_file()
    assert len(list((tmp_path / "run" / "partial").glob("chunk_*.npz"))) == 3

    resumed_device = InterruptingDevice(interrupt_at=0)
    resumed = acquire(resumed_device, v, tmp_path / "run", CONFIG)
    assert "300 of 1050 points already measured" in capsys.readouterr().out
    assert resumed_device.calls == 8  # points 300..1050 in batches of 100
    np.testing.assert_array_equal(resumed.voltages_v, reference.voltages_v)
    np.testing.assert_array_equal(resumed.current_na, reference.current_na)
    np.testing.assert_array_equal(resumed.stderr_na, reference.stderr_na)
    assert resumed.metadata["fingerprint"] == reference.metadata["fingerprint"]
    # the checkpoint is gone, the dataset is on disk
    assert not (tmp_path / "run" / "acquisition_state.json").exists()
    assert not (tmp_path / "run" / "partial").exists()
    np.testing.assert_array_equal(load_dataset(tmp_path / "run").current_na, reference.current_na)


def test_resume_with_another_batch_size(tmp_path):
    v = plan()
    reference = acquire(AnalyticDevice(), v, tmp_path / "ref", CONFIG)
    with pytest.raises(KeyboardInterrupt):
        acquire(InterruptingDevice(interrupt_at=3), v, tmp_path / "run", CONFIG)
    resumed = acquire(AnalyticDevice(), v, tmp_path / "run", AcquisitionConfig(batch_size=333, progress=False))
    np.testing.assert_array_equal(resumed.current_na, reference.current_na)


def test_mismatched_plan_in_checkpoint_is_refused_and_files_untouched(tmp_path):
    directory = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        acquire(InterruptingDevice(interrupt_at=2), plan(seed=0), directory, CONFIG)
    before = snapshot(directory)
    chunks_before = sorted(os.listdir(directory / "partial"))
    with pytest.raises(ModelFileError, match="another plan or device"):
        acquire(AnalyticDevice(), plan(seed=1), directory, CONFIG)
    with pytest.raises(ModelFileError, match="another plan or device"):
        acquire(AnalyticDevice(seed=7), plan(seed=0), directory, CONFIG)
    assert snapshot(directory) == before
    assert sorted(os.listdir(directory / "partial")) == chunks_before


def test_finished_dataset_is_reused_never_overwritten(tmp_path):
    directory = tmp_path / "run"
    first = acquire(AnalyticDevice(), plan(), directory, CONFIG)
    before = snapshot(directory)
    device = InterruptingDevice(interrupt_at=0)
    again = acquire(device, plan(), directory, CONFIG)
    assert device.calls == 0
    np.testing.assert_array_equal(again.current_na, first.current_na)
    with pytest.raises(ModelFileError, match="never overwritten"):
        acquire(AnalyticDevice(), plan(seed=2), directory, CONFIG)
    assert snapshot(directory) == before


def test_out_of_range_plan_is_refused_before_measuring(tmp_path):
    v = plan()
    v[5, 2] = 3.0
    with pytest.raises(ValueError, match="e2"):
        acquire(AnalyticDevice(), v, tmp_path / "run", CONFIG)
    assert not (tmp_path / "run").exists()


def test_metadata_records_provenance(tmp_path):
    device = AnalyticDevice(noise_na=1.0)
    ds = acquire(device, plan(n=50), tmp_path / "run", CONFIG, metadata={"sampling": {"kind": "uniform"}})
    meta = load_dataset(tmp_path / "run").metadata
    assert meta["electrode_names"] == device.activation_names
    assert meta["readout_name"] == device.readout_name
    assert meta["device"] == device.describe()
    assert meta["sampling"] == {"kind": "uniform"}
    assert meta["units"]["current_na"] == "nA"
    assert "inmaterio_version" in meta and "created_utc" in meta
    np.testing.assert_array_equal(ds.stderr_na, 1.0)
