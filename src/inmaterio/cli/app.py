"""The Typer application, the console and what every subcommand shares: error handling, tables, devices."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from inmaterio.errors import InmaterioError, RunInterrupted

__all__ = ["app", "console", "error_console", "friendly_errors", "right_aligned_table", "load_device"]

app = typer.Typer(
    help="inmaterio: machine learning with matter (DNPUs, a virtual DNPU, surrogate models, analog circuits).",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
error_console = Console(stderr=True)


def friendly_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn inmaterio errors into one line on stderr and exit code 2; Ctrl-C / SIGTERM into exit code 130.

    The interrupt message says a run can be resumed only when a run folder says so
    (:class:`~inmaterio.errors.RunInterrupted` carries the folder).
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except InmaterioError as err:
            message = " ".join(str(err).split())  # one line, whatever the message holds
            error_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
            raise typer.Exit(code=2) from None
        except RunInterrupted as err:
            error_console.print(f"[yellow]{escape(str(err))}[/]", highlight=False, soft_wrap=True)
            raise typer.Exit(code=130) from None
        except KeyboardInterrupt:
            error_console.print("[yellow]interrupted[/]", highlight=False)
            raise typer.Exit(code=130) from None

    return wrapper


def right_aligned_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]] = ()) -> Table:
    """A rich table with right-aligned columns and the given rows (more can be added)."""
    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(*row)
    return table


def load_device(config: Path | None):
    """The device of a YAML file ``device: {type: ..., ...}``, or the default virtual DNPU."""
    from inmaterio.config import load_config
    from inmaterio.devices.registry import DeviceFile, build_device

    if config is None:
        from inmaterio.devices.hopping import HoppingDevice

        return HoppingDevice()
    return build_device(load_config(DeviceFile, config).device)
