"""``python -m inmaterio`` runs the command-line interface."""

from inmaterio.cli import app

app()
