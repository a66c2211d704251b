"""Shared checks of the bad-input tables (``tests/test_bad_inputs_*.py``).

Every row of a table is one bad input, with the error it must raise and a
pattern its message must match (the message names the field or value and,
where there is one, the allowed range). Rows are checked through the Python
API with :func:`expect_api_error` or through the command line with
:func:`expect_cli_error`: exit code 2 for user errors, one line on the
terminal, never a traceback. Both can take folders whose files must be
left exactly as they were (:func:`snapshot`): nothing already saved is lost
or changed by a refused input.

A row is written as ``BadInput("id", "what a user gives", check)`` where
``check(tmp_path)`` runs the call; :func:`table_ids` gives pytest ids. The
README's short table (input -> message) quotes some of these rows.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

__all__ = ["BadInput", "snapshot", "expect_api_error", "expect_cli_error", "table_ids"]

_runner = CliRunner()


@dataclass(frozen=True)
class BadInput:
    """One row: a short id, the bad input as a user would describe it, and the check that runs it."""

    id: str
    given: str
    check: Callable[[Path], None]


def table_ids(rows: Sequence[BadInput]) -> list[str]:
    ids = [r.id for r in rows]
    duplicates = {i for i in ids if ids.count(i) > 1}
    assert not duplicates, f"duplicate bad-input ids: {sorted(duplicates)}"
    return ids


def snapshot(*folders: Path) -> dict[str, str]:
    """sha256 of every file under ``folders`` (path -> digest); compare before and after a refused call."""
    digests: dict[str, str] = {}
    for folder in folders:
        folder = Path(folder)
        files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []
        for path in files:
            digests[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def _one_line(text: str) -> str:
    return " ".join(text.split())


def expect_api_error(
    call: Callable[[], object],
    error: type[BaseException],
    match: str,
    *,
    unchanged: Iterable[Path] = (),
) -> BaseException:
    """``call()`` raises exactly ``error`` (not a subclass's sibling) with a message matching ``match``.

    Files under ``unchanged`` must be identical before and after.
    """
    unchanged = list(unchanged)
    before = snapshot(*unchanged)
    with pytest.raises(error) as info:
        call()
    assert isinstance(info.value, error), f"raised {type(info.value).__name__}, expected {error.__name__}"
    message = _one_line(str(info.value))
    assert re.search(match, message), f"message {message!r} does not match {match!r}"
    assert snapshot(*unchanged) == before, "a refused input changed saved files"
    return info.value


def expect_cli_error(
    app,
    argv: Sequence[str],
    match: str,
    *,
    code: int = 2,
    unchanged: Iterable[Path] = (),
    input: str | None = None,
) -> str:
    """The command exits with ``code`` (2: user error), prints one line matching ``match``, no traceback."""
    unchanged = list(unchanged)
    before = snapshot(*unchanged)
    result = _runner.invoke(app, list(argv), input=input)
    output = result.output
    assert result.exit_code == code, f"exit code {result.exit_code}, expected {code}; output:\n{output}\n{result.exception!r}"
    assert "Traceback" not in output, output
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"the command raised {result.exception!r}") from result.exception
    lines = [line for line in output.splitlines() if line.strip()]
    error_lines = [line for line in lines if line.lstrip().startswith("error:")]
    if code == 2 and error_lines:
        assert len(error_lines) == 1, f"expected one error line, got:\n{output}"
    message = _one_line(output)
    assert re.search(match, message), f"output {message!r} does not match {match!r}"
    assert snapshot(*unchanged) == before, "a refused input changed saved files"
    return output
