"""Run many independent trials: serially, on a local process pool, or on Ray.

Experiments such as 1000 trainings per classifier, ``2^N`` labelings times
attempts for the capacity study, genomes or data sampling are lists of
independent *trials*. :func:`run_trials` runs ``fn(task)`` for every task with
one of three executors chosen by :class:`ExecutorConfig`:

``serial``
    In this process, one after the other (debugging, profiling).
``local`` (default)
    A :class:`concurrent.futures.ProcessPoolExecutor` of ``workers`` processes
    on this machine.
``ray``
    Ray tasks (``pip install "inmaterio[ray]"``), on a cluster given by
    ``address`` or on a local Ray instance started for the call.

Same numbers whichever executor runs them
------------------------------------------
Each task carries its own seed; the executor never injects randomness, and
every trial runs with ``threads_per_worker`` torch threads (the serial
executor sets the same count in this process for the duration of the call),
so a trial gives the same bits under ``serial``, ``local`` and ``ray`` and in
any completion order. Results come back in task order.

Failures are retried or reported, never dropped
-----------------------------------------------
A trial that raises is run again, up to ``retries`` more times. If it still
fails, its :class:`TrialResult` has ``value=None`` and ``error`` holding the
exception type, message and traceback of the last attempt, and
:func:`run_trials` raises :class:`TrialsFailedError` naming the failed
indices (its ``results`` attribute keeps every result), unless
``allow_failures=True``.

A worker process that dies (``os._exit``, a segfault, the OOM killer) breaks
a process pool (``BrokenProcessPool``). The pool is replaced by a fresh one
and every trial that was running in it is run again. Each worker reports the
trial it starts, so a crash with one trial in flight is charged to that
trial; when several were in flight the culprit is unknown, and each of them
is re-run alone in a one-worker pool, where a crash is unambiguous. A trial
killed only because a neighbour crashed the pool is not charged an attempt.
A trial that keeps crashing its worker is reported like any failed trial.
Workers end with their driver: a driver killed by a signal leaves no
worker running on (each watches its parent's sentinel).
Under Ray a crashed worker fails only its own task (``WorkerCrashedError``),
which is charged and retried the same way.

Start method of the local pool (measured)
-----------------------------------------
``fork`` copies a parent that may already run torch/OpenMP thread pools,
which can deadlock the child, so it is not used. ``forkserver`` (the server
imports torch, ``torch._dynamo`` (which the first optimiser step of a
process would import, 1.3 s) and this module once; it runs no torch ops, so
it starts no OpenMP threads, and each worker is forked from it) and ``spawn`` are both
safe. Measured on the shared 2-core development
machine (load average 4), a ``run_trials`` call of 2 trials on 2 workers,
each trial importing the trainer: ``spawn`` 5.6-6.1 s per call (every worker
imports torch afresh); ``forkserver`` 2.6 s for the first call of a
process (server start-up) and 0.2 s for every later call, which matters
because a crashed worker costs a fresh pool.
``forkserver`` is used where available, ``spawn`` elsewhere (Windows).
Like ``spawn`` it re-imports the main script in each worker, so scripts need
the ``if __name__ == "__main__":`` guard, and ``fn`` must be a top-level
function of a module the workers can import (the pool pickles it by
reference; Ray's cloudpickle does the same except for functions of the main
script, which it copies by value, so module-level caches there do not last
from one trial to the next).

Results as they come
--------------------
``on_result`` is called in the driver with each trial's final
:class:`TrialResult` as soon as it has one (in completion order, failures
included), so a caller can save finished trials at once: a study that is
interrupted and started again runs only the trials it has not saved.

Example::

    from inmaterio.parallel import ExecutorConfig, run_trials

    results = run_trials(train_one, [{"seed": s} for s in range(1000)], ExecutorConfig(workers=2), progress=True)
    losses = [r.value for r in results]
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Literal

from pydantic import Field, model_validator

from inmaterio.config import StrictModel, validate_config
from inmaterio.errors import ConfigError, InmaterioError
from inmaterio.progress import ProgressBar, progress_bar

__all__ = [
    "ExecutorConfig",
    "TrialResult",
    "TrialsFailedError",
    "run_trials",
    "executor_config_from_cli",
]

RAY_INSTALL_HINT = 'pip install "inmaterio[ray]"'
# imported once in the forkserver, not in every worker of every pool: torch._dynamo (1.3-1.8 s here) is
# imported by the first torch.optim step of a process; importing these starts no threads (checked)
_FORKSERVER_PRELOAD = ["torch", "torch._dynamo", "inmaterio.parallel"]


class ExecutorConfig(StrictModel):
    """Where and how :func:`run_trials` runs the trials.

    Attributes
    ----------
    kind : ``"serial"``, ``"local"`` (process pool, the default) or ``"ray"``.
    workers : parallel worker processes; None = ``os.cpu_count()``. For Ray
        with ``address`` set, the cluster decides how many tasks run at once
        (``workers`` is then ignored); without ``address`` it is the number of
        CPUs of the local Ray instance started for the call.
    address : Ray cluster address (``"auto"``, ``"ray://host:10001"``, ...);
        None = start a local Ray instance. Only for ``kind="ray"``.
    retries : extra attempts of a trial that raised or crashed its worker.
    threads_per_worker : torch CPU threads inside each worker (and in this
        process under ``serial``). 1 by default: two torch threads per process
        on a shared 2-core machine stall each other badly.
    """

    kind: Literal["serial", "local", "ray"] = "local"
    workers: int | None = Field(None, ge=1)
    address: str | None = None
    retries: int = Field(1, ge=0)
    threads_per_worker: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _address_only_for_ray(self) -> ExecutorConfig:
        if self.address is not None and self.kind != "ray":
            raise ValueError(f"address {self.address!r} is a Ray cluster address; it needs kind='ray', not {self.kind!r}")
        return self

    def n_workers(self) -> int:
        """``workers``, or the number of CPUs of this machine when it is None."""
        return self.workers if self.workers is not None else (os.cpu_count() or 1)


def executor_config_from_cli(kind: str, workers: int | None = None, address: str | None = None, **extra: Any) -> ExecutorConfig:
    """An :class:`ExecutorConfig` from command-line options (``--executor ray --address ...``).

    ``extra`` takes further fields (``retries``, ``threads_per_worker``).
    Options left at None keep their defaults.

    Raises
    ------
    ConfigError
        Naming the offending field and value, e.g. ``field 'workers' = 0: ...``.
    """
    data = {"kind": kind, "workers": workers, "address": address, **extra}
    return validate_config(ExecutorConfig, {k: v for k, v in data.items() if v is not None}, "executor options")


@dataclasses.dataclass(frozen=True)
class TrialResult:
    """The outcome of one trial.

    Attributes
    ----------
    index : position of the task in the ``tasks`` sequence.
    value : what ``fn(task)`` returned; None if the trial failed.
    error : None on success; otherwise the exception type, message and
        formatted traceback of the last attempt (or a description of the
        worker crash).
    attempts : attempts charged to the trial (1 = succeeded first time).
    seconds : wall time of the last attempt, measured in the worker
        (0.0 when the last attempt crashed its worker process).
    worker : ``"host:pid"`` of the process that ran the last attempt
        (``"host:?"`` when unknown).
    """

    index: int
    value: Any
    error: str | None
    attempts: int
    seconds: float
    worker: str

    @property
    def ok(self) -> bool:
        """True when the trial succeeded."""
        return self.error is None


class TrialsFailedError(InmaterioError, RuntimeError):
    """Trials failed after all their attempts; ``results`` holds every trial's result, ``failed`` their indices."""

    def __init__(self, results: list[TrialResult]) -> None:
        self.results = results
        self.failed = [r.index for r in results if not r.ok]
        first = results[self.failed[0]]
        shown = ", ".join(map(str, self.failed[:20])) + (", ..." if len(self.failed) > 20 else "")
        super().__init__(
            f"{len(self.failed)} of {len(results)} trials failed (indices {shown}); "
            f"first error, trial {first.index} after {first.attempts} attempt(s):\n{first.error}"
        )


def run_trials(
    fn: Callable[[Any], Any],
    tasks: Sequence[Any],
    config: ExecutorConfig | None = None,
    *,
    progress: bool = False,
    description: str = "trials",
    allow_failures: bool = False,
    on_result: Callable[[TrialResult], None] | None = None,
) -> list[TrialResult]:
    """Run ``fn(task)`` for every task; results in task order.

    Parameters
    ----------
    fn : a picklable top-level function ``fn(task) -> result``. It must take
        every random seed from its task (the executor adds no randomness).
    tasks : the tasks, each picklable; ``len(tasks)`` trials.
    config : the executor (default: ``ExecutorConfig()``, a local pool).
    progress : draw a progress bar with rate and ETA (only on a terminal).
    description : text of the progress bar.
    allow_failures : return failed trials (``value=None``, ``error`` set)
        instead of raising.
    on_result : called in this process with each trial's final result as soon as it is known
        (completion order); an exception it raises stops the run (the workers are stopped).

    Returns
    -------
    One :class:`TrialResult` per task, ``results[i].index == i``.

    Raises
    ------
    TrialsFailedError
        When a trial failed all its attempts and ``allow_failures`` is False.
    ConfigError
        For ``kind="ray"`` when Ray is not installed.
    """
    config = config or ExecutorConfig()
    tasks = list(tasks)
    runner = {"serial": _run_serial, "local": _run_local, "ray": _run_ray}[config.kind]
    with progress_bar(total=len(tasks), description=description, unit="trials", enabled=progress) as bar:
        results = runner(fn, tasks, config, _Ledger(len(tasks), config.retries, bar, on_result)) if tasks else []
    if not allow_failures and any(not r.ok for r in results):
        raise TrialsFailedError(results)
    return results


# --- what runs inside a worker -------------------------------------------------------------------

_WORKER_ID: str | None = None
_START_QUEUE: Any = None  # a SimpleQueue of the local pool: (index, attempt, worker) of each trial as it starts


def _worker_id() -> str:
    global _WORKER_ID
    if _WORKER_ID is None or not _WORKER_ID.endswith(f":{os.getpid()}"):
        _WORKER_ID = f"{socket.gethostname()}:{os.getpid()}"
    return _WORKER_ID


def _set_threads(threads: int) -> None:
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


def _init_local_worker(threads: int, start_queue: Any) -> None:
    global _START_QUEUE
    _START_QUEUE = start_queue
    _set_threads(threads)
    _exit_with_driver()


def _exit_with_driver() -> None:
    """End this worker as soon as the driver process dies.

    A driver killed by a signal (SIGKILL, or SIGTERM, which Python does not
    turn into an exception) cannot shut its pool down; without this its
    workers would finish their trials, hours for a large one, for nobody.
    The parent's sentinel (a pipe end the driver holds open) becomes ready
    when the driver exits; a daemon thread waits on it and ends the process.
    """
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="inmaterio-driver-watch", daemon=True).start()


def _call(fn: Callable[[Any], Any], task: Any) -> tuple[bool, Any, float, str]:
    """``(ok, value or formatted error, seconds, worker)``; exceptions become the error text."""
    start = time.perf_counter()
    try:
        value = fn(task)
    except Exception as err:  # noqa: BLE001 - every trial error is reported to the driver
        text = f"{type(err).__name__}: {err}\n{traceback.format_exc()}"
        return False, text, time.perf_counter() - start, _worker_id()
    return True, value, time.perf_counter() - start, _worker_id()


def _local_call(fn: Callable[[Any], Any], task: Any, index: int, attempt: int) -> tuple[bool, Any, float, str]:
    if _START_QUEUE is not None:
        _START_QUEUE.put((index, attempt, _worker_id()))  # written synchronously: survives an os._exit right after
    return _call(fn, task)


def _ray_call(fn: Callable[[Any], Any], task: Any, threads: int) -> tuple[bool, Any, float, str]:
    _set_threads(threads)
    return _call(fn, task)


# --- bookkeeping shared by the executors ---------------------------------------------------------


class _Ledger:
    """Attempts and final results of every trial; advances the progress bar."""

    def __init__(self, n: int, retries: int, bar: ProgressBar, on_result: Callable[[TrialResult], None] | None = None) -> None:
        self.attempts = [0] * n
        self.results: list[TrialResult | None] = [None] * n
        self.retries = retries
        self.bar = bar
        self.on_result = on_result

    def _final(self, result: TrialResult) -> None:
        self.results[result.index] = result
        self.bar.advance(1)
        if self.on_result is not None:
            self.on_result(result)

    def record(self, index: int, ok: bool, payload: Any, seconds: float, worker: str) -> bool:
        """Charge one attempt; True when the trial must be run again."""
        self.attempts[index] += 1
        if not ok and self.attempts[index] <= self.retries:
            return True
        self._final(TrialResult(
            index=index,
            value=payload if ok else None,
            error=None if ok else str(payload),
            attempts=self.attempts[index],
            seconds=seconds,
            worker=worker,
        ))  # fmt: skip
        return False

    def give_up(self, index: int, error: str, worker: str) -> None:
        """Report a trial as failed without charging an attempt (it could not be run)."""
        self._final(TrialResult(index, None, error, self.attempts[index], 0.0, worker))

    def done(self) -> list[TrialResult]:
        missing = [i for i, r in enumerate(self.results) if r is None]
        assert not missing, f"internal error: trials {missing} have no result"
        return list(self.results)  # type: ignore[arg-type]


def _future_error(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}\n" + "".join(traceback.format_exception(err))


# --- serial --------------------------------------------------------------------------------------


def _run_serial(fn: Callable, tasks: list, config: ExecutorConfig, ledger: _Ledger) -> list[TrialResult]:
    import torch

    saved = torch.get_num_threads()
    _set_threads(config.threads_per_worker)
    try:
        for index, task in enumerate(tasks):
            while ledger.record(index, *_call(fn, task)):
                pass
    finally:
        torch.set_num_threads(saved)
    return ledger.done()


# --- local process pool --------------------------------------------------------------------------


def _mp_context() -> multiprocessing.context.BaseContext:
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_FORKSERVER_PRELOAD)
        return ctx
    return multiprocessing.get_context("spawn")


_STOP_S = 5.0  # seconds a terminated worker gets to exit before it is killed


def _shutdown_now(pool: ProcessPoolExecutor) -> None:
    """Stop a pool without waiting for running trials (interrupt, error in the driver).

    The workers are terminated (killed if they outlive ``_STOP_S``) and joined here; the pool's own
    shutdown does not wait, since on Python <= 3.11 its join of the call queue's feeder thread and of
    its manager thread can block for good once workers died mid-trial.
    """
    processes = list((getattr(pool, "_processes", None) or {}).values())
    call_queue = getattr(pool, "_call_queue", None)
    if call_queue is not None:
        call_queue.cancel_join_thread()
    terminate = getattr(pool, "terminate_workers", None)  # Python >= 3.14
    if terminate is not None:
        terminate()
    else:
        for process in processes:
            if process.is_alive():
                process.terminate()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.join(_STOP_S)
        if process.is_alive():
            process.kill()
            process.join(_STOP_S)


def _drain(queue: Any, started: dict[tuple[int, int], str]) -> None:
    try:
        while not queue.empty():
            index, attempt, worker = queue.get()
            started[(index, attempt)] = worker
    except (OSError, EOFError):  # a message cut by a killed writer: the rest is lost, nothing more to read
        pass


def _pool_round(
    fn: Callable, tasks: list, indices: list[int], workers: int, config: ExecutorConfig, ledger: _Ledger
) -> tuple[dict[int, str], list[int]] | None:
    """Run ``indices`` in one fresh pool, retrying ordinary failures in it.

    Returns None when every trial got its final result, or, when a worker
    died, ``(suspects, not_started)``: the trials that were running when the
    pool broke (index -> worker that ran it), and those that had not started
    (including retries).
    """
    ctx = _mp_context()
    start_queue = ctx.SimpleQueue()  # one per pool: a worker killed mid-write cannot block a later pool
    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=ctx,
        initializer=_init_local_worker,
        initargs=(config.threads_per_worker, start_queue),
    )
    running: dict[Future, tuple[int, int]] = {}
    waiting: deque[int] = deque(indices)  # not yet submitted (retries go here too)
    broken = False
    try:

        def submit_waiting() -> None:
            nonlocal broken
            # keep a bounded number of trials queued so a break affects few of them and memory stays flat
            while waiting and len(running) < 2 * workers and not broken:
                index = waiting[0]
                try:
                    future = pool.submit(_local_call, fn, tasks[index], index, ledger.attempts[index])
                except BrokenProcessPool:
                    broken = True
                    return
                waiting.popleft()
                running[future] = (index, ledger.attempts[index])

        submit_waiting()
        while running and not broken:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                index, _attempt = running.pop(future)
                err = future.exception()
                if isinstance(err, BrokenProcessPool):
                    broken = True
                    running[future] = (index, _attempt)  # keep it with the others that were cut off
                    continue
                if err is not None:  # e.g. the task or the result could not be pickled
                    again = ledger.record(index, False, _future_error(err), 0.0, "driver")
                else:
                    again = ledger.record(index, *future.result())
                if again:
                    waiting.append(index)
            submit_waiting()
        if not broken:
            pool.shutdown(wait=True)
            return None
        # the pool is broken: every future still in `running` has failed or will fail with BrokenProcessPool;
        # results that arrived before the break are kept
        pool.shutdown(wait=True, cancel_futures=True)
        started: dict[tuple[int, int], str] = {}
        _drain(start_queue, started)
        suspects: dict[int, str] = {}
        not_started = list(waiting)
        for future, (index, attempt) in running.items():
            if not future.cancelled() and future.done() and future.exception() is None:
                if ledger.record(index, *future.result()):  # finished just before the break
                    not_started.append(index)
            elif (index, attempt) in started:
                suspects[index] = started[(index, attempt)]
            else:
                not_started.append(index)
        return suspects, sorted(not_started)
    except BaseException:  # KeyboardInterrupt, or a bug here: leave no worker behind
        _shutdown_now(pool)
        raise
    finally:
        start_queue.close()


def _crash_text(index: int, worker: str, workers: int) -> str:
    return (
        f"WorkerCrashed: worker process {worker} died while running trial {index} (os._exit, a signal "
        f"such as SIGSEGV or SIGKILL, or out of memory; its pool of {workers} worker(s) was replaced)"
    )


def _run_local(fn: Callable, tasks: list, config: ExecutorConfig, ledger: _Ledger) -> list[TrialResult]:
    workers = min(config.n_workers(), len(tasks))
    todo = list(range(len(tasks)))
    idle_breaks = 0  # pools in a row that broke before any trial started (failing initialiser, killed worker)
    while todo:
        outcome = _pool_round(fn, tasks, todo, workers, config, ledger)
        if outcome is None:
            break
        suspects, todo = outcome
        idle_breaks = 0 if suspects else idle_breaks + 1
        if idle_breaks > config.retries + 1:
            text = (
                f"WorkerCrashed: {idle_breaks} process pools in a row lost a worker before it started a trial "
                f"(does importing torch or the trial's module fail in a fresh process?); trial not run"
            )
            for index in todo:
                ledger.give_up(index, text, f"{socket.gethostname()}:?")
            break
        if len(suspects) == 1:  # the only trial in flight crashed its worker
            [(index, worker)] = suspects.items()
            if ledger.record(index, False, _crash_text(index, worker, workers), 0.0, worker):
                todo.append(index)
        else:  # culprit unknown (or no trial had started): run each suspect alone, where a crash is its own
            for index in sorted(suspects):
                while True:
                    alone = _pool_round(fn, tasks, [index], 1, config, ledger)
                    if alone is None:
                        break
                    worker = alone[0].get(index, f"{socket.gethostname()}:?")
                    if not ledger.record(index, False, _crash_text(index, worker, 1), 0.0, worker):
                        break
        todo.sort()
    return ledger.done()


# --- Ray -----------------------------------------------------------------------------------------


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise ConfigError(
            f"executor kind 'ray' needs the Ray package, which is not installed ({err}); install it with: {RAY_INSTALL_HINT}"
        ) from None
    return ray


def _run_ray(fn: Callable, tasks: list, config: ExecutorConfig, ledger: _Ledger) -> list[TrialResult]:
    """Ray tasks with our retry loop (``max_retries=0``: a crash is charged and retried like an exception).

    A Ray connection that is already open (``ray.init`` by the caller) is used as it is, and left
    open; otherwise Ray is started (or the cluster at ``address`` joined) and shut down at the end.
    """
    ray = _import_ray()
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(
            address=config.address,
            num_cpus=config.n_workers() if config.address is None else None,
            include_dashboard=False,
            ignore_reinit_error=True,
            log_to_driver=False,
        )
    running: dict[Any, int] = {}
    try:
        remote = ray.remote(max_retries=0, num_cpus=1)(_ray_call)
        fn_ref = ray.put(fn)

        # a bounded number in flight (twice the cluster's CPUs): ray.wait stays cheap with thousands of trials
        limit = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        waiting: deque[int] = deque(range(len(tasks)))
        while waiting or running:
            while waiting and len(running) < limit:
                index = waiting.popleft()
                running[remote.remote(fn_ref, tasks[index], config.threads_per_worker)] = index
            done, _ = ray.wait(list(running), num_returns=1)
            for ref in done:
                index = running.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as err:  # worker crashed, node lost, result not deserialisable
                    outcome = (False, _future_error(err), 0.0, "ray:?")
                if ledger.record(index, *outcome):
                    waiting.appendleft(index)
        return ledger.done()
    except BaseException:
        for ref in list(running):
            try:
                ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001 - best effort while unwinding
                pass
        raise
    finally:
        if started_here:
            ray.shutdown()
