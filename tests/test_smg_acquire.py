"""Resumable acquisition: interrupt + resume equals an uninterrupted run (noisy devices too); foreign plans are refused."""

import numpy as np
import pytest

from bad_inputs import snapshot
from inmaterio.devices import AnalyticDevice
from inmaterio.errors import ConfigError, RunInterrupted, VoltageError
from inmaterio.runs import read_run
from inmaterio.smg.acquire import acquire
from inmaterio.smg.config import AcquisitionConfig, SamplingConfig
from inmaterio.smg.dataset import load_dataset
from inmaterio.smg.sampling import sample_plan

CONFIG = AcquisitionConfig(batch_size=100, progress=False)


def quiet(_message):
    pass


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


def test_interrupted_then_resumed_equals_uninterrupted(tmp_path):
    v = plan()
    reference = acquire(AnalyticDevice(), v, tmp_path / "ref", CONFIG, notify=quiet)

    with pytest.raises(RunInterrupted, match="run the same command again to resume"):
        acquire(InterruptingDevice(interrupt_at=4), v, tmp_path / "run", CONFIG, notify=quiet)
    assert read_run(tmp_path / "run")["state"] == "interrupted"
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
    assert len(list((tmp_path / "run" / "chunks").glob("*.npz"))) == 3

    messages = []
    resumed_device = InterruptingDevice(interrupt_at=0)
    resumed = acquire(resumed_device, v, tmp_path / "run", CONFIG, notify=messages.append)
    assert "300 of 1050 points already measured" in messages
    assert resumed_device.calls == 8  # points 300..1050 in batches of 100
    np.testing.assert_array_equal(resumed.voltages_v, reference.voltages_v)
    np.testing.assert_array_equal(resumed.current_na, reference.current_na)
    np.testing.assert_array_equal(resumed.stderr_na, reference.stderr_na)
    assert resumed.metadata["fingerprint"] == reference.metadata["fingerprint"]
    # the chunks are gone, the dataset is on disk, the run is finished after two sessions
    assert not (tmp_path / "run" / "chunks").exists()
    record = read_run(tmp_path / "run")
    assert record["state"] == "finished" and record["sessions"] == 2
    np.testing.assert_array_equal(load_dataset(tmp_path / "run").current_na, reference.current_na)


def test_noisy_device_resumes_to_the_same_numbers(tmp_path):
    """Each batch's noise comes from the stream of its first point, not from the device's call count."""
    v = plan(n=450)
    reference = acquire(AnalyticDevice(noise_na=2.0), v, tmp_path / "ref", CONFIG, notify=quiet)
    assert np.all(reference.stderr_na == 2.0) and np.std(reference.current_na - AnalyticDevice().measure(v)) > 1.0
    with pytest.raises(RunInterrupted):
        acquire(InterruptingDevice(interrupt_at=3, noise_na=2.0), v, tmp_path / "run", CONFIG, notify=quiet)
    device = AnalyticDevice(noise_na=2.0)
    device.measure(v[:7])  # a fresh process would have made other calls first: the resumed batches must not care
    resumed = acquire(device, v, tmp_path / "run", CONFIG, notify=quiet)
    np.testing.assert_array_equal(resumed.current_na, reference.current_na)
    # another plan on the same device draws other noise (the plan is part of the stream key)
    other = acquire(AnalyticDevice(noise_na=2.0), v[::-1].copy(), tmp_path / "other", CONFIG, notify=quiet)
    noise_ref = reference.current_na - AnalyticDevice().measure(v)
    noise_other = other.current_na[::-1] - AnalyticDevice().measure(v)
    assert abs(np.corrcoef(noise_ref, noise_other)[0, 1]) < 0.2


def test_resume_with_another_batch_size_is_refused(tmp_path):
    """Other batches draw other noise: the batch size is part of the result, so it must match to resume."""
    v = plan()
    with pytest.raises(RunInterrupted):
        acquire(InterruptingDevice(interrupt_at=3), v, tmp_path / "run", CONFIG, notify=quiet)
    before = snapshot(tmp_path / "run")
    with pytest.raises(ConfigError, match=r"batch_size: 100 in the folder, 333 now"):
        acquire(AnalyticDevice(), v, tmp_path / "run", AcquisitionConfig(batch_size=333, progress=False), notify=quiet)
    assert snapshot(tmp_path / "run") == before


def test_mismatched_plan_or_device_is_refused_and_files_untouched(tmp_path):
    directory = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        acquire(InterruptingDevice(interrupt_at=2), plan(seed=0), directory, CONFIG, notify=quiet)
    before = snapshot(directory)
    with pytest.raises(ConfigError, match=r"plan\.fingerprint: '[0-9a-f]{8}.*' in the folder, '[0-9a-f]{8}.*' now"):
        acquire(AnalyticDevice(), plan(seed=1), directory, CONFIG, notify=quiet)
    with pytest.raises(ConfigError, match=r"device\.seed: 0 in the folder, 7 now"):
        acquire(AnalyticDevice(seed=7), plan(seed=0), directory, CONFIG, notify=quiet)
    assert snapshot(directory) == before


def test_finished_dataset_is_reused_never_overwritten(tmp_path):
    directory = tmp_path / "run"
    first = acquire(AnalyticDevice(), plan(), directory, CONFIG, notify=quiet)
    before = snapshot(directory)
    device = InterruptingDevice(interrupt_at=0)
    again = acquire(device, plan(), directory, CONFIG, notify=quiet)
    assert device.calls == 0
    np.testing.assert_array_equal(again.current_na, first.current_na)
    with pytest.raises(ConfigError, match="finished run of 'inmaterio.smg.acquisition' made with other settings"):
        acquire(AnalyticDevice(), plan(seed=2), directory, CONFIG, notify=quiet)
    assert snapshot(directory) == before


def test_out_of_range_or_empty_plan_is_refused_before_anything_is_written(tmp_path):
    v = plan()
    v[5, 2] = 3.0
    with pytest.raises(VoltageError, match="electrode 'e2' voltage 3 V in sample 5 outside"):
        acquire(AnalyticDevice(), v, tmp_path / "run", CONFIG, notify=quiet)
    with pytest.raises(VoltageError, match="the plan has no points"):
        acquire(AnalyticDevice(), plan()[:0], tmp_path / "run", CONFIG, notify=quiet)
    assert not (tmp_path / "run").exists()


def test_metadata_records_provenance(tmp_path):
    device = AnalyticDevice(noise_na=1.0)
    ds = acquire(device, plan(n=50), tmp_path / "run", CONFIG, metadata={"sampling": {"kind": "uniform"}}, notify=quiet)
    meta = load_dataset(tmp_path / "run").metadata
    assert meta["electrode_names"] == device.activation_names
    assert meta["readout_name"] == device.readout_name
    assert meta["device"] == device.describe()
    assert meta["sampling"] == {"kind": "uniform"}
    assert meta["units"]["current_na"] == "nA"
    assert meta["fingerprint"] == read_run(tmp_path / "run")["fingerprint"]
    assert "inmaterio_version" in meta and "created_utc" in meta
    np.testing.assert_array_equal(ds.stderr_na, 1.0)
