"""The trial executor: same numbers under serial, local pool and a real local Ray; failures retried or reported.

The Ray tests run against one real local Ray instance started for this module
(``ray`` is in the ``dev`` extra); the only fake is the missing-Ray import.
Trial functions are top-level so that worker processes can import them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from inmaterio.errors import ConfigError, InmaterioError
from inmaterio.parallel import (
    ExecutorConfig,
    TrialResult,
    TrialsFailedError,
    executor_config_from_cli,
    run_trials,
)

LOCAL2 = ExecutorConfig(kind="local", workers=2)


# --- trial functions (top-level: pickled by reference into the workers) -------------------------


def seeded_trial(task: dict) -> np.ndarray:
    """A seeded torch computation; later tasks finish first, so completion order differs from task order."""
    time.sleep(0.02 * (task["n"] - task["i"]))
    gen = torch.Generator().manual_seed(task["seed"])
    a = torch.randn(48, 48, generator=gen, dtype=torch.float64)
    w = torch.randn(48, 8, generator=gen)
    out = torch.tanh(a.float() @ w).sum(0) + torch.rand(8, generator=gen)
    return out.numpy()


def fail_once(task: tuple[str, int]) -> int:
    """Raises on the first attempt (no marker file yet), succeeds on the second."""
    marker, value = Path(task[0]), task[1]
    if not marker.exists():
        marker.write_text("attempted")
        raise RuntimeError(f"transient failure of task {value}")
    return value * 10


def fail_always_on_two(i: int) -> int:
    if i == 2:
        raise ValueError(f"bad task {i}")
    return i + 100


def die_once_alone(task: tuple[str, int]) -> int:
    """Trial 1's worker dies (no exception, no cleanup) on its first attempt, once its neighbours are done.

    Waiting for the other trials' results keeps the crash unambiguous: with a
    neighbour still in flight the pool cannot tell which trial killed it and
    reruns both alone, where a trial that dies only once would not be charged.
    """
    folder, i = Path(task[0]), task[1]
    if i != 1:
        (folder / f"done{i}").write_text("")
        return i * 10
    marker = folder / "attempted"
    if marker.exists():
        return 10
    marker.write_text("")
    deadline = time.monotonic() + 30
    while not all((folder / f"done{j}").exists() for j in (0, 2, 3)) and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(1.0)  # the neighbours' results reach the driver before the pool breaks
    os._exit(1)


def die_always_on_one(i: int) -> int:
    if i == 1:
        os._exit(1)
    time.sleep(0.05)
    return i + 100


def die_beside_a_running_neighbour(task: tuple[str, int]) -> int:
    """Trial 1 kills its worker while trial 0 is running in the other worker."""
    folder, i = Path(task[0]), task[1]
    if i == 0:
        (folder / "neighbour_started").write_text("")
        time.sleep(0.5)
        return 0
    deadline = time.monotonic() + 30
    while not (folder / "neighbour_started").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    os._exit(1)


def slower_first(task: tuple[int, int]) -> int:
    """Task i of n sleeps 0.25 s x (n - i): with two workers, task 1 ends before task 0."""
    i, n = task
    time.sleep(0.25 * (n - i))
    return i * i


def torch_threads(_: int) -> int:
    return torch.get_num_threads()


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_instance():
    """One real local Ray for the whole module (start-up costs a few seconds), shut down afterwards."""
    ray = pytest.importorskip("ray", reason='Ray is not installed: pip install -e ".[dev]" installs it')
    # Ray workers import the trial functions of this file by module name, as they would import
    # inmaterio's own; pytest put tests/ on sys.path here, so the workers get it on theirs
    path = os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()


def ray_config(**kwargs) -> ExecutorConfig:
    return ExecutorConfig(kind="ray", workers=2, **kwargs)


# --- same numbers whichever executor runs them ------------------------------------------------------


def test_identical_results_in_task_order_under_serial_local_and_ray(ray_instance):
    n = 6
    tasks = [{"seed": 1000 + 7 * i, "i": i, "n": n} for i in range(n)]
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        truth = [seeded_trial(t) for t in tasks]  # direct calls in this process
    finally:
        torch.set_num_threads(saved)
    assert not all(np.array_equal(truth[0], t) for t in truth[1:]), "seeds must give different numbers"

    runs = {
        "serial": run_trials(seeded_trial, tasks, ExecutorConfig(kind="serial")),
        "local": run_trials(seeded_trial, tasks, LOCAL2),
        "ray": run_trials(seeded_trial, tasks, ray_config()),
    }
    for kind, results in runs.items():
        assert [r.index for r in results] == list(range(n)), kind
        for r, expected in zip(results, truth):
            assert r.ok and r.error is None and r.attempts == 1, (kind, r)
            assert r.value.dtype == np.float32
            assert np.array_equal(r.value, expected), f"{kind}: trial {r.index} differs from the direct call"
            assert r.seconds > 0
    # the pool really ran in other processes (and, with 2 workers and sleeping trials, in two of them)
    local_workers = {r.worker for r in runs["local"]}
    assert str(os.getpid()) not in {w.split(":")[-1] for w in local_workers}
    assert len(local_workers) == 2
    assert ray_instance.is_initialized(), "run_trials must not shut down a Ray instance it did not start"


def test_workers_and_serial_run_with_the_configured_torch_threads():
    saved = torch.get_num_threads()
    assert [r.value for r in run_trials(torch_threads, range(2), ExecutorConfig(kind="local", workers=2))] == [1, 1]
    two = ExecutorConfig(kind="serial", threads_per_worker=2)
    assert [r.value for r in run_trials(torch_threads, range(2), two)] == [2, 2]
    assert torch.get_num_threads() == saved, "serial restores this process's thread count"


def test_no_tasks_give_no_results():
    assert run_trials(fail_always_on_two, [], LOCAL2) == []


# --- results handed over as they finish -------------------------------------------------------------


@pytest.mark.parametrize("kind", ["serial", "local"])
def test_on_result_gets_every_final_result_once_as_it_finishes(kind):
    """Each trial's final result reaches on_result once, failures too; with workers, in completion order."""
    n = 4
    seen: list[TrialResult] = []
    results = run_trials(slower_first, [(i, n) for i in range(n)], ExecutorConfig(kind=kind, workers=2), on_result=seen.append)
    assert sorted(r.index for r in seen) == list(range(n))
    assert all(r == results[r.index] and r.value == r.index**2 for r in seen)
    if kind == "serial":
        assert [r.index for r in seen] == list(range(n))
    else:
        assert [r.index for r in seen] != list(range(n)), "two workers and shorter later trials: task 1 ends before task 0"

    failures: list[TrialResult] = []
    run_trials(fail_always_on_two, range(4), ExecutorConfig(kind=kind, workers=2, retries=1), allow_failures=True,
               on_result=failures.append)  # fmt: skip
    [bad] = [r for r in failures if not r.ok]
    assert bad.index == 2 and bad.attempts == 2 and len(failures) == 4


def _stop_after_first(result: TrialResult) -> None:
    raise RuntimeError(f"stop after trial {result.index}")


@pytest.mark.parametrize("kind", ["serial", "local"])
def test_an_error_in_on_result_stops_the_run(kind):
    with pytest.raises(RuntimeError, match="stop after trial"):
        run_trials(fail_always_on_two, range(6), ExecutorConfig(kind=kind, workers=2), on_result=_stop_after_first)


# --- a trial that raises: retried, then reported ----------------------------------------------------


@pytest.mark.parametrize("kind", ["serial", "local", "ray"])
def test_trial_failing_once_is_retried_and_succeeds(kind, tmp_path, request):
    config = ray_config() if kind == "ray" else ExecutorConfig(kind=kind, workers=2)
    if kind == "ray":
        request.getfixturevalue("ray_instance")
    tasks = [(str(tmp_path / f"marker{i}"), i) for i in range(3)]
    results = run_trials(fail_once, tasks, config)
    assert [r.value for r in results] == [0, 10, 20]
    assert [r.attempts for r in results] == [2, 2, 2]
    assert all(r.ok for r in results)


@pytest.mark.parametrize("kind", ["serial", "local", "ray"])
def test_trial_always_failing_is_reported_and_the_others_are_intact(kind, request):
    if kind == "ray":
        request.getfixturevalue("ray_instance")
    config = ray_config() if kind == "ray" else ExecutorConfig(kind=kind, workers=2, retries=2)
    retries = config.retries
    with pytest.raises(TrialsFailedError) as info:
        run_trials(fail_always_on_two, range(5), config)
    err = info.value
    assert isinstance(err, InmaterioError)
    assert err.failed == [2]
    assert "indices 2" in str(err) and "ValueError: bad task 2" in str(err)
    assert [r.value for r in err.results] == [100, 101, None, 103, 104]

    results = run_trials(fail_always_on_two, range(5), config, allow_failures=True)
    bad = results[2]
    assert bad.value is None and not bad.ok and bad.attempts == retries + 1
    assert bad.error.startswith("ValueError: bad task 2")
    assert "Traceback" in bad.error and "fail_always_on_two" in bad.error  # the worker's traceback
    assert [r.value for r in results if r.index != 2] == [100, 101, 103, 104]
    assert all(r.error is None and r.attempts == 1 for r in results if r.index != 2)


def test_no_retries_means_one_attempt():
    results = run_trials(fail_always_on_two, range(4), ExecutorConfig(kind="serial", retries=0), allow_failures=True)
    assert [r.attempts for r in results] == [1, 1, 1, 1]


# --- a worker process that dies ---------------------------------------------------------------------


def test_worker_dying_once_is_retried_in_a_fresh_pool(tmp_path):
    tasks = [(str(tmp_path), i) for i in range(4)]
    results = run_trials(die_once_alone, tasks, LOCAL2)
    assert [r.value for r in results] == [0, 10, 20, 30]
    assert results[1].attempts == 2
    assert "WorkerCrashed" not in (results[1].error or "")
    assert [r.attempts for r in results if r.index != 1] == [1, 1, 1], "neighbours of a crash are not charged"


def test_worker_always_dying_is_reported_not_dropped():
    results = run_trials(die_always_on_one, range(5), LOCAL2, allow_failures=True)
    assert len(results) == 5
    crashed = results[1]
    assert crashed.value is None and crashed.attempts == 2
    assert crashed.error.startswith("WorkerCrashed") and "trial 1" in crashed.error
    assert [r.value for r in results if r.index != 1] == [100, 102, 103, 104]
    assert all(r.attempts == 1 for r in results if r.index != 1)
    with pytest.raises(TrialsFailedError, match=r"indices 1\b"):
        run_trials(die_always_on_one, range(3), LOCAL2)


def test_neighbour_killed_with_a_broken_pool_is_rerun_and_not_charged(tmp_path):
    results = run_trials(die_beside_a_running_neighbour, [(str(tmp_path), 0), (str(tmp_path), 1)], LOCAL2, allow_failures=True)
    assert (results[0].value, results[0].attempts, results[0].error) == (0, 1, None)
    assert results[1].value is None and results[1].attempts == 2 and "trial 1" in results[1].error


def test_ray_worker_always_dying_is_reported_not_dropped(ray_instance):
    results = run_trials(die_always_on_one, range(4), ray_config(), allow_failures=True)
    assert [r.value for r in results] == [100, None, 102, 103]
    assert results[1].attempts == 2 and "Crashed" in results[1].error


# --- interrupt ----------------------------------------------------------------------------------------

INTERRUPTED = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from inmaterio.parallel import ExecutorConfig, run_trials

    # a test run started as a background job (`pytest &`, nohup) passes SIGINT on ignored, as the shell set it
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def sleeper(i):
        Path(sys.argv[1], f"worker{i}").write_text(str(os.getpid()))
        time.sleep(60)

    if __name__ == "__main__":
        try:
            run_trials(sleeper, range(4), ExecutorConfig(workers=2))
        except KeyboardInterrupt:
            print("interrupted cleanly")
    """
)


def _start_sleeping_workers(script: Path, tmp_path: Path) -> tuple[subprocess.Popen, list[int]]:
    """Run ``script`` (INTERRUPTED) as a driver; return it once both workers sleep in a trial, with their pids."""
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    # a worker creates its file before it writes its pid: wait for both pids, not just both files
    while sum(1 for p in tmp_path.glob("worker*") if p.read_text().strip()) < 2:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError("the workers never started")
        time.sleep(0.05)
    return proc, [int(p.read_text()) for p in tmp_path.glob("worker*")]


def _running(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux /proc)."""
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return False


def test_keyboard_interrupt_stops_the_workers(tmp_path):
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED)
    proc, pids = _start_sleeping_workers(script, tmp_path)
    try:
        proc.send_signal(signal.SIGINT)  # to the driver only, as `kill -INT` would
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "interrupted cleanly" in out
    for pid in pids:  # the 60 s trials were stopped, not waited for
        assert not _running(pid)


def test_workers_end_when_the_driver_is_killed(tmp_path):
    """SIGKILL (or SIGTERM) of the driver cannot run its clean-up; its workers must not go on with
    trials nobody will collect (a capacity trial can last hours)."""
    script = tmp_path / "killed.py"
    script.write_text(INTERRUPTED)
    proc, pids = _start_sleeping_workers(script, tmp_path)
    try:
        proc.kill()
        proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()

    deadline = time.monotonic() + 20
    while any(_running(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(pid) for pid in pids), "a worker outlived its killed driver"


# --- Ray missing, configuration errors -------------------------------------------------------------


def test_missing_ray_is_a_config_error_with_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    with pytest.raises(ConfigError, match=r'pip install "inmaterio\[ray\]"'):
        run_trials(fail_always_on_two, range(2), ExecutorConfig(kind="ray"))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"kind": "local", "workers": 0}, "'workers' = 0"),
        ({"kind": "dask"}, "'kind' = 'dask'"),
        ({"kind": "local", "address": "ray://head:10001"}, "address"),
        ({"kind": "local", "retries": -1}, "'retries' = -1"),
        ({"kind": "local", "threads_per_worker": 0}, "'threads_per_worker' = 0"),
    ],
)
def test_invalid_executor_options_name_the_field(options, field):
    with pytest.raises(ConfigError) as info:
        executor_config_from_cli(**options)
    assert field in str(info.value)


def test_config_from_cli_and_direct_validation():
    config = executor_config_from_cli("ray", None, "ray://head:10001")
    assert config == ExecutorConfig(kind="ray", address="ray://head:10001")
    assert config.workers is None and config.n_workers() == os.cpu_count()
    assert executor_config_from_cli("local", 3, None).n_workers() == 3
    with pytest.raises(ValidationError, match="workers"):
        ExecutorConfig(workers=0)
    with pytest.raises(ValidationError, match="kind"):
        ExecutorConfig(kind="threads")
    assert isinstance(TrialResult(0, 1, None, 1, 0.1, "h:1").ok, bool)
