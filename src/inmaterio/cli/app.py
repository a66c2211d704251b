"""The Typer application, the console and what every subcommand shares: error handling, tables, devices."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer
from typer.core import TyperGroup

try:  # typer >= 0.24 vendors click (typer._click); older releases use click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from inmaterio.errors import InmaterioError, RunInterrupted

__all__ = ["app", "console", "error_console", "friendly_errors", "right_aligned_table", "load_device"]


class _OneLineErrors(TyperGroup):
    """The root command: a usage error (unknown option, a value of the wrong type or out of its range)
    is one line on stderr with exit code 2, like every other user error."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("standalone_mode", None)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click_exceptions.NoArgsIsHelpError as err:
            print(err.ctx.get_help() if err.ctx is not None else str(err))
            sys.exit(0)
        except click_exceptions.ClickException as err:
            where = f" (see '{err.ctx.command_path} --help')" if getattr(err, "ctx", None) is not None else ""
            error_console.print(f"[bold red]error:[/] {escape(' '.join(err.format_message().split()))}{escape(where)}",
                                highlight=False, soft_wrap=True)  # fmt: skip
            sys.exit(err.exit_code)
        except typer.Abort:
            error_console.print("[yellow]interrupted[/]", highlight=False)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
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
