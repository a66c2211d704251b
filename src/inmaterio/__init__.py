"""inmaterio: machine learning with matter.

Dopant-network processing units (DNPUs), a physics-level virtual DNPU
(kinetic Monte Carlo of variable-range hopping), surrogate models of devices
and the pipeline that generates them.
"""

__version__ = "0.1.0"
