"""SGD on pulsed devices: the weights of a model's analog tiles live on sampled devices and change only by pulses.

:class:`AnalogSGD` is a ``torch.optim.Optimizer`` over a whole model. Every
:class:`~inmaterio.crossbars.tile.AnalogTile` of the model gets its own array of devices drawn from one
pulsed-device config (:func:`~inmaterio.crossbars.pulsed.sample_devices`; per-device bounds, steps and
asymmetry), programmed once with the tile's current weights (the states are the weights plus each
device's reference, clipped into its bounds). From then on the tile's ``weight`` is the devices' read
weight (:func:`~inmaterio.crossbars.pulsed.read_weights`) and a step changes it only through
:func:`~inmaterio.crossbars.pulsed.pulse`, with one of the update rules of
:mod:`inmaterio.crossbars.updates`:

``rule: pulse_train`` (Gokmen & Vlasov 2016)
    every row of the batch (each sample, each patch of a convolution) is one rank-one stochastic
    pulse-train update ``lr * (-delta) x^T``, applied in order; the tiles record ``(x, delta)`` during
    the backward pass (``AnalogTile.record_update``).
``rule: mbgd`` (mini-batch GD with pulse-count quantisation; Zhao et al. 2021)
    the tile's accumulated gradient ``G`` (what the loss made of the batch, e.g. its mean) becomes
    ``round(-lr * G / dw_min)`` pulses, rounded to nearest or stochastically, at most ``max_pulses``.
``rule: low_rank`` (gradient decomposition; Zhao et al. 2021)
    the batch's rows stream into a rank-k approximation of ``G`` (:mod:`inmaterio.crossbars.low_rank`:
    streaming batch PCA or NMF), whose factors become pulse counts as one matrix (``transfer: sum``) or one
    per component applied in order (``transfer: seq``), rounded as ``mbgd``.

Every other parameter (digital biases, DNPU control voltages, ...) takes a plain SGD step with the same
learning rate. The devices, their states and the pulse generator are in the optimizer's
``state_dict``, so a checkpointed training resumes on the same devices with the same pulses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import torch
from pydantic import Field
from torch import nn

from inmaterio.config import StrictModel, validate_config
from inmaterio.crossbars.low_rank import LowRankConfig, LowRankGradient, transfer_counts
from inmaterio.crossbars.pulsed import PulsedArray, PulsedDevice, read_weights, sample_devices
from inmaterio.crossbars.tile_optimizer import ARRAY_FIELDS, TileOptimizer, check_rows, packed_devices, pulse_block, pulse_nonzero
from inmaterio.crossbars.updates import PulseTrainConfig, pulse_train_block, quantized_counts
from inmaterio.errors import ConfigError

__all__ = ["AnalogSGDConfig", "AnalogSGD"]


class AnalogSGDConfig(StrictModel):
    """How the tiles of a model are updated (module docstring).

    device : the pulsed-device config of every tile (a ``kind`` and its fields; see :mod:`~inmaterio.crossbars.pulsed`).
    rule : ``pulse_train``, ``mbgd`` or ``low_rank``.
    pulse_train : the pulse-train settings (``rule: pulse_train``).
    rounding : ``nearest`` or ``stochastic`` (``rule: mbgd`` and ``low_rank``).
    max_pulses : the most pulses per device and count matrix (``mbgd``, ``low_rank``; None: no limit).
    low_rank : the decomposition (``rule: low_rank``).
    """

    device: PulsedDevice
    rule: Literal["pulse_train", "mbgd", "low_rank"] = "pulse_train"
    pulse_train: PulseTrainConfig = PulseTrainConfig()
    low_rank: LowRankConfig = LowRankConfig()
    rounding: Literal["nearest", "stochastic"] = "stochastic"
    max_pulses: int | None = Field(None, ge=1)


class AnalogSGD(TileOptimizer):
    """SGD whose analog tiles change by device pulses (module docstring).

    Parameters
    ----------
    model : the module whose :func:`~inmaterio.crossbars.layers.analog_tiles` are trained on devices and
        whose other trainable parameters take plain SGD steps.
    config : :class:`AnalogSGDConfig` or a mapping validated into one.
    lr : the learning rate (> 0).
    seed : draws the devices (tile by tile, in module order) and every pulse (update slots, rounding,
        cycle-to-cycle noise).

    Raises
    ------
    ConfigError
        A bad config or learning rate, a model without analog tiles.
    """

    def __init__(self, model: nn.Module, config: AnalogSGDConfig | Mapping[str, Any], lr: float, *, seed: int = 0) -> None:
        if isinstance(config, Mapping):
            config = validate_config(AnalogSGDConfig, dict(config), source="AnalogSGD config")
        if not isinstance(config, AnalogSGDConfig):
            raise ConfigError(f"config must be an AnalogSGDConfig or a mapping, got {type(config).__name__}")
        super().__init__(model, lr, seed, "AnalogSGD")
        self.config = config
        draw = torch.Generator().manual_seed(seed)
        self._packed: dict[int, torch.Tensor] = {}  # the devices of each tile stacked (they never change)
        self.trackers: list[LowRankGradient | None] = []
        for tile in self.tiles:
            w = tile.weight
            array = sample_devices(config.device, tuple(w.shape), draw, dtype=w.dtype, device=w.device)
            states = torch.maximum(torch.minimum(w.detach() + array.reference, array.w_max), array.w_min)
            self.state[w].update({name: getattr(array, name) for name in ARRAY_FIELDS})
            self.state[w]["states"] = states
            with torch.no_grad():
                w.copy_(read_weights(array, states))
            tile.record_update = config.rule in ("pulse_train", "low_rank")
            tile.update_rows.clear()
            tracker = None
            if config.rule == "low_rank":
                try:
                    tracker = LowRankGradient(config.low_rank, *w.shape, self.generator, dtype=w.dtype, device=w.device)
                except ValueError as error:
                    raise ConfigError(f"AnalogSGD low_rank: a tile of {tuple(w.shape)} weights: {error}") from None
                if tracker.pca is not None:
                    self.state[w]["low_rank"] = tracker.pca.state_dict()
            self.trackers.append(tracker)

    def _array(self, weight: torch.Tensor) -> PulsedArray:
        state = self.state[weight]
        return PulsedArray(self.config.device, *(state[name] for name in ARRAY_FIELDS))

    def devices(self, tile_index: int) -> tuple[PulsedArray, torch.Tensor]:
        """The devices of tile ``tile_index`` (module order) and their current states ``(out, in)``."""
        w = self.tiles[tile_index].weight
        return self._array(w), self.state[w]["states"]

    def update_tiles(self, lr: float) -> None:
        """Pulses on every tile: its recorded rows (pulse trains, low rank) or its gradient (mbgd)."""
        config = self.config
        dw_min = config.device.dw_min
        for tile, tracker in zip(self.tiles, self.trackers):
            w = tile.weight
            array, states = self._array(w), self.state[w]["states"]
            if tracker is not None:
                for x_rows, delta_rows in tile.update_rows:
                    tracker.update(x_rows, delta_rows)
                tile.update_rows.clear()
                u, v = tracker.factors()
                for counts in transfer_counts(
                    config.low_rank, u, v, lr, dw_min, config.rounding, self.generator, config.max_pulses
                ):
                    states = pulse_nonzero(array, states, counts, self.generator)
                tracker.reset()
                if tracker.pca is not None:
                    self.state[w]["low_rank"] = tracker.pca.state_dict()
            elif config.rule == "pulse_train":
                packed = self._packed.get(id(w))
                if packed is None:
                    packed = self._packed[id(w)] = packed_devices(array)
                for x_rows, delta_rows in tile.update_rows:
                    check_rows(x_rows, delta_rows)
                    for x, delta in zip(x_rows, delta_rows):
                        cols, rows, counts = pulse_train_block(
                            x, -delta, lr, dw_min, config.pulse_train, self.generator, validate=False
                        )
                        states = pulse_block(array, states, cols, rows, counts, self.generator, packed)
                tile.update_rows.clear()
            elif w.grad is not None:
                counts = quantized_counts(-lr * w.grad, dw_min, config.rounding, self.generator, config.max_pulses)
                states = pulse_nonzero(array, states, counts, self.generator)
            self.state[w]["states"] = states
            w.copy_(read_weights(array, states))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the tiles' weights are set to the restored devices' read weights)."""
        super().load_state_dict(state_dict)
        self._packed.clear()
        with torch.no_grad():
            for tile, tracker in zip(self.tiles, self.trackers):
                tile.weight.copy_(read_weights(self._array(tile.weight), self.state[tile.weight]["states"]))
                if tracker is not None and tracker.pca is not None:
                    tracker.pca.load_state_dict(self.state[tile.weight]["low_rank"])
