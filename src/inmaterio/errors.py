"""Exceptions raised by inmaterio.

Every error names the thing that is wrong, its value and what was allowed,
e.g. ``electrode 'e3' voltage 0.9 V outside [-0.7, 0.3] V``.
"""


class InmaterioError(Exception):
    """Base class of every error raised on purpose by inmaterio."""


class VoltageError(InmaterioError, ValueError):
    """Voltages with a wrong shape, out of their declared range, NaN or infinite."""


class ConfigError(InmaterioError, ValueError):
    """A configuration file or object that does not validate."""


class ModelFileError(InmaterioError, ValueError):
    """A model or dataset file that is missing, corrupt or of a foreign format."""


class SimulationError(InmaterioError, RuntimeError):
    """A simulation that cannot run or did not reach its tolerance."""


class TrainingDivergedError(InmaterioError, RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept on disk."""


class RunFolderError(InmaterioError, RuntimeError):
    """A run folder that cannot be used: a file in its place, a foreign or busy folder, no space, no permission."""


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM inside a run; the message names the run folder that resumes it.

    A :class:`KeyboardInterrupt`, so code that stops on Ctrl-C stops on it too.
    """
