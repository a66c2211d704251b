"""Datasets for the tasks: generated (rings) or read from files."""

from inmaterio.data.rings import make_rings, ring_radii

__all__ = ["make_rings", "ring_radii"]
