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
from inmaterio.crossbars.layers import analog_tiles
from inmaterio.crossbars.low_rank import LowRankConfig, LowRankGradient, transfer_counts
from inmaterio.crossbars.pulsed import PulsedArray, PulsedDevice, pulse, read_weights, sample_devices
from inmaterio.crossbars.updates import PulseTrainConfig, pulse_train_block, quantized_counts
from inmaterio.errors import ConfigError

__all__ = ["AnalogSGDConfig", "AnalogSGD", "pulse_block", "pulse_nonzero", "packed_devices"]

_ARRAY_FIELDS = ("w_min", "w_max", "dw_up", "dw_down", "reference")


class AnalogSGDConfig(StrictModel):
    """How the tiles of a model are updated (module docstring).

    device : the pulsed-device config of every tile (a ``kind`` and its fields; see :mod:`~inmaterio.crossbars.pulsed`).
    rule : ``pulse_train`` or ``mbgd``.
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


def pulse_block(
    array: PulsedArray,
    states: torch.Tensor,
    cols: torch.Tensor,
    rows: torch.Tensor,
    counts: torch.Tensor,
    generator: torch.Generator,
    packed: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`~inmaterio.crossbars.pulsed.pulse` on the block ``states[cols][:, rows]`` with ``counts (k, m)``.

    Devices outside the block keep their states (as with 0 pulses); the cycle-to-cycle noise is drawn for the
    block's devices only. ``packed`` : optionally :func:`packed_devices` of ``array`` (one gather instead of
    five). Returns the new ``(out, in)`` states.
    """
    if cols.numel() == 0 or rows.numel() == 0:
        return states
    if cols.numel() * rows.numel() == states.numel():
        return pulse(array, states, counts, generator)
    flat = (cols.unsqueeze(1) * states.shape[1] + rows).flatten()  # row-major indices of the block's devices
    if packed is None:
        packed = packed_devices(array)
    shape = (cols.numel(), rows.numel())
    sub = PulsedArray(array.config, *(t.view(shape) for t in packed.flatten(1).index_select(1, flat).unbind(0)))
    new = pulse(sub, states.flatten().index_select(0, flat).view(shape), counts, generator)
    return states.flatten().index_copy(0, flat, new.flatten()).view_as(states)


def packed_devices(array: PulsedArray) -> torch.Tensor:
    """``(5, *shape)``: the per-device tensors of ``array`` stacked (w_min, w_max, dw_up, dw_down, reference)."""
    return torch.stack([getattr(array, name) for name in _ARRAY_FIELDS])


def pulse_nonzero(array: PulsedArray, states: torch.Tensor, counts: torch.Tensor, generator) -> torch.Tensor:
    """:func:`pulse_block` on the columns and rows of ``counts (out, in)`` that hold any pulse."""
    pulsed = counts != 0
    cols = pulsed.any(dim=1).nonzero().flatten()
    rows = pulsed.any(dim=0).nonzero().flatten()
    return pulse_block(array, states, cols, rows, counts.index_select(0, cols).index_select(1, rows), generator)


def _check_rows(x_rows: torch.Tensor, delta_rows: torch.Tensor) -> None:
    """Refuse NaN or infinite recorded rows (a diverged training) before any pulse."""
    if not (torch.isfinite(x_rows).all() and torch.isfinite(delta_rows).all()):
        raise ValueError("AnalogSGD: the recorded inputs or output gradients hold NaN or infinite values (a diverged training?)")


class AnalogSGD(torch.optim.Optimizer):
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
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0 or lr == float("inf"):
            raise ConfigError(f"AnalogSGD lr = {lr!r} must be a finite number > 0")
        tiles = list(analog_tiles(model))
        if not tiles:
            raise ConfigError("AnalogSGD needs a model with analog tiles (convert_to_analog or Analog* layers)")
        self.config = config
        self.tiles = tiles
        tile_weights = {id(t.weight) for t in tiles}
        digital = [p for p in model.parameters() if p.requires_grad and id(p) not in tile_weights]
        groups: list[dict[str, Any]] = [{"params": [t.weight for t in tiles], "analog": True}]
        if digital:
            groups.append({"params": digital, "analog": False})
        super().__init__(groups, {"lr": float(lr)})
        self.generator = torch.Generator(device=tiles[0].weight.device).manual_seed(seed)
        draw = torch.Generator().manual_seed(seed)
        self._packed: dict[int, torch.Tensor] = {}  # the devices of each tile stacked (they never change)
        self.trackers: list[LowRankGradient | None] = []
        for tile in tiles:
            w = tile.weight
            array = sample_devices(config.device, tuple(w.shape), draw, dtype=w.dtype, device=w.device)
            states = torch.maximum(torch.minimum(w.detach() + array.reference, array.w_max), array.w_min)
            self.state[w].update({name: getattr(array, name) for name in _ARRAY_FIELDS})
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
        return PulsedArray(self.config.device, *(state[name] for name in _ARRAY_FIELDS))

    def devices(self, tile_index: int) -> tuple[PulsedArray, torch.Tensor]:
        """The devices of tile ``tile_index`` (module order) and their current states ``(out, in)``."""
        w = self.tiles[tile_index].weight
        return self._array(w), self.state[w]["states"]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients and the rows the tiles recorded for a pulse-train update."""
        super().zero_grad(set_to_none=set_to_none)
        for tile in self.tiles:
            tile.update_rows.clear()

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch's signature
        """One update: pulses on every tile (its recorded rows or its gradient), SGD on the digital parameters."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        config = self.config
        dw_min = config.device.dw_min
        for group in self.param_groups:
            lr = group["lr"]
            if not group["analog"]:
                for p in group["params"]:
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-lr)
                continue
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
                        _check_rows(x_rows, delta_rows)
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
        return loss

    def state_dict(self) -> dict[str, Any]:
        """torch's optimizer state (devices and states per tile) plus the pulse generator's state."""
        out = super().state_dict()
        out["generator"] = self.generator.get_state()
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the tiles' weights are set to the restored devices' read weights)."""
        state_dict = dict(state_dict)
        generator = state_dict.pop("generator", None)
        if generator is None:
            raise ValueError("this is not an AnalogSGD state (no 'generator' entry)")
        super().load_state_dict(state_dict)
        self.generator.set_state(generator)
        self._packed.clear()
        with torch.no_grad():
            for tile, tracker in zip(self.tiles, self.trackers):
                tile.weight.copy_(read_weights(self._array(tile.weight), self.state[tile.weight]["states"]))
                if tracker is not None and tracker.pca is not None:
                    tracker.pca.load_state_dict(self.state[tile.weight]["low_rank"])
