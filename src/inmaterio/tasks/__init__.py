"""Tasks that build data, a DNPU model and a trainer, run them and write a results folder.

* :mod:`~inmaterio.tasks.gates` — the six two-input Boolean gates;
* :mod:`~inmaterio.tasks.rings` — inner disc vs outer ring, one DNPU or the 2-2-1 network;
* :mod:`~inmaterio.tasks.capacity` — fraction of the 2^N labellings of N points one DNPU separates.

:func:`~inmaterio.tasks.run.run_task` runs one from a :class:`~inmaterio.tasks.config.RunConfig`
(the YAML of ``inmaterio run``).
"""

from inmaterio.tasks.config import RunConfig
from inmaterio.tasks.run import run_task

__all__ = ["RunConfig", "run_task"]
