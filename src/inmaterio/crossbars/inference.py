r"""PCM inference over time: program a model's tiles, let them drift, read them, compensate, evaluate.

The protocol of Joshi et al. (Nat. Commun. 11, 2473, 2020) and Spoon et al. (Front. Comput.
Neurosci. 15, 675741, 2021), on the statistics of :mod:`inmaterio.crossbars.pcm`::

    program(model, noise, gen)          every tile: w -> differential pair g_T -> g_prog, one nu per device,
                                        and the calibration reference of global drift compensation (t_s = 0)
    set_time(model, prog, t_s, gen)     every tile: effective weights = read(drift(g_prog, nu, t_s)),
                                        with compensate=True: compensation = reference / current
    evaluate(model)                     any number of batches: the same effective weights (one read-noise draw)
    reset(model)                        ideal weights again, compensation 1

:func:`accuracy_over_time` runs it for R independent programmings x the inference times of an
:class:`InferenceConfig`, with and without compensation, plus the ideal accuracy.

**Mapping.** A tile's weights ``W: (out, in)`` go onto differential pairs by
:func:`~inmaterio.crossbars.pcm.weights_to_conductances` with ``w_max`` the tile's largest ``|w|``
at programming time (aihwkit's per-tile scaling; a tile's ``TileConfig.weight_range``, a training
device's bound, plays no part here), so the largest weight sits at ``g_max_us``. Both devices of
a pair are programmed (the one at target 0 too: it ends at ``max(sigma_prog(0) xi, 0)``).

**Which conductance sets what** (as :mod:`~inmaterio.crossbars.pcm` advises): the programming
noise and the drift exponents are drawn at the target ``g_T`` (the papers and aihwkit), the 1/f
read noise's :math:`Q_s` is evaluated at ``g_prog`` (aihwkit's
``apply_drift_noise_to_conductance``: the device's physical state;
:meth:`~inmaterio.crossbars.pcm.PCMNoiseModel.conductance_at`).

**Read noise** is drawn once per :func:`set_time` call ("once per evaluation", as aihwkit's
``drift_analog_weights``): the conductances are read once, at ``t_s``, and every forward pass
until the next call uses them. The periphery of each tile (DAC, output noise, ADC) still acts on
every forward pass, with the tile's own generator; :func:`program` and :func:`set_time` reseed
that generator from theirs, so everything after a call is a function of the generator passed.

**Global drift compensation** (Joshi 2020; aihwkit's ``GlobalDriftCompensation``, written from its
definition). One digital factor per tile, :attr:`AnalogTile.compensation <inmaterio.crossbars.tile.AnalogTile>`:

.. math::

    c(t) = \frac{\sum_{j=1}^{n_\text{in}} \sum_{i=1}^{n_\text{out}} |y_i(e_j;\ 0)|}
                {\sum_{j=1}^{n_\text{in}} \sum_{i=1}^{n_\text{out}} |y_i(e_j;\ t)|}

with :math:`e_j` the one-hot input vectors (the identity matrix as a batch of ``in_features``
reads; each reads one row of devices, so no column sum can cancel and every device counts once)
and :math:`y(e_j; t)` the tile's output for it at inference time ``t``. The calibration reads go
**through the tile's forward periphery**, as on a chip: the tile's ``forward`` in eval mode (DAC,
IR drop, output noise, ADC; no hardware-aware training noise) on its effective weights, with the
digital stage neutral (``compensation`` 1, ``output_scale`` 1, ``output_offset`` 0 for the read,
restored afterwards), i.e. the ADC reading times the tile's constant weight scale. The reference
(numerator) is read by :func:`program` right after programming: the conductances read once at
``t_s = 0`` (1/f noise included, no drift with the default ``t0_s = t_c_s``); the current value
(denominator) by :func:`set_time`, on the very effective weights the evaluation then uses. A
tile whose current reading is 0 gets ``c = 1``. Cost: one ``(in, in) @ (in, out)`` read per tile
and call. The factor multiplies every output of the tile, so it restores the mean output but not
the spread of the drift exponents (devices at small conductance drift faster).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from pydantic import Field, field_validator
from torch import Tensor, nn

from inmaterio.config import StrictModel, validate_config
from inmaterio.crossbars.layers import analog_tiles
from inmaterio.crossbars.pcm import PCM_PRESETS, PCMNoiseModel, conductances_to_weights, pcm_preset, weights_to_conductances
from inmaterio.crossbars.tile import AnalogTile, TileConfig, as_tile_config
from inmaterio.errors import ConfigError
from inmaterio.progress import progress_bar
from inmaterio.random_streams import torch_generator

__all__ = [
    "InferenceConfig",
    "ProgrammedTile",
    "ProgrammedModel",
    "program",
    "set_time",
    "reset",
    "calibration_read",
    "hwa_weight_noise",
    "hwa_tile_config",
    "accuracy_over_time",
    "summarize_accuracy",
    "SECONDS",
]

#: Named inference times, s (the issue's 1 s, 1 h, 1 day, 1 week, 1 month = 30 days).
SECONDS: Mapping[str, float] = MappingProxyType(
    {"1 s": 1.0, "1 h": 3600.0, "1 day": 86400.0, "1 week": 604800.0, "1 month": 2592000.0}
)


class InferenceConfig(StrictModel):
    """An inference-over-time experiment (frozen).

    noise : a :class:`~inmaterio.crossbars.pcm.PCMNoiseModel` or the name of one of
        :data:`~inmaterio.crossbars.pcm.PCM_PRESETS` (``spoon2021``, ``spoon2021_gamma_half``, ...).
    times_s : inference times after programming, s: each >= 0, strictly increasing, at least one
        (default 1 s, 1 h, 1 day, 1 week, 1 month).
    repeats : independent programmings of the model (each evaluated at every time), >= 1.
    drift_compensation : also evaluate with global drift compensation (module docstring).
    """

    noise: PCMNoiseModel | str = "spoon2021"
    times_s: tuple[float, ...] = (1.0, 3600.0, 86400.0, 604800.0, 2592000.0)
    repeats: int = Field(25, ge=1)
    drift_compensation: bool = True

    @field_validator("noise")
    @classmethod
    def _known_preset(cls, value: PCMNoiseModel | str) -> PCMNoiseModel | str:
        if isinstance(value, str) and value not in PCM_PRESETS:
            raise ValueError(f"unknown PCM preset {value!r}; known presets: {', '.join(sorted(PCM_PRESETS))}")
        return value

    @field_validator("times_s", mode="before")
    @classmethod
    def _times_are_numbers(cls, value: Any) -> Any:
        if isinstance(value, list | tuple):
            for i, t in enumerate(value):
                if isinstance(t, bool | str):
                    raise ValueError(f"times_s[{i}] = {t!r} must be a number of seconds, not {type(t).__name__}")
        return value

    @field_validator("times_s")
    @classmethod
    def _times_increase(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value:
            raise ValueError("times_s must hold at least one inference time, got none")
        for i, t in enumerate(value):
            if t < 0:
                raise ValueError(f"times_s[{i}] = {t} s outside the allowed range [0, inf) s (time after programming)")
            if i and t <= value[i - 1]:
                raise ValueError(
                    f"times_s must be strictly increasing: times_s[{i}] = {t} s <= times_s[{i - 1}] = {value[i - 1]} s"
                )
        return value

    def noise_model(self) -> PCMNoiseModel:
        """The PCM noise model (the preset named by ``noise``, or ``noise`` itself)."""
        return self.noise if isinstance(self.noise, PCMNoiseModel) else pcm_preset(self.noise)


@dataclass(frozen=True)
class ProgrammedTile:
    """The programmed state of one tile's differential pairs; index 0 of the first axis is the plus
    device (positive weights), 1 the minus device.

    g_target_us : ``(2, out, in)`` target conductances, µS.
    g_prog_us : ``(2, out, in)`` programmed conductances (target + programming noise, >= 0), µS.
    nu : ``(2, out, in)`` drift exponent of each device (drawn once, at the target).
    w_max : 0-dim, the weight mapped to ``g_max_us`` (the tile's max ``|w|`` at programming; 1 for an all-zero tile).
    reference : 0-dim float64, the calibration reading at ``t_s = 0`` (numerator of the compensation).
    """

    g_target_us: Tensor
    g_prog_us: Tensor
    nu: Tensor
    w_max: Tensor
    reference: Tensor


@dataclass(frozen=True)
class ProgrammedModel:
    """The programmed state of every :class:`~inmaterio.crossbars.tile.AnalogTile` of a model, in module order
    (:func:`~inmaterio.crossbars.layers.analog_tiles`), and the noise model that made it."""

    noise: PCMNoiseModel
    tiles: tuple[ProgrammedTile, ...]


# --------------------------------------------------------------------- checks


def _tiles_of(model: nn.Module) -> list[AnalogTile]:
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    tiles = list(analog_tiles(model))
    if not tiles:
        raise ConfigError(
            f"model ({type(model).__name__}) has no AnalogTile to program; convert its layers first "
            "(inmaterio.crossbars.convert_to_analog)"
        )
    return tiles


def _noise_of(noise: PCMNoiseModel | str) -> PCMNoiseModel:
    if isinstance(noise, PCMNoiseModel):
        return noise
    if isinstance(noise, str):
        return pcm_preset(noise)
    raise ConfigError(f"noise must be a PCMNoiseModel or the name of a PCM preset, got {type(noise).__name__}")


def _check_generator(generator: Any) -> torch.Generator:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator


def _work_dtype(tile: AnalogTile) -> torch.dtype:
    """At least float32 for the PCM statistics (logarithms, powers), whatever the tile's dtype."""
    return torch.promote_types(tile.weight.dtype, torch.float32)


def _draw_seed(generator: torch.Generator) -> int:
    """One 62-bit seed drawn from ``generator``."""
    return int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))


def _reseed(tile: AnalogTile, generator: torch.Generator) -> None:
    """Reseed the tile's periphery-noise generator from ``generator`` (one draw)."""
    tile.generator.manual_seed(_draw_seed(generator))


# --------------------------------------------------------------------- calibration


@torch.no_grad()
def calibration_read(tile: AnalogTile) -> Tensor:
    r"""The tile's calibration reading :math:`\sum_{j, i} |y_i(e_j)|` (module docstring), 0-dim float64.

    Reads the one-hot vectors ``eye(in_features)`` through ``tile.forward`` in eval mode on its current
    (effective) weights, with ``compensation``, ``output_scale`` and ``output_offset`` neutral for the
    read (all three, and the train/eval mode, restored). Draws the periphery's noise from ``tile.generator``.
    """
    was_training = tile.training
    saved = (tile.compensation.clone(), tile.output_scale.clone(), tile.output_offset.clone())
    try:
        tile.eval()
        tile.compensation.fill_(1.0)
        tile.output_scale.fill_(1.0)
        tile.output_offset.zero_()
        x = torch.eye(tile.in_features, device=tile.weight.device, dtype=tile.weight.dtype)
        return tile(x).to(torch.float64).abs().sum()
    finally:
        tile.compensation.copy_(saved[0])
        tile.output_scale.copy_(saved[1])
        tile.output_offset.copy_(saved[2])
        tile.train(was_training)


def _set_compensation(tile: AnalogTile, reference: Tensor) -> None:
    current = calibration_read(tile)
    ratio = reference.to(current.device) / current if bool(current > 0) else torch.ones((), dtype=torch.float64)
    tile.compensation.fill_(float(ratio))


# --------------------------------------------------------------------- program / set_time / reset


@torch.no_grad()
def program(model: nn.Module, noise: PCMNoiseModel | str, generator: torch.Generator) -> ProgrammedModel:
    """Program every :class:`~inmaterio.crossbars.tile.AnalogTile` of ``model`` on PCM differential pairs.

    Per tile, in module order, all from ``generator``: map ``weight`` to target conductances
    (``w_max`` = max ``|w|``), draw the programming noise (:meth:`~inmaterio.crossbars.pcm.PCMNoiseModel.program`)
    and one drift exponent per device (at the target), read the conductances at ``t_s = 0`` and
    set them as the tile's effective weights, reseed the tile's generator, and take the calibration
    reading of that state as the compensation reference. Leaves the model at ``t_s = 0`` with
    ``compensation`` 1. The tiles' ``weight`` (the targets) are not changed.

    model : any module holding analog tiles. noise : a PCM model or a preset name.
    generator : a :class:`torch.Generator` (on any device; the numbers move to the tiles').

    Raises
    ------
    ConfigError
        A model without analog tiles, an unknown preset.
    """
    noise = _noise_of(noise)
    tiles = _tiles_of(model)
    _check_generator(generator)
    programmed = []
    for tile in tiles:
        dtype = _work_dtype(tile)
        w = tile.weight.detach().to(dtype)
        m = w.abs().amax()
        w_max = torch.where(m > 0, m, torch.ones_like(m))
        g_target = torch.stack(weights_to_conductances(w, w_max, noise.g_max_us))
        g_prog = noise.program(g_target, generator)
        nu = noise.sample_drift_exponents(g_target, generator)
        g_read = noise.conductance_at(g_prog, nu, 0.0, generator)
        tile.set_effective_weight(conductances_to_weights(g_read[0], g_read[1], w_max, noise.g_max_us))
        _reseed(tile, generator)
        reference = calibration_read(tile)
        tile.compensation.fill_(1.0)
        programmed.append(ProgrammedTile(g_target, g_prog, nu, w_max, reference))
    return ProgrammedModel(noise, tuple(programmed))


@torch.no_grad()
def set_time(model: nn.Module, programmed: ProgrammedModel, t_s: float, generator: torch.Generator, *, compensate: bool) -> None:
    r"""Set every tile of ``model`` to its state ``t_s`` seconds after programming.

    Per tile, in module order, from ``generator``: effective weights = the weights of
    ``read(drift(g_prog, nu, t_s))`` (new read noise at every call, then fixed until the next),
    reseed the tile's generator, and set ``compensation`` to ``reference / current`` (module
    docstring) when ``compensate``, else to 1. The same generator state gives the same effective
    weights with or without ``compensate``.

    model : the module ``programmed`` was made from (same tiles, same shapes).
    t_s : inference time after programming, s, >= 0.

    Raises
    ------
    ConfigError
        A negative or non-finite ``t_s``, a model that does not match ``programmed``.
    """
    if not isinstance(programmed, ProgrammedModel):
        raise ConfigError(f"programmed must be the ProgrammedModel returned by program(), got {type(programmed).__name__}")
    tiles = _tiles_of(model)
    _check_generator(generator)
    if len(tiles) != len(programmed.tiles):
        raise ConfigError(f"programmed holds {len(programmed.tiles)} tiles but the model has {len(tiles)}; program this model")
    for k, (tile, state) in enumerate(zip(tiles, programmed.tiles)):
        if tuple(state.g_prog_us.shape[1:]) != tuple(tile.weight.shape):
            raise ConfigError(
                f"programmed tile {k} has shape {tuple(state.g_prog_us.shape[1:])} but the model's tile {k} "
                f"{tuple(tile.weight.shape)}; program this model"
            )
    noise = programmed.noise
    for tile, state in zip(tiles, programmed.tiles):
        g = noise.conductance_at(state.g_prog_us, state.nu, t_s, generator)
        tile.set_effective_weight(conductances_to_weights(g[0], g[1], state.w_max, noise.g_max_us))
        _reseed(tile, generator)
        if compensate:
            _set_compensation(tile, state.reference)
        else:
            tile.compensation.fill_(1.0)


@torch.no_grad()
def reset(model: nn.Module) -> None:
    """Every tile of ``model`` back to its ideal weights (``weight``) with ``compensation`` 1."""
    for tile in _tiles_of(model):
        tile.set_effective_weight(None)
        tile.compensation.fill_(1.0)


# --------------------------------------------------------------------- hardware-aware training


def hwa_weight_noise(noise: PCMNoiseModel | str) -> float:
    r"""The relative forward-only weight noise for hardware-aware training with ``noise``.

    :math:`\sigma_\text{prog}(g_\max) / g_\max = \gamma_\text{prog} (c_0 + c_1 + c_2) / 25`
    = 0.0422 at :math:`\gamma = 1` (0.0211 at 0.5, 0 for ``noiseless``): the programming-noise
    std of the largest weight, relative to it. The tile's ``forward_weight_noise`` is relative to
    the tile's weight scale (its max ``|w|``), which :func:`program` maps to ``g_max_us``, so this
    is the noise a full-scale weight gets on the chip. It is the conservative end of the range:
    :math:`\sigma_\text{prog}` peaks at 0.0434 (``g = 0.84 g_max``), averages 0.0342 over
    uniformly spread ``|w|``, and a zero weight (both devices at 0) sees
    :math:`\sqrt{2 (1/2 - 1/(2\pi))}\,\sigma_\text{prog}(0) / g_\max = 0.0087`; Joshi et al.
    (2020) trained with 3.8 % of the max weight.
    """
    noise = _noise_of(noise)
    g_max = torch.tensor(noise.g_max_us, dtype=torch.float64)
    return float(noise.programming_noise_std_us(g_max)) / noise.g_max_us


def hwa_tile_config(noise: PCMNoiseModel | str, tile_config: TileConfig | Mapping[str, Any] | None = None) -> TileConfig:
    """``tile_config`` (None: ideal) with ``io.forward_weight_noise`` = :func:`hwa_weight_noise` of ``noise``
    and an ideal backward read: hardware-aware training (noisy forward, full-precision backward and update)."""
    config = as_tile_config(tile_config)
    io = config.io.model_copy(update={"forward_weight_noise": hwa_weight_noise(noise)})
    return validate_config(
        TileConfig, {**config.model_dump(), "io": io.model_dump(), "backward": "ideal"}, source="hwa_tile_config"
    )


# --------------------------------------------------------------------- the experiment


def accuracy_over_time(
    model: nn.Module,
    evaluate: Callable[[nn.Module], float],
    config: InferenceConfig | Mapping[str, Any],
    generator: torch.Generator,
    progress: bool = False,
) -> list[dict]:
    """Test accuracy of ``model`` at each inference time of ``config``, for ``config.repeats`` programmings.

    ``evaluate(model)`` returns the accuracy (%) on the test set; it is called with the model in
    eval mode. Rows, in this order:

    * ``{"t_s": None, "repeat": 0, "compensated": False, "accuracy": a}``: the ideal weights
      (:func:`reset`; the tiles' periphery still acts, so with ideal tiles this is the digital accuracy);
    * for each repeat ``r`` and each time ``t``: ``{"t_s": t, "repeat": r, "compensated": False, ...}``
      and, with ``config.drift_compensation``, the same with ``"compensated": True``, evaluated on
      the same effective weights (one read-noise draw) and the same periphery noise (tile generators
      reseeded alike) with the compensation applied: a paired comparison.

    Random streams are keyed, not ordered: one base seed is drawn from ``generator``; repeat
    ``r`` programs with the stream ``(base, "program", r)`` and reads time ``t`` with
    ``(base, "read", r, repr(float(t)))`` (:func:`~inmaterio.random_streams.torch_generator`), so a
    row is the same whatever the other times and repeats of the config. The model is left as :func:`reset` leaves it, in its
    original train/eval modes.

    Raises
    ------
    ConfigError
        An invalid ``config`` (a mapping is validated), a model without analog tiles.
    """
    if isinstance(config, Mapping):
        config = validate_config(InferenceConfig, dict(config), source="inference config")
    if not isinstance(config, InferenceConfig):
        raise ConfigError(f"config must be an InferenceConfig or a mapping, got {type(config).__name__}")
    tiles = _tiles_of(model)
    _check_generator(generator)
    noise = config.noise_model()
    base = _draw_seed(generator)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    rows: list[dict] = []
    try:
        reset(model)
        ideal = torch_generator(base, "ideal")
        for tile in tiles:
            _reseed(tile, ideal)
        rows.append({"t_s": None, "repeat": 0, "compensated": False, "accuracy": float(evaluate(model))})
        with progress_bar(config.repeats * len(config.times_s), "inference", unit="point", enabled=progress) as bar:
            for r in range(config.repeats):
                programmed = program(model, noise, torch_generator(base, "program", r))
                for t_s in config.times_s:
                    read = torch_generator(base, "read", r, repr(float(t_s)))
                    set_time(model, programmed, t_s, read, compensate=config.drift_compensation)
                    factors = [float(tile.compensation) for tile in tiles]
                    seeds = [_draw_seed(read) for _ in tiles]  # the same periphery noise with and without compensation
                    for tile, seed in zip(tiles, seeds):
                        tile.compensation.fill_(1.0)
                        tile.generator.manual_seed(seed)
                    rows.append({"t_s": t_s, "repeat": r, "compensated": False, "accuracy": float(evaluate(model))})
                    if config.drift_compensation:
                        for tile, factor, seed in zip(tiles, factors, seeds):
                            tile.compensation.fill_(factor)
                            tile.generator.manual_seed(seed)
                        rows.append({"t_s": t_s, "repeat": r, "compensated": True, "accuracy": float(evaluate(model))})
                    bar.advance()
    finally:
        reset(model)
        for m, training in modes:
            m.training = training
    return rows


def summarize_accuracy(rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """Mean and standard deviation over repeats of :func:`accuracy_over_time`'s rows.

    Returns one row per ``(t_s, compensated)`` in first-seen order: ``{"t_s", "compensated", "mean",
    "std", "n"}`` (``std`` with Bessel's correction, 0 for one repeat).
    """
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault((row["t_s"], row["compensated"]), []).append(float(row["accuracy"]))
    out = []
    for (t_s, compensated), values in groups.items():
        v = torch.tensor(values, dtype=torch.float64)
        std = float(v.std()) if len(values) > 1 else 0.0
        out.append({"t_s": t_s, "compensated": compensated, "mean": float(v.mean()), "std": std, "n": len(values)})
    return out
