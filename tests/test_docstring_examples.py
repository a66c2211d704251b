"""Every ``>>>`` example in the package's docstrings runs and prints what it shows (doctest).

The modules are found by their source text (a ``>>>`` line), so a new example is tested without editing this file;
each module's docstrings are collected with :class:`doctest.DocTestFinder` and run in the module's namespace.
An example must run: ``# doctest: +SKIP`` is refused (show a result that does not depend on noise instead, such
as a shape).
"""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "inmaterio"
PROMPT = re.compile(r"^\s*>>> ", re.M)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def modules_with_examples() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if PROMPT.search(path.read_text(encoding="utf-8")):
            parts = path.relative_to(SRC).with_suffix("").parts
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = modules_with_examples()


def test_the_package_has_docstring_examples():
    assert MODULES, "no >>> example found under src/inmaterio (is the layout still src/inmaterio?)"


@pytest.mark.parametrize("modname", MODULES)
def test_docstring_examples_run(modname):
    module = importlib.import_module(modname)
    source = Path(module.__file__).read_text(encoding="utf-8")
    assert "doctest: +SKIP" not in source, f"{modname}: an example is skipped; make it run"
    tests = [t for t in doctest.DocTestFinder(exclude_empty=True).find(module, modname) if t.examples]
    found = sum(len(t.examples) for t in tests)
    # every >>> line of the module is an example doctest finds (none hidden in a comment or a non-docstring string)
    assert found == len(PROMPT.findall(source)), f"{modname}: doctest finds {found} of the {len(PROMPT.findall(source))} examples"
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    report: list[str] = []
    for test in tests:
        runner.run(test, out=report.append)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{modname}: {results.failed} of {results.attempted} examples failed:\n" + "".join(report)
