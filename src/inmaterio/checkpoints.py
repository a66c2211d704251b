"""Checkpoints of long jobs in a run folder (:mod:`inmaterio.runs`): written at most every few seconds, always before leaving.

Every write of a run folder is atomic (a temporary file renamed over the
old one), and a rename over an existing file can cost milliseconds (ext4
flushes the data first). Writing the checkpoint and the history after
every epoch of a fast model would then cost more than the epoch, so
:class:`CheckpointWriter` takes the state of every epoch / generation but
writes it only when ``interval_s`` has passed since the last write, when
the run finishes, and when the run stops with an exception (Ctrl-C,
SIGTERM, a diverged loss): a run killed outright loses at most the last
``interval_s`` seconds of work, and resumes exactly from the last state
written.

The state saved is plain data (loads with ``torch.load(weights_only=True)``):
:func:`pack_tensors` moves its tensors into one flat buffer per dtype (one
record each instead of one per tensor), and the history rows are kept as
one JSON string (``history_json``), which pickles far faster than many
small dicts.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor

from inmaterio.errors import ConfigError
from inmaterio.runs import RunFolder

__all__ = ["CheckpointWriter", "pack_tensors", "unpack_tensors", "history_of"]

_PACKED = "inmaterio.packed_tensor"
_WALK = object()  # "not a leaf: map its items"


class CheckpointWriter:
    """Write ``state`` and the history to ``run`` at most every ``interval_s`` seconds (see the module docstring).

    ``run`` None: nothing is written (a run without a folder). ``interval_s`` 0: every state is written.
    """

    def __init__(self, run: RunFolder | None, interval_s: float) -> None:
        if isinstance(interval_s, bool) or not (
            isinstance(interval_s, int | float) and math.isfinite(interval_s) and interval_s >= 0
        ):
            raise ConfigError(f"checkpoint_interval_s must be a finite number of seconds >= 0, got {interval_s!r}")
        self.run = run
        self.interval_s = float(interval_s)
        self._pending: tuple[dict[str, Any], Sequence[Mapping[str, Any]], int] | None = None
        self._last_write = -math.inf

    def offer(self, state: Mapping[str, Any], history: Sequence[Mapping[str, Any]], *, final: bool = False) -> None:
        """Take the state after a step of the run (a snapshot: nothing in it may change later).

        ``history`` is the run's list of rows (only appended to); its first ``len(history)`` rows
        belong to this state. Written now if ``final``, or if ``interval_s`` has passed.
        """
        if self.run is None:
            return
        self._pending = (dict(state), history, len(history))
        if final or time.monotonic() - self._last_write >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        """Write the state offered last, if it is not written yet."""
        if self.run is None or self._pending is None:
            return
        state, history, n = self._pending
        rows = [dict(row) for row in history[:n]]
        self.run.save_checkpoint({**state, "history_json": json.dumps(rows)})
        self.run.write_history(rows)
        self._pending = None
        self._last_write = time.monotonic()

    @contextmanager
    def flushing_on_exit(self) -> Iterator[CheckpointWriter]:
        """Inside: an exception (Ctrl-C, SIGTERM, an error) first writes the state offered last."""
        try:
            yield self
        except BaseException:
            self.flush()
            raise


def history_of(state: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The history rows of a checkpoint written by :class:`CheckpointWriter`."""
    return json.loads(state["history_json"])


def pack_tensors(state: Any) -> dict[str, Any]:
    """``state`` (nested dicts, lists, tuples of tensors and plain values) with every tensor moved into one
    flat CPU buffer per dtype; a tensor becomes ``(marker, dtype, offset, shape)``. The buffers are copies,
    so the result is a snapshot. :func:`unpack_tensors` restores it.
    """
    buffers: dict[str, list[Tensor]] = {}
    sizes: dict[str, int] = {}

    def pack(value: Any) -> Any:
        if not (isinstance(value, Tensor) and value.layout == torch.strided and not value.is_quantized):
            return _WALK
        flat = value.detach().cpu().reshape(-1)
        key = str(flat.dtype).removeprefix("torch.")
        offset = sizes.get(key, 0)
        buffers.setdefault(key, []).append(flat)
        sizes[key] = offset + flat.numel()
        return (_PACKED, key, offset, list(value.shape))

    tree = _map(state, pack)
    return {"tree": tree, "buffers": {key: torch.cat(parts) for key, parts in buffers.items()}}


def unpack_tensors(packed: Mapping[str, Any]) -> Any:
    """The state :func:`pack_tensors` packed (each tensor a fresh CPU tensor)."""
    buffers = packed["buffers"]

    def unpack(value: Any) -> Any:
        if not (isinstance(value, tuple) and len(value) == 4 and value[0] == _PACKED):
            return _WALK
        _, key, offset, shape = value
        return buffers[key][offset : offset + math.prod(shape)].reshape(shape).clone()

    return _map(packed["tree"], unpack)


def _map(value: Any, convert: Callable[[Any], Any]) -> Any:
    """``convert(value)``, or where it returns ``_WALK``: dicts, lists and tuples rebuilt from their mapped items."""
    converted = convert(value)
    if converted is not _WALK:
        return converted
    if isinstance(value, dict):
        return {k: _map(v, convert) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [_map(v, convert) for v in value]
        return items if isinstance(value, list) else tuple(items)
    return value
