r"""Tiki-Taka (v1 and v2): training on asymmetric pulsed devices with a fast array ``A``, a slow array ``C``.

References
    T. Gokmen and W. Haensch, "Algorithm for training neural networks on resistive device arrays",
    Front. Neurosci. 14:103 (2020) -- Tiki-Taka, here *TTv1*.
    T. Gokmen, "Enabling training of neural networks on noisy hardware", Front. Artif. Intell. 4:699148
    (2021) -- *TTv2* (the digital buffer ``H``) and the read-out of the final weights by regression
    (:mod:`~inmaterio.crossbars.extraction`).

Plain pulsed SGD on devices whose up and down steps differ (e.g. soft bounds) drifts every weight towards
its device's symmetry point by :math:`|\Delta w|\,(w - w^*)/\tau` per update, whatever the update's sign,
and settles between the optimum and :math:`w^*` (:mod:`~inmaterio.crossbars.shd`). Tiki-Taka lets that
drift work for it: the gradient goes to a *fast* array ``A`` whose devices are read relative to their
symmetry point (``reference: zero_shift``), so the drift pulls :math:`\bar A` to 0, where no gradient is
left; ``A`` acts as a leaky, device-native accumulator of the gradient, and its content is moved now and
then into a *slow* array ``C`` that holds the weights.

Both arrays are sampled pulsed devices (:func:`~inmaterio.crossbars.pulsed.sample_devices`, each from its
own config), read as :math:`\bar A = A - r_A`, :math:`\bar C = C - r_C`
(:func:`~inmaterio.crossbars.pulsed.read_weights`). ``A`` starts at its reference (:math:`\bar A = 0`),
``C`` is programmed with the tile's weights. The network weight of a tile (its ``weight``, what the forward
and backward reads use) is

.. math::

    W = \gamma\,\bar A + \bar C \qquad (\gamma \ge 0;\ \text{TTv2 in the paper: } \gamma = 0).

Every row of a batch (one sample, one patch of a convolution) with input ``x (in,)`` and output gradient
``delta (out,)``, in order:

1. *Gradient on A*: one stochastic pulse-train update :math:`\bar A \mathrel{+}= \eta\,(-\delta)\,x^T`
   (:func:`~inmaterio.crossbars.updates.pulse_train_block` with ``A``'s ``dw_min``; :math:`\eta` the
   optimizer's learning rate), exactly as :class:`~inmaterio.crossbars.analog_sgd.AnalogSGD` updates its
   one array.
2. *Transfer*, after every ``transfer_every`` (:math:`n_s`) rows counted over the whole training: the
   ``t``-th transfer (``t = 0, 1, ...``) reads column :math:`j = t \bmod n_{in}` of ``A`` by one mat-vec
   with the unit input :math:`e_j` through the periphery ``transfer_io`` (noise, DAC/ADC, ...; the private
   :func:`~inmaterio.crossbars.tile._read`, weight scale :math:`\max(|w_{\min}|, |w_{\max}|)` of ``A``'s
   nominal range):

   .. math:: v = \bar A e_j + \text{noise} \quad (out,)

   *TTv1*: ``C`` gets the pulse-train update :math:`\bar C \mathrel{+}= \lambda\, v\, e_j^T`
   (:math:`\lambda` = ``transfer_lr``; only column ``j`` can pulse; ``transfer_pulse_train`` settings
   and ``C``'s ``dw_min``), so :math:`E[\Delta \bar C_{:j}] = \lambda\,v` for ideal devices.

   *TTv2*: a digital buffer ``H (out, in)``, in units of ``C``'s ``dw_min`` (:math:`\delta w_C`), filters
   the reads:

   .. math::

       H_{:j} \mathrel{+}= \lambda\, v / \delta w_C ,\qquad
       n_{ij} = \mathrm{sign}(H_{ij}) \lfloor |H_{ij}| \rfloor \ \text{where } |H_{ij}| \ge \theta_{ij}
       \ (\text{else } 0),

   ``C``'s devices of column ``j`` get :math:`n_{ij}` pulses (at most ``max_transfer_pulses`` each) and
   then, where a device was pulsed, ``buffer: reset`` sets :math:`H_{ij} = 0` (the default: our reading of
   TTv2, not checked against the paper's text; the sub-threshold rest is dropped), ``buffer: subtract`` keeps the
   remainder, :math:`H_{ij} \mathrel{-}= n_{ij}`. The threshold is :math:`\theta_{ij} = \theta`
   (``threshold``, >= 1: at least one whole pulse), raised by the ``hysteresis`` ``h`` (pulse units) when
   the transfer would reverse the sign of the device's previous transfer:
   :math:`\theta_{ij} = \theta + h\,[s_{ij} \ne 0 \wedge \mathrm{sign}(H_{ij}) \ne s_{ij}]`, :math:`s_{ij}`
   the sign of the last transfer to device ``ij`` (0 before the first). A reversal needs more evidence
   than a repeat, which suppresses the up-down flicker of ``C`` around a weight (whose mean, on an
   asymmetric device, is itself biased towards the symmetry point); ``h = 0`` is plain TTv2.

Reading the weights out (Gokmen 2021, Eq. 4): :meth:`TikiTaka.read_slow_weights` estimates a tile's
:math:`\bar C` from random mat-vecs through a periphery by least squares
(:class:`~inmaterio.crossbars.extraction.MatVecAccumulator`), with a caller's generator (training's
random stream untouched). With ``average_reads: k > 0`` every step also adds ``k`` random reads of each
tile's :math:`\bar C` (through the tile's forward periphery) to a running regression; its estimate
(:meth:`TikiTaka.averaged_weights`) is the average of the iterates :math:`\bar C_t` over the reads (the
paper's model average over TTv2 iterates; :meth:`TikiTaka.reset_average` starts a new window, e.g. for
the last epoch).

Choices where the papers leave room: the transfer counter runs over rows (samples), not mini-batches; the
transfer learning rate is absolute (not scaled by the optimizer's learning rate, which scales only the
gradient on ``A``); one column per transfer (no multi-column reads); the columns cycle in order from 0;
the TTv2 buffer is in pulse units and its threshold >= 1 pulse (the paper's single-pulse transfer is
``max_transfer_pulses: 1``); the hysteresis rule above is this module's definition (no published
equation was available to check it against).

Every other parameter (digital biases, ...) takes a plain SGD step. Devices, states, ``H``, the last
transfer signs, the counters, the averaging sums and the pulse generator are in the ``state_dict``: a
resumed training continues bit for bit. With ``gamma: 1``, no transfer and the same device config for
``A`` as an :class:`~inmaterio.crossbars.analog_sgd.AnalogSGD` (same seed), ``A`` takes the same pulses as
AnalogSGD's array: ``A``'s devices are drawn from the same stream, tile by tile, ``C``'s from another.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn

from inmaterio.config import StrictModel, validate_config
from inmaterio.crossbars.extraction import MatVecAccumulator
from inmaterio.crossbars.pulsed import PulsedArray, PulsedDevice, read_weights, sample_devices
from inmaterio.crossbars.tile import AnalogTile, IOConfig, _read
from inmaterio.crossbars.tile_optimizer import ARRAY_FIELDS, TileOptimizer, pulse_block
from inmaterio.crossbars.updates import PulseTrainConfig, pulse_train_block
from inmaterio.errors import ConfigError

__all__ = ["TikiTakaConfig", "TikiTaka"]


class TikiTakaConfig(StrictModel):
    """Tiki-Taka settings (module docstring).

    version : 1 (TTv1: transfer by pulse trains) or 2 (TTv2: through the digital buffer H).
    device_a : the fast array's pulsed-device config (typically ``reference: zero_shift``).
    device_c : the slow array's pulsed-device config (the network weights).
    pulse_train : the pulse-train settings of the gradient update on A.
    transfer_every : n_s >= 1, rows (samples) between two transfers.
    transfer_lr : lambda > 0, the transfer's learning rate (weight change of C per unit of read A).
    transfer_io : the periphery of the column read of A (default ideal).
    transfer_pulse_train : the pulse-train settings of the TTv1 transfer onto C.
    gamma : >= 0, the share of A in the network weight W = gamma A + C.
    threshold : TTv2, >= 1, ``|H|`` (pulses of C) at which a device of C is pulsed.
    hysteresis : TTv2, >= 0, extra threshold (pulses) for a transfer of the opposite sign to the device's last.
    buffer : TTv2, ``reset`` (H = 0 where C was pulsed) or ``subtract`` (H -= the pulses given).
    max_transfer_pulses : TTv2, the most pulses per device and transfer (None: ``floor(|H|)``).
    average_reads : random reads of each tile's C per step added to the averaging regression (0: off).
    """

    version: Literal[1, 2] = 2
    device_a: PulsedDevice
    device_c: PulsedDevice
    pulse_train: PulseTrainConfig = PulseTrainConfig()
    transfer_every: int = Field(1, ge=1)
    transfer_lr: float = Field(1.0, gt=0)
    transfer_io: IOConfig = IOConfig()
    transfer_pulse_train: PulseTrainConfig = PulseTrainConfig()
    gamma: float = Field(0.0, ge=0)
    threshold: float = Field(1.0, ge=1)
    hysteresis: float = Field(0.0, ge=0)
    buffer: Literal["reset", "subtract"] = "reset"
    max_transfer_pulses: int | None = Field(None, ge=1)
    average_reads: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _buffer_settings_need_v2(self) -> TikiTakaConfig:
        if self.version == 1:
            for name, default in (("threshold", 1.0), ("hysteresis", 0.0), ("max_transfer_pulses", None)):
                if getattr(self, name) != default:
                    raise ValueError(f"{name} = {getattr(self, name)} acts on TTv2's buffer; version 1 has none (set version: 2)")
        if self.transfer_io.forward_weight_noise != 0:
            raise ValueError(
                f"transfer_io.forward_weight_noise = {self.transfer_io.forward_weight_noise} must be 0 "
                "(hardware-aware training noise; use weight_noise for a noisy read)"
            )
        return self


def _bound(config: PulsedDevice) -> float:
    return max(abs(config.w_min), abs(config.w_max))


def _derived_seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0]) & (2**63 - 1)


class TikiTaka(TileOptimizer):
    """Tiki-Taka v1/v2 over a model's analog tiles (module docstring); the other parameters take SGD steps.

    Parameters
    ----------
    model : the module whose :func:`~inmaterio.crossbars.layers.analog_tiles` are trained.
    config : :class:`TikiTakaConfig` or a mapping validated into one.
    lr : the learning rate (> 0) of the gradient update on A and of the digital SGD steps.
    seed : draws A's devices (tile by tile, the same stream as :class:`~inmaterio.crossbars.analog_sgd.AnalogSGD`),
        C's devices (a stream derived from it) and every pulse, read noise and averaging read.

    Raises
    ------
    ConfigError
        A bad config or learning rate, a model without analog tiles.
    """

    def __init__(self, model: nn.Module, config: TikiTakaConfig | Mapping[str, Any], lr: float, *, seed: int = 0) -> None:
        if isinstance(config, Mapping):
            config = validate_config(TikiTakaConfig, dict(config), source="TikiTaka config")
        if not isinstance(config, TikiTakaConfig):
            raise ConfigError(f"config must be a TikiTakaConfig or a mapping, got {type(config).__name__}")
        super().__init__(model, lr, seed, "TikiTaka")
        self.config = config
        draw_a = torch.Generator().manual_seed(seed)
        draw_c = torch.Generator().manual_seed(_derived_seed(seed, 1))
        self._averages: list[MatVecAccumulator | None] = []
        for tile in self.tiles:
            w = tile.weight
            shape, factory = tuple(w.shape), {"dtype": w.dtype, "device": w.device}
            a = sample_devices(config.device_a, shape, draw_a, **factory)
            c = sample_devices(config.device_c, shape, draw_c, **factory)
            state = self.state[w]
            state.update({f"a_{name}": getattr(a, name) for name in ARRAY_FIELDS})
            state.update({f"c_{name}": getattr(c, name) for name in ARRAY_FIELDS})
            state["a_states"] = a.reference.clone()  # read 0
            state["c_states"] = torch.maximum(torch.minimum(w.detach() + c.reference, c.w_max), c.w_min)
            state["rows_seen"] = 0
            if config.version == 2:
                state["h"] = torch.zeros_like(w.detach())
                state["last_sign"] = torch.zeros_like(w.detach())
            self._averages.append(MatVecAccumulator(shape[1], shape[0], device=w.device) if config.average_reads else None)
            tile.record_update = True
            tile.update_rows.clear()
            with torch.no_grad():
                w.copy_(self._network_weight(w))

    # ---------------------------------------------------------------------------------------------- arrays

    def _array(self, weight: torch.Tensor, which: str) -> PulsedArray:
        device = self.config.device_a if which == "a" else self.config.device_c
        state = self.state[weight]
        return PulsedArray(device, *(state[f"{which}_{name}"] for name in ARRAY_FIELDS))

    def _network_weight(self, weight: torch.Tensor) -> torch.Tensor:
        state = self.state[weight]
        c = read_weights(self._array(weight, "c"), state["c_states"])
        if self.config.gamma == 0:
            return c
        return c + self.config.gamma * read_weights(self._array(weight, "a"), state["a_states"])

    def devices(self, tile_index: int) -> dict[str, tuple[PulsedArray, torch.Tensor]]:
        """The fast and slow devices of tile ``tile_index`` (module order) with their states ``(out, in)``:
        ``{"a": (array, states), "c": (array, states)}``."""
        w = self.tiles[tile_index].weight
        return {k: (self._array(w, k), self.state[w][f"{k}_states"]) for k in ("a", "c")}

    def buffer(self, tile_index: int) -> torch.Tensor:
        """TTv2's buffer ``H (out, in)`` of tile ``tile_index``, in pulses of C (a copy)."""
        if self.config.version != 2:
            raise ValueError("TTv1 has no buffer H (version 1)")
        return self.state[self.tiles[tile_index].weight]["h"].clone()

    def rows_seen(self, tile_index: int) -> int:
        """The rows (samples) tile ``tile_index`` has been updated with; transfers happen at multiples of n_s."""
        return int(self.state[self.tiles[tile_index].weight]["rows_seen"])

    # ---------------------------------------------------------------------------------------------- update

    def _read_column(self, a_array: PulsedArray, a_states: torch.Tensor, j: int) -> torch.Tensor:
        """``v = A e_j (out,)`` through ``transfer_io`` (noise from the optimizer's generator).

        Without IR drop the read of ``e_j`` sees column ``j`` alone (the other inputs are 0; max scaling,
        DAC and ``|e_j|_2 = 1`` are those of the scalar input 1), so only that column is read.
        """
        io = self.config.transfer_io
        dtype, device = a_states.dtype, a_states.device
        w_scale = torch.tensor(_bound(self.config.device_a), dtype=dtype, device=device)
        if io.ir_drop > 0:
            e = torch.zeros((1, a_states.shape[1]), dtype=dtype, device=device)
            e[0, j] = 1.0
            y, _, _ = _read(e, read_weights(a_array, a_states), io, w_scale, self.generator, masks=False)
            return y[0]
        column = a_states[:, j : j + 1] - a_array.reference[:, j : j + 1].to(device, dtype)
        y, _, _ = _read(torch.ones((1, 1), dtype=dtype, device=device), column, io, w_scale, self.generator, masks=False)
        return y[0]

    def _transfer(self, weight: torch.Tensor, j: int) -> None:
        config, state, gen = self.config, self.state[weight], self.generator
        a_array, c_array = self._array(weight, "a"), self._array(weight, "c")
        v = self._read_column(a_array, state["a_states"], j)
        c_states = state["c_states"]
        col = torch.tensor([j], device=c_states.device)
        dw_c = config.device_c.dw_min
        if config.version == 1:
            e = torch.zeros(c_states.shape[1], dtype=v.dtype, device=v.device)
            e[j] = 1.0
            cols, rows, counts = pulse_train_block(e, v, config.transfer_lr, dw_c, config.transfer_pulse_train, gen)
            state["c_states"] = pulse_block(c_array, c_states, cols, rows, counts, gen)
            return
        h = state["h"]
        hj = h[:, j] + (config.transfer_lr / dw_c) * v
        sign = torch.sign(hj)
        last = state["last_sign"][:, j]
        theta = config.threshold + config.hysteresis * ((last != 0) & (sign != last)).to(hj.dtype)
        n = torch.where(hj.abs() >= theta, sign * torch.floor(hj.abs()), torch.zeros_like(hj))
        if config.max_transfer_pulses is not None:
            n = n.clamp(-config.max_transfer_pulses, config.max_transfer_pulses)
        pulsed = n != 0
        if config.buffer == "reset":
            hj = torch.where(pulsed, torch.zeros_like(hj), hj)
        else:
            hj = hj - n
        h[:, j] = hj
        state["last_sign"][:, j] = torch.where(pulsed, sign, last)
        cols = pulsed.nonzero().flatten()
        if cols.numel():
            counts = n.index_select(0, cols).to(torch.int64).unsqueeze(1)
            state["c_states"] = pulse_block(c_array, c_states, cols, col, counts, gen)

    def _update_tile(self, tile: AnalogTile, lr: float) -> None:
        config, w = self.config, tile.weight
        state = self.state[w]
        a_array = self._array(w, "a")
        dw_a, n_s = config.device_a.dw_min, config.transfer_every
        n_in = w.shape[1]
        for x_rows, delta_rows in tile.update_rows:
            for x, delta in zip(x_rows, delta_rows):
                cols, rows, counts = pulse_train_block(x, -delta, lr, dw_a, config.pulse_train, self.generator)
                state["a_states"] = pulse_block(a_array, state["a_states"], cols, rows, counts, self.generator)
                state["rows_seen"] += 1
                if state["rows_seen"] % n_s == 0:
                    self._transfer(w, (state["rows_seen"] // n_s - 1) % n_in)
        tile.update_rows.clear()

    def _add_average_reads(self, index: int) -> None:
        tile, acc = self.tiles[index], self._averages[index]
        w = tile.weight
        c = read_weights(self._array(w, "c"), self.state[w]["c_states"])
        x = torch.rand((self.config.average_reads, w.shape[1]), generator=self.generator, device=w.device, dtype=w.dtype)
        x = x.mul_(2).sub_(1)
        w_scale = torch.tensor(_bound(self.config.device_c), dtype=w.dtype, device=w.device)
        y, _, _ = _read(x, c, tile.config.io, w_scale, self.generator, masks=False)
        acc.add(x, y)

    def update_tiles(self, lr: float) -> None:
        """Every recorded row pulses A (and transfers to C when due); the averaging reads, if any."""
        for index, tile in enumerate(self.tiles):
            self._update_tile(tile, lr)
            if self.config.average_reads:
                self._add_average_reads(index)
            tile.weight.copy_(self._network_weight(tile.weight))

    # ---------------------------------------------------------------------------------------------- read-out

    @torch.no_grad()
    def read_slow_weights(
        self,
        tile_index: int,
        n_reads: int,
        generator: torch.Generator,
        *,
        io: IOConfig | Mapping[str, Any] | None = None,
        batch: int = 4096,
    ) -> torch.Tensor:
        """Estimate tile ``tile_index``'s slow weights C ``(out, in)`` (float64) from ``n_reads`` random mat-vecs.

        Inputs uniform in [-1, 1], read through ``io`` (default: the tile's forward periphery; weight scale
        ``max(|w_min|, |w_max|)`` of C's nominal range), inputs and noise from ``generator`` (on the tile's
        device), least squares as :func:`~inmaterio.crossbars.extraction.extract_weights`. The training's
        random stream is not touched. Raises ValueError for ``n_reads < in_features``.
        """
        tile = self.tiles[tile_index]
        w = tile.weight
        n_out, n_in = w.shape
        if isinstance(n_reads, bool) or not isinstance(n_reads, int) or n_reads < n_in:
            raise ValueError(f"n_reads = {n_reads!r} must be an integer >= in_features = {n_in} (least squares needs it)")
        if isinstance(io, Mapping):
            io = validate_config(IOConfig, dict(io), source="read_slow_weights io")
        io = tile.config.io if io is None else io
        c = read_weights(self._array(w, "c"), self.state[w]["c_states"])
        w_scale = torch.tensor(_bound(self.config.device_c), dtype=w.dtype, device=w.device)
        acc = MatVecAccumulator(n_in, n_out, device=w.device)
        done = 0
        while done < n_reads:
            b = min(batch, n_reads - done)
            x = torch.rand((b, n_in), generator=generator, device=w.device, dtype=w.dtype).mul_(2).sub_(1)
            y, _, _ = _read(x, c, io, w_scale, generator, masks=False)
            acc.add(x, y)
            done += b
        return acc.estimate()

    def averaged_weights(self, tile_index: int) -> torch.Tensor:
        """The regression estimate ``(out, in)`` (float64) over every averaging read since the start or the last
        :meth:`reset_average`: the average of the iterates of C (needs ``average_reads > 0``)."""
        acc = self._averages[tile_index]
        if acc is None:
            raise ValueError("averaging is off (config average_reads = 0)")
        return acc.estimate()

    def reset_average(self) -> None:
        """Start a new averaging window (clear the sums of every tile)."""
        self._averages = [
            None if acc is None else MatVecAccumulator(acc.in_features, acc.out_features, device=acc.m_xx.device)
            for acc in self._averages
        ]

    # ---------------------------------------------------------------------------------------------- checkpoints

    def state_dict(self) -> dict[str, Any]:
        """torch's optimizer state (devices, states, H, counters per tile) plus the generator and the averaging sums."""
        out = super().state_dict()
        out["averages"] = [
            None if acc is None else {"m_xx": acc.m_xx.clone(), "m_yx": acc.m_yx.clone(), "n_reads": acc.n_reads}
            for acc in self._averages
        ]
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the tiles' weights are set to the restored network weights)."""
        state_dict = dict(state_dict)
        averages = state_dict.pop("averages", None)
        if averages is None or "generator" not in state_dict:
            raise ValueError("this is not a TikiTaka state (no 'generator' / 'averages' entry)")
        if len(averages) != len(self.tiles):
            raise ValueError(f"the state holds {len(averages)} tiles, this optimizer has {len(self.tiles)}")
        super().load_state_dict(state_dict)
        restored: list[MatVecAccumulator | None] = []
        for tile, saved in zip(self.tiles, averages):
            if not self.config.average_reads:
                restored.append(None)
                continue
            n_out, n_in = tile.weight.shape
            acc = MatVecAccumulator(n_in, n_out, device=tile.weight.device)
            if saved is None:
                restored.append(acc)
                continue
            acc.m_xx.copy_(saved["m_xx"])
            acc.m_yx.copy_(saved["m_yx"])
            acc.n_reads = int(saved["n_reads"])
            restored.append(acc)
        self._averages = restored
        with torch.no_grad():
            for tile in self.tiles:
                tile.weight.copy_(self._network_weight(tile.weight))
