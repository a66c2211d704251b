"""What every optimizer of analog tiles shares: the tiles of a model, digital SGD for the rest, block pulsing.

:class:`TileOptimizer` is the base of :class:`~inmaterio.crossbars.analog_sgd.AnalogSGD` and
:class:`~inmaterio.crossbars.tiki_taka.TikiTaka`: it finds a model's
:func:`~inmaterio.crossbars.layers.analog_tiles` (one parameter group, ``analog: True``) and its other
trainable parameters (a second group that takes plain SGD steps), owns the generator of every pulse
(in the state dict), clears the rows the tiles record for rank-one updates on ``zero_grad``, and leaves
the tiles' update to :meth:`TileOptimizer.update_tiles`.

:func:`pulse_block` / :func:`pulse_nonzero` apply :func:`~inmaterio.crossbars.pulsed.pulse` to the block
of devices that gets any pulse (an update of sparse inputs touches few rows and columns).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from inmaterio.crossbars.layers import analog_tiles
from inmaterio.crossbars.pulsed import PulsedArray, pulse
from inmaterio.crossbars.tile import AnalogTile
from inmaterio.errors import ConfigError

__all__ = ["TileOptimizer", "ARRAY_FIELDS", "pulse_block", "pulse_nonzero", "packed_devices", "check_rows"]

ARRAY_FIELDS = ("w_min", "w_max", "dw_up", "dw_down", "reference")
"""The per-device tensors of a :class:`~inmaterio.crossbars.pulsed.PulsedArray`, in its constructor's order."""


def packed_devices(array: PulsedArray) -> torch.Tensor:
    """``(5, *shape)``: the per-device tensors of ``array`` stacked (w_min, w_max, dw_up, dw_down, reference)."""
    return torch.stack([getattr(array, name) for name in ARRAY_FIELDS])


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


def pulse_nonzero(array: PulsedArray, states: torch.Tensor, counts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """:func:`pulse_block` on the columns and rows of ``counts (out, in)`` that hold any pulse."""
    pulsed = counts != 0
    cols = pulsed.any(dim=1).nonzero().flatten()
    rows = pulsed.any(dim=0).nonzero().flatten()
    return pulse_block(array, states, cols, rows, counts.index_select(0, cols).index_select(1, rows), generator)


def check_rows(x_rows: torch.Tensor, delta_rows: torch.Tensor) -> None:
    """Refuse NaN or infinite recorded rows (a diverged training) before any pulse."""
    if not (torch.isfinite(x_rows).all() and torch.isfinite(delta_rows).all()):
        raise ValueError("the recorded inputs or output gradients hold NaN or infinite values (a diverged training?)")


class TileOptimizer(torch.optim.Optimizer):
    """Base of the optimizers whose analog tiles change by device pulses (module docstring).

    Parameters
    ----------
    model : the module whose analog tiles are trained on devices and whose other trainable parameters take
        plain SGD steps.
    lr : the learning rate (> 0).
    seed : seeds :attr:`generator`, the stream of every pulse.
    name : the subclass's name, for messages.

    Raises
    ------
    ConfigError
        A bad learning rate, a model without analog tiles.
    """

    def __init__(self, model: nn.Module, lr: float, seed: int, name: str) -> None:
        if isinstance(lr, bool) or not isinstance(lr, int | float) or not lr > 0 or lr == float("inf"):
            raise ConfigError(f"{name} lr = {lr!r} must be a finite number > 0")
        tiles: list[AnalogTile] = list(analog_tiles(model))
        if not tiles:
            raise ConfigError(f"{name} needs a model with analog tiles (convert_to_analog or Analog* layers)")
        self.tiles = tiles
        tile_weights = {id(t.weight) for t in tiles}
        digital = [p for p in model.parameters() if p.requires_grad and id(p) not in tile_weights]
        groups: list[dict[str, Any]] = [{"params": [t.weight for t in tiles], "analog": True}]
        if digital:
            groups.append({"params": digital, "analog": False})
        super().__init__(groups, {"lr": float(lr)})
        self.generator = torch.Generator(device=tiles[0].weight.device).manual_seed(seed)
        self._name = name

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients and the rows the tiles recorded for a rank-one update."""
        super().zero_grad(set_to_none=set_to_none)
        for tile in self.tiles:
            tile.update_rows.clear()

    def update_tiles(self, lr: float) -> None:
        """Update every tile (its recorded rows or its gradient) with learning rate ``lr``; the subclass's rule."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch's signature
        """One update: :meth:`update_tiles`, and SGD on the digital parameters."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr = group["lr"]
            if group["analog"]:
                self.update_tiles(lr)
                continue
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-lr)
        return loss

    def state_dict(self) -> dict[str, Any]:
        """torch's optimizer state plus the pulse generator's state."""
        out = super().state_dict()
        out["generator"] = self.generator.get_state()
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (a subclass then rebuilds what it derives from the state)."""
        state_dict = dict(state_dict)
        generator = state_dict.pop("generator", None)
        if generator is None:
            raise ValueError(f"this is not a {self._name} state (no 'generator' entry)")
        super().load_state_dict(state_dict)
        self.generator.set_state(generator)
