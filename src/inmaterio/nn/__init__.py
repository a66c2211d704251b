"""Torch layers made of DNPU nodes.

* :class:`DNPU` — a layer of many DNPU nodes, vectorised over nodes (and genomes).
* :func:`set_processor` / :func:`processor_swapped` — switch every DNPU layer
  of a network to another back end (train on the surrogate, validate on the device).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

from inmaterio.errors import ConfigError
from inmaterio.nn.dnpu import DNPU
from inmaterio.processors import Processor

__all__ = ["DNPU", "dnpu_layers", "processor_swapped", "set_processor"]


def dnpu_layers(model: nn.Module) -> list[DNPU]:
    """Every :class:`DNPU` layer in ``model`` (the model itself included), in module order."""
    return [m for m in model.modules() if isinstance(m, DNPU)]


def set_processor(model: nn.Module, processor: Processor) -> list[Processor]:
    """Make every DNPU layer of ``model`` use ``processor``; returns the previous back ends (layer order).

    Raises :class:`ConfigError` if the model has no DNPU layer or a layer does
    not fit the processor (electrode count or ranges); then nothing is changed.
    """
    layers = dnpu_layers(model)
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no DNPU layer to switch")
    old = [layer.processor for layer in layers]
    try:
        for layer in layers:
            layer.set_processor(processor)
    except ConfigError:
        for layer, previous in zip(layers, old):
            layer.set_processor(previous)
        raise
    return old


@contextmanager
def processor_swapped(model: nn.Module, processor: Processor) -> Iterator[nn.Module]:
    """Context manager: evaluate ``model`` on ``processor``, then restore the previous back ends."""
    layers = dnpu_layers(model)
    old = set_processor(model, processor)
    try:
        yield model
    finally:
        for layer, previous in zip(layers, old):
            layer.set_processor(previous)
