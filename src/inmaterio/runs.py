"""The one run folder of every long job: identity-checked, atomic, resumable to the same result.

Every job that takes long enough to be interrupted (gradient descent, the
genetic algorithm, EP training, surrogate training, acquisition, the tasks
and studies) keeps its state in a run folder::

    <folder>/
      run.json         format and version, kind of run, package version, state, the identity of the run
                       and its fingerprint (sha256), created / started / ended (UTC), wall time summed over
                       sessions, sessions, the error of a failed run
      config.yaml      the validated config of the latest session
      checkpoint.pt    the state to resume from (plain tensors, numbers, strings, containers:
                       loads with torch.load(weights_only=True), no pickled objects)
      history.json     one row (a dict) per epoch / generation / step
      history.csv      the same rows as a table (columns in first-seen order)
      metrics.json     the results of a finished run
      *.png            figures
      <sub>/           nested runs (the acquisitions and the training of an SMG run, ...)
      .lock            held while a process works in the folder

States: ``running`` (a session is, or was when the process died, working),
``interrupted`` (Ctrl-C or SIGTERM, or a session that ended without
finishing), ``failed`` (an exception; its message is kept), ``finished``.
Every state but ``finished`` resumes: open the folder again with the same
kind and identity.

Rules (each checked by :func:`open_run` *before* anything is written):

- a path that is a file, a folder that is not a run folder (files but no
  ``run.json``), or a run folder of another *kind* is refused; so is a folder
  another process is working in;
- the *identity* (the config fields that define the result, the device's
  description, a fingerprint of the data, the model's structure) must equal
  the one stored; otherwise :class:`~inmaterio.errors.ConfigError` names
  every differing field with both values;
- ``overwrite=True`` is the only way to replace a run of the same kind: a
  finished run is deleted, any other (it could be resumed) is moved aside to
  ``<folder>.replaced-<UTC time>`` and the message says where;
- the folder must be writable and its disk not full (a probe write of
  ``run.json``), so a bad ``--out`` fails before hours of work.

Every file is written atomically (:mod:`inmaterio.fileio`). When a write
fails later (disk full, folder removed or made read-only), the data are
written to a rescue folder under the system's temporary directory and a
:class:`~inmaterio.errors.RunFolderError` says where they are.

Typical use::

    with open_run(path, kind="inmaterio.training.gd", config=config, identity=identity) as run:
        if run.finished:
            return load_results(run)
        state = run.load_checkpoint()          # None on a new run
        for epoch in ...:
            ...
            run.save_checkpoint({...})
            run.write_history(rows)
        run.finish(metrics)

Ctrl-C and SIGTERM inside the ``with`` leave the last checkpoint in place,
mark the run ``interrupted`` and raise :class:`~inmaterio.errors.RunInterrupted`,
whose message names the folder to resume.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import errno
import hashlib
import io
import json
import math
import os
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from inmaterio import __version__
from inmaterio.errors import ConfigError, ModelFileError, RunFolderError, RunInterrupted
from inmaterio.fileio import atomic_path

__all__ = [
    "RUN_FILE",
    "CONFIG_FILE",
    "CHECKPOINT_FILE",
    "HISTORY_JSON",
    "HISTORY_CSV",
    "METRICS_FILE",
    "RunFolder",
    "open_run",
    "read_run",
    "identity_differences",
    "fingerprint_tensors",
    "os_error_reason",
]

RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
CHECKPOINT_FILE = "checkpoint.pt"
HISTORY_JSON = "history.json"
HISTORY_CSV = "history.csv"
METRICS_FILE = "metrics.json"
LOCK_FILE = ".lock"
FORMAT = "inmaterio.run"
FORMAT_VERSION = 1
STATES = ("running", "interrupted", "failed", "finished")
_MIN_FREE_BYTES = 1 << 20
_MAX_LISTED = 8


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _jsonable(value: Any) -> Any:
    """``value`` as plain JSON types (tuples -> lists, paths -> strings), for comparing identities."""
    return json.loads(json.dumps(value, default=str, sort_keys=True))


def _fingerprint(identity: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()


def fingerprint_tensors(*arrays: Any) -> str:
    """SHA-256 of the shapes, dtypes and bytes of torch tensors or numpy arrays (data identity)."""
    import numpy as np
    import torch

    digest = hashlib.sha256()
    for a in arrays:
        if isinstance(a, torch.Tensor):
            a = a.detach().cpu().contiguous()
            digest.update(f"{tuple(a.shape)}|{a.dtype}|".encode())
            digest.update(a.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            a = np.ascontiguousarray(a)
            digest.update(f"{a.shape}|{a.dtype}|".encode())
            digest.update(a.tobytes())
    return digest.hexdigest()


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    return {prefix: value}


def identity_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """``"field: <stored> in the folder, <current> now"`` for every differing (dotted) field."""
    a, b = _flatten(_jsonable(dict(stored))), _flatten(_jsonable(dict(current)))
    missing = object()
    diffs = []
    for key in list(a) + [k for k in b if k not in a]:
        there, here = a.get(key, missing), b.get(key, missing)
        if there != here:
            show = lambda v: "absent" if v is missing else _short(v)  # noqa: E731
            diffs.append(f"{key}: {show(there)} in the folder, {show(here)} now")
    return diffs


def _short(value: Any, limit: int = 80) -> str:
    text = value if isinstance(value, str) and limit > 80 else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _listing(folder: Path) -> str:
    names = sorted(p.name for p in folder.iterdir())
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else "")


def read_run(path: str | Path) -> dict[str, Any]:
    """The ``run.json`` of a run folder, checked to be one of ours.

    Raises
    ------
    RunFolderError
        If ``path`` is not a run folder or its ``run.json`` is corrupt or foreign.
    """
    folder = Path(path)
    record_path = folder / RUN_FILE
    if not record_path.is_file():
        raise RunFolderError(f"'{folder}' is not a run folder: it has no {RUN_FILE}")
    try:
        record = json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunFolderError(f"'{record_path}' cannot be read as a run record: {err}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise RunFolderError(f"'{record_path}' is not an inmaterio run record (no format '{FORMAT}')")
    if record.get("format_version") != FORMAT_VERSION:
        raise RunFolderError(
            f"'{record_path}' has run-folder format version {record.get('format_version')!r}; "
            f"this inmaterio ({__version__}) reads version {FORMAT_VERSION}"
        )
    if record.get("state") not in STATES or not isinstance(record.get("kind"), str):
        raise RunFolderError(f"'{record_path}' is damaged: state {record.get('state')!r}, kind {record.get('kind')!r}")
    return record


class _Lock:
    """An exclusive advisory lock on ``<folder>/.lock`` (POSIX ``flock``; a no-op where unsupported)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK_FILE
        self._fh = None

    def acquire(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows
            return
        fh = open(self.path, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown"
            fh.close()
            raise RunFolderError(
                f"'{self.path.parent}' is in use by another process ({holder}); wait for it to end or choose another folder"
            ) from None
        except OSError:  # a file system without locks: go on unlocked
            pass
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {os.uname().nodename if hasattr(os, 'uname') else '?'}")
        fh.flush()
        self._fh = fh

    def release(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.truncate(0)
            self._fh.close()
            self._fh = None


class RunFolder:
    """A run folder opened by :func:`open_run` (use it as a context manager).

    Attributes
    ----------
    path : the folder.
    kind : what kind of run it holds (e.g. ``"inmaterio.training.gd"``).
    record : the content of ``run.json``.
    resumed : True when the folder held an unfinished run of the same identity.
    """

    def __init__(self, path: Path, kind: str, record: dict[str, Any], resumed: bool, lock: _Lock) -> None:
        self.path = path
        self.kind = kind
        self.record = record
        self.resumed = resumed
        self._lock = lock
        self._session_start = time.perf_counter()
        self._wall_before = float(record.get("wall_s", 0.0))
        self._finished_now = False
        self._closed = False
        self._previous_sigterm: Any = None

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> str:
        """``running``, ``interrupted``, ``failed`` or ``finished``."""
        return self.record["state"]

    @property
    def finished(self) -> bool:
        """True when the run has finished (its results are in the folder)."""
        return self.record["state"] == "finished"

    @property
    def wall_s(self) -> float:
        """Wall time of all sessions so far, including the current one, s."""
        if self.finished and not self._finished_now:
            return self._wall_before
        return self._wall_before + (time.perf_counter() - self._session_start)

    def file(self, name: str) -> Path:
        """Path of ``name`` inside the folder."""
        return self.path / name

    def subfolder(self, name: str) -> Path:
        """Path of a nested run folder (open it with :func:`open_run`)."""
        return self.path / name

    # ------------------------------------------------------------------ writing

    def write_file(self, name: str, write: Callable[[Path], None], what: str | None = None) -> Path:
        """Write ``name`` atomically with ``write(tmp_path)``; on failure rescue it and raise.

        The rescue copy goes to ``<tmp>/inmaterio-rescue/<folder>-<time>/<name>``;
        the :class:`RunFolderError` names both places.
        """
        target = self.path / name
        try:
            with atomic_path(target) as tmp:
                write(tmp)
            return target
        except OSError as err:
            rescue_dir = (
                Path(tempfile.gettempdir()) / "inmaterio-rescue" / f"{self.path.name}-{_dt.datetime.now(_dt.UTC):%Y%m%dT%H%M%S}"
            )
            try:
                rescue = rescue_dir / name
                rescue.parent.mkdir(parents=True, exist_ok=True)
                write(rescue)
                kept = f"it was saved to '{rescue}' instead: fix the folder, copy it back and run again to resume"
            except OSError as err2:
                kept = f"a rescue copy could not be written either ({err2.strerror or err2}); the last good state in the folder is kept"
            raise RunFolderError(
                f"could not write the {what or name} in '{self.path}' ({os_error_reason(err)}); {kept}"
            ) from None

    def write_json(self, name: str, data: Any) -> Path:
        """Write ``data`` as indented JSON (non-finite floats as null)."""
        text = json.dumps(_finite_json(data), indent=2) + "\n"
        return self.write_file(name, lambda p: p.write_text(text, encoding="utf-8"))

    def read_json(self, name: str) -> Any:
        """Read a JSON file of the folder; a missing or corrupt one raises :class:`ModelFileError`."""
        path = self.path / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ModelFileError(f"'{path}' is missing from the run folder") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ModelFileError(f"'{path}' cannot be read as JSON: {err}") from None

    def save_checkpoint(self, state: Mapping[str, Any], name: str = CHECKPOINT_FILE) -> None:
        """Save ``state`` (tensors, numbers, strings, containers) atomically; update ``run.json``'s wall time."""
        import torch

        payload = {"format": f"{FORMAT}.checkpoint", "kind": self.kind, "package_version": __version__, "state": dict(state)}
        self.write_file(name, lambda p: torch.save(payload, p), what="checkpoint")
        self._write_record()

    def load_checkpoint(self, name: str = CHECKPOINT_FILE) -> dict[str, Any] | None:
        """The state saved by :meth:`save_checkpoint`, or None if there is none (loaded without pickle).

        Raises
        ------
        ModelFileError
            If the file is corrupt, truncated, foreign or of another kind of run.
        """
        import torch

        path = self.path / name
        if not path.exists():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any failure to read is a bad file
            raise ModelFileError(
                f"checkpoint '{path}' cannot be read ({type(err).__name__}: {_short(str(err), 200)}); "
                "replace the run with --overwrite"
            ) from None
        if not isinstance(payload, dict) or payload.get("format") != f"{FORMAT}.checkpoint" or "state" not in payload:
            raise ModelFileError(f"'{path}' is not an inmaterio checkpoint")
        if payload.get("kind") != self.kind:
            raise ModelFileError(f"checkpoint '{path}' belongs to a run of kind {payload.get('kind')!r}, not '{self.kind}'")
        return payload["state"]

    def write_history(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """``history.json`` (the rows) and ``history.csv`` (columns: every key, in first-seen order)."""
        rows = [dict(r) for r in rows]
        columns: list[str] = []
        for row in rows:
            columns += [k for k in row if k not in columns]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        self.write_json(HISTORY_JSON, rows)
        text = buffer.getvalue()
        self.write_file(HISTORY_CSV, lambda p: p.write_text(text, encoding="utf-8"))

    def read_history(self) -> list[dict[str, Any]]:
        """The rows of ``history.json`` ([] if there is none yet)."""
        return self.read_json(HISTORY_JSON) if (self.path / HISTORY_JSON).exists() else []

    def finish(self, metrics: Mapping[str, Any] | None = None) -> None:
        """Write ``metrics.json`` (with package version and wall time) and mark the run finished."""
        if metrics is not None:
            self.write_json(METRICS_FILE, {**dict(metrics), "package_version": __version__, "wall_s": self.wall_s})
        self._finished_now = True
        self.record["state"] = "finished"
        self.record["ended"] = _now()
        self.record.pop("error", None)
        self._write_record()

    def metrics(self) -> dict[str, Any]:
        """``metrics.json`` of a finished run."""
        return self.read_json(METRICS_FILE)

    def reopen(self, config: BaseModel | Mapping[str, Any] | None = None) -> None:
        """Continue a finished run (where its kind allows it, e.g. more epochs): a new session in state ``running``.

        ``config``, the config of the continued run, replaces ``config.yaml``. A run that is not finished is left as it is.
        """
        if not self.finished:
            return
        self.record.update(state="running", started=_now(), ended=None, sessions=int(self.record.get("sessions", 0)) + 1,
                           package_version=__version__)  # fmt: skip
        self._session_start = time.perf_counter()
        self._finished_now = False
        self.resumed = True
        self._write_record()
        cfg = _config_dict(config)
        if cfg is not None:
            text = yaml.safe_dump(cfg, sort_keys=False)
            self.write_file(CONFIG_FILE, lambda p: p.write_text(text, encoding="utf-8"))

    # ------------------------------------------------------------------ session

    def _write_record(self) -> None:
        if not self.finished or self._finished_now:
            self.record["wall_s"] = self._wall_before + (time.perf_counter() - self._session_start)
        self.write_json(RUN_FILE, self.record)

    def __enter__(self) -> RunFolder:
        if threading.current_thread() is threading.main_thread():
            self._previous_sigterm = signal.signal(signal.SIGTERM, _raise_terminated)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if self._previous_sigterm is not None:
                signal.signal(signal.SIGTERM, self._previous_sigterm)
            if not self.finished:
                if exc_type is None:
                    self.record["state"] = "interrupted"
                elif issubclass(exc_type, KeyboardInterrupt):
                    self.record["state"] = "interrupted"
                else:
                    self.record["state"] = "failed"
                    self.record["error"] = f"{exc_type.__name__}: {_short(str(exc), 2000)}"
                self.record["ended"] = _now()
                with contextlib.suppress(RunFolderError):
                    self._write_record()
        finally:
            self.close()
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            # nested runs: the outermost folder is the one to name (its command resumes everything inside)
            terminated = getattr(exc, "signal", None) == signal.SIGTERM or "SIGTERM" in str(exc)
            why = "terminated (SIGTERM)" if terminated else "interrupted"
            raise RunInterrupted(
                f"{why}; '{self.path}' holds the run up to its last checkpoint: run the same command again to resume"
            ) from None
        return False

    def close(self) -> None:
        """Release the folder's lock (done by the ``with`` block)."""
        if not self._closed:
            self._lock.release()
            self._closed = True

    def __del__(self) -> None:  # a RunFolder dropped without its with-block still frees the lock
        with contextlib.suppress(Exception):
            self.close()


class _Terminated(KeyboardInterrupt):
    signal = signal.SIGTERM


def _raise_terminated(signum, frame) -> None:
    raise _Terminated()


def _finite_json(value: Any) -> Any:
    """Replace non-finite floats by None (JSON has no NaN/inf) and tuples by lists."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _finite_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite_json(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def os_error_reason(err: OSError) -> str:
    """What an :class:`OSError` of a write means for a user (a full disk, a read-only folder, ...)."""
    if err.errno == errno.ENOSPC:
        return "the disk is full"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "permission denied: the folder is read-only"
    if err.errno == errno.ENOTDIR:
        return "a file stands where a folder should be"
    return err.strerror or str(err)


def _config_dict(config: BaseModel | Mapping[str, Any] | None) -> dict[str, Any] | None:
    if config is None:
        return None
    if isinstance(config, BaseModel):
        return config.model_dump(mode="json")
    return _jsonable(dict(config))


def _check_folder(folder: Path) -> None:
    """Refuse a file, a dangling link or a folder whose parents include a file."""
    if folder.is_file():
        raise RunFolderError(f"'{folder}' is a file, not a folder; choose a folder for the run")
    for parent in folder.parents:
        if parent.exists() and not parent.is_dir():
            raise RunFolderError(f"'{parent}' is a file, so the run folder '{folder}' cannot be made; choose another")


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _move_aside(folder: Path) -> Path:
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    target = folder.with_name(f"{folder.name}.replaced-{stamp}")
    n = 1
    while target.exists():
        n += 1
        target = folder.with_name(f"{folder.name}.replaced-{stamp}-{n}")
    os.replace(folder, target)
    return target


def open_run(
    path: str | Path,
    kind: str,
    *,
    identity: Mapping[str, Any],
    config: BaseModel | Mapping[str, Any] | None = None,
    overwrite: bool = False,
    min_free_bytes: int = _MIN_FREE_BYTES,
    notify: Callable[[str], None] = print,
) -> RunFolder:
    """Open (create, resume or replace) the run folder ``path`` for a run of ``kind``.

    Parameters
    ----------
    path : the folder; created with its parents if missing.
    kind : the kind of run (a dotted name such as ``"inmaterio.training.gd"``).
    identity : JSON-serialisable mapping of everything that defines the result; must equal the
        stored one to resume. Leave out what may change between sessions (threads, progress bars,
        a larger epoch count where the run allows it).
    config : the validated config, written to ``config.yaml`` (pydantic model or mapping).
    overwrite : replace a run of the same kind (see the module docstring).
    min_free_bytes : refuse to start with less free space than this on the folder's disk.
    notify : where messages go (resuming, a replaced run moved aside).

    Raises
    ------
    RunFolderError
        ``path`` is a file, a foreign folder, a run of another kind, in use by another process,
        not writable, or on a full disk.
    ConfigError
        The folder holds a run of the same kind with another identity (and ``overwrite`` is False);
        the message names every differing field.
    """
    folder = Path(path)
    _check_folder(folder)
    identity = _jsonable(dict(identity))
    fingerprint = _fingerprint(identity)
    existing: dict[str, Any] | None = None
    if folder.is_dir():
        has_record = (folder / RUN_FILE).exists()
        if not has_record:
            if any(p.name != LOCK_FILE for p in folder.iterdir()):
                raise RunFolderError(
                    f"'{folder}' is not a run folder (it holds {_listing(folder)} and no {RUN_FILE}); "
                    "choose an empty or new folder"
                )
        else:
            existing = read_run(folder)
            if existing["kind"] != kind:
                raise RunFolderError(
                    f"'{folder}' holds a run of kind '{existing['kind']}', not '{kind}'; "
                    "choose another folder (nothing was changed)"
                )
    else:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise RunFolderError(f"cannot create the run folder '{folder}' ({os_error_reason(err)})") from None

    lock = _Lock(folder)
    try:
        lock.acquire()
    except OSError as err:
        raise RunFolderError(f"cannot use the run folder '{folder}' ({os_error_reason(err)})") from None
    try:
        resumed = False
        if existing is not None:
            same = existing.get("fingerprint") == fingerprint
            if overwrite:
                if existing["state"] == "finished":
                    for child in folder.iterdir():
                        if child.name != LOCK_FILE:
                            shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
                    notify(f"replacing the finished run in '{folder}'")
                else:
                    lock.release()
                    aside = _move_aside(folder)
                    folder.mkdir(parents=True)
                    lock = _Lock(folder)
                    lock.acquire()
                    notify(f"the unfinished run that was in '{folder}' ({existing['state']}) was moved to '{aside}'")
                existing = None
            elif not same:
                diffs = identity_differences(existing.get("identity", {}), identity)
                shown = "; ".join(diffs[:_MAX_LISTED]) + (
                    f"; and {len(diffs) - _MAX_LISTED} more" if len(diffs) > _MAX_LISTED else ""
                )
                raise ConfigError(
                    f"'{folder}' holds {_article(existing['state'])} {existing['state']} run of '{kind}' made with other settings: {shown or 'fingerprints differ'}; "
                    "run with the same settings to resume, choose another folder, or pass --overwrite (overwrite=True) to replace it"
                )
        try:
            free = shutil.disk_usage(folder).free
        except OSError:
            free = None
        if free is not None and free < min_free_bytes:
            raise RunFolderError(
                f"the disk of '{folder}' has {free / 2**20:.1f} MiB free, this run needs at least "
                f"{min_free_bytes / 2**20:.1f} MiB; free space or choose another folder"
            )
        now = _now()
        if existing is None:
            record = {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "kind": kind,
                "package_version": __version__,
                "state": "running",
                "created": now,
                "started": now,
                "ended": None,
                "wall_s": 0.0,
                "sessions": 1,
                "fingerprint": fingerprint,
                "identity": identity,
            }
        else:
            record = dict(existing)
            if record["state"] != "finished":
                resumed = True
                record.update(state="running", started=now, ended=None, sessions=int(record.get("sessions", 0)) + 1,
                              package_version=__version__)  # fmt: skip
                record.pop("error", None)
        run = RunFolder(folder, kind, record, resumed, lock)
        if not run.finished:
            try:
                run._write_record()  # the probe: a folder that cannot take run.json fails here, before any work
            except RunFolderError as err:
                raise RunFolderError(f"the run folder '{folder}' is not usable: {err}") from None
            cfg = _config_dict(config)
            if cfg is not None:
                text = yaml.safe_dump(cfg, sort_keys=False)
                run.write_file(CONFIG_FILE, lambda p: p.write_text(text, encoding="utf-8"))
            if resumed:
                notify(f"resuming the {existing['state']} run in '{folder}'")
        return run
    except BaseException:
        lock.release()
        raise
