"""Checkpoint packing (one buffer per dtype) and the throttled writer of the trainers' run folders."""

import io
import json

import pytest
import torch

from inmaterio.checkpoints import CheckpointWriter, history_of, pack_tensors, unpack_tensors
from inmaterio.errors import ConfigError
from inmaterio.runs import CHECKPOINT_FILE, HISTORY_JSON, open_run


def test_pack_round_trip_keeps_structure_dtypes_and_bits():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))], betas=(0.8, 0.99))
    for p in opt.param_groups[0]["params"]:
        p.grad = torch.randn_like(p)
    opt.step()
    state = {
        "optimizer": opt.state_dict(),  # int keys, tuples (betas), 0-dim step tensors
        "mixed": [torch.tensor(7, dtype=torch.int64), (torch.ones(2, dtype=torch.bool), "text", None, 1.5)],
        "generator": torch.Generator().manual_seed(3).get_state(),  # uint8
        "empty": torch.zeros(0, 5),
        "half": torch.randn(2, 3).to(torch.float16),
    }
    packed = pack_tensors(state)
    assert sorted(packed["buffers"]) == ["bool", "float16", "float32", "int64", "uint8"]
    buffer = io.BytesIO()
    torch.save(packed, buffer)
    buffer.seek(0)
    restored = unpack_tensors(torch.load(buffer, weights_only=True))

    def same(a, b):
        if isinstance(a, torch.Tensor):
            return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        if isinstance(a, dict):
            return type(b) is dict and list(a) == list(b) and all(same(a[k], b[k]) for k in a)
        if isinstance(a, list | tuple):
            return type(a) is type(b) and len(a) == len(b) and all(same(u, v) for u, v in zip(a, b))
        return a == b

    assert same(state, restored)
    # a snapshot: changing the source afterwards changes nothing packed
    state["half"].add_(1)
    assert not torch.equal(unpack_tensors(packed)["half"], state["half"])


def test_writer_writes_the_first_state_then_at_most_every_interval_and_on_an_exception(tmp_path):
    history = []
    with open_run(tmp_path, "inmaterio.test", identity={}, notify=lambda m: None) as run:
        writer = CheckpointWriter(run, 3600.0)
        with pytest.raises(KeyboardInterrupt), writer.flushing_on_exit():
            for step in range(4):
                history.append({"step": step})
                writer.offer({"step": step}, history)
                saved = run.load_checkpoint()
                assert saved["step"] == 0 and history_of(saved) == [{"step": 0}]  # only the first is written at once
            raise KeyboardInterrupt
        saved = run.load_checkpoint()
        assert saved["step"] == 3 and len(history_of(saved)) == 4  # written on the way out
        assert json.loads((tmp_path / HISTORY_JSON).read_text()) == history
        writer.offer({"step": 4}, history + [{"step": 4}], final=True)
        assert run.load_checkpoint()["step"] == 4
    assert (tmp_path / CHECKPOINT_FILE).exists()
    CheckpointWriter(None, 0).offer({"step": 0}, [])  # no run folder: nothing happens
    for bad in (-1.0, float("nan"), float("inf"), True, "1"):
        with pytest.raises(ConfigError, match="checkpoint_interval_s must be a finite number of seconds >= 0"):
            CheckpointWriter(None, bad)
