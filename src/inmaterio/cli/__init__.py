"""The ``inmaterio`` command line: one entry point, a module per group of subcommands.

Run ``inmaterio --help`` (or ``python -m inmaterio --help``) for the list;
every subcommand has ``--help``. The modules are thin: they parse, call the
library and print. Errors of inmaterio (bad configs, voltages, files, run
folders) are printed as one line with exit code 2, never a traceback.
"""

from inmaterio.cli import cost, demo, device, ep, run, smg, surrogate  # noqa: F401 - each registers its commands
from inmaterio.cli.app import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()
