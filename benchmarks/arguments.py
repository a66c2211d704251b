"""Command-line argument types shared by the benchmark scripts (imported from the scripts' own folder)."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def at_least(low: int) -> Callable[[str], int]:
    """argparse type: an integer >= ``low`` (else a one-line usage error naming the value)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} is below the least allowed value {low}")
        return value

    return parse
