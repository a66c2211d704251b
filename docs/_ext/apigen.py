"""Generate the API reference pages from the package itself, at every build.

Every subpackage of :mod:`inmaterio` (found by walking the package, so a new one
appears without editing the docs), every top-level module, and the submodules
of a package that has no ``__all__`` (such as :mod:`inmaterio.studies`) get one
page under ``docs/api/_autosummary/``. A page lists the module's public names
(its ``__all__``, or else the public names it defines) in an autosummary table
and documents each with autodoc. An object exported by several packages (for
example ``DCSolution`` from :mod:`inmaterio.circuits` and
:mod:`inmaterio.circuits.solve`) is documented once, on the page of the package
closest to where it is defined; the other pages list it and link there.

``tests/test_docs_site.py`` uses :func:`api_pages` to check that every public
name appears, without building the site.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

PACKAGE = "inmaterio"


def api_modules(package: str = PACKAGE) -> list[str]:
    """The modules that get a page: the package, every subpackage, every top-level module,
    and the submodules of packages without ``__all__``. Sorted by name."""
    root = importlib.import_module(package)
    names = {package}
    for info in pkgutil.walk_packages(root.__path__, prefix=package + "."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts[1:]):
            continue
        try:
            parent = importlib.import_module(".".join(parts[:-1]))
        except Exception:  # noqa: BLE001 - reported by api_pages, which imports it again
            parent = None
        if info.ispkg or len(parts) == 2 or (parent is not None and not hasattr(parent, "__all__")):
            names.add(info.name)
    return sorted(names)


def public_names(modname: str) -> list[str]:
    """The names a module makes public: ``__all__``, or the public names it defines."""
    module = importlib.import_module(modname)
    if hasattr(module, "__all__"):
        return list(module.__all__)
    out = []
    for name, obj in vars(module).items():
        if name.startswith("_") or inspect.ismodule(obj):
            continue
        if getattr(obj, "__module__", None) == modname and (inspect.isclass(obj) or inspect.isfunction(obj)):
            out.append(name)
    return out


def _home(obj, exporters: list[str]) -> str:
    """The one page that documents ``obj``: the exporter whose name is the longest prefix of its module."""
    defined_in = getattr(obj, "__module__", None) or ""
    prefixes = [m for m in exporters if defined_in == m or defined_in.startswith(m + ".")]
    return max(prefixes, key=len) if prefixes else exporters[0]


def _directive(obj) -> str:
    if inspect.isclass(obj):
        return "autoclass"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj) or inspect.ismethod(obj):
        return "autofunction"
    if callable(obj) and hasattr(obj, "__wrapped__"):
        return "autofunction"
    return "autodata"


def import_errors(package: str = PACKAGE) -> dict[str, str]:
    """``{module name: error}`` for every module of :func:`api_modules` that cannot be imported."""
    errors = {}
    for modname in api_modules(package):
        try:
            importlib.import_module(modname)
        except Exception as exc:  # noqa: BLE001 - any failure of an import is reported the same way
            errors[modname] = f"{type(exc).__name__}: {exc}"
    return errors


def api_pages(package: str = PACKAGE) -> dict[str, str]:
    """``{module name: reST source of its page}`` for every module of :func:`api_modules`.

    A module that cannot be imported gets a page saying so (and :func:`setup` reports it as a warning,
    which fails a build with ``-W``)."""
    modules = api_modules(package)
    failed = import_errors(package)
    exports: dict[str, dict[str, object]] = {m: {} for m in modules}
    exporters: dict[int, list[str]] = {}
    for modname in modules:
        if modname in failed:
            continue
        module = importlib.import_module(modname)
        for name in public_names(modname):
            obj = getattr(module, name)
            exports[modname][name] = obj
            if _directive(obj) == "autodata":
                continue  # constants and type aliases are documented on every page that exports them
            exporters.setdefault(id(obj), [])
            if modname not in exporters[id(obj)]:
                exporters[id(obj)].append(modname)
    pages = {}

    def home_of(obj, modname: str) -> str:
        return modname if _directive(obj) == "autodata" else _home(obj, exporters[id(obj)])

    for modname in modules:
        title = f"``{modname}``"
        if modname in failed:
            pages[modname] = "\n".join([title, "=" * len(title), "", f"Could not be imported: ``{failed[modname]}``", ""])
            continue
        lines = [title, "=" * len(title), "", f".. automodule:: {modname}", "   :no-members:", ""]
        names = exports[modname]
        if names:
            lines += [f".. currentmodule:: {modname}", "", ".. autosummary::", "   :nosignatures:", ""]
            for name, obj in names.items():
                if _directive(obj) == "autodata":
                    continue  # a constant's docstring is its type's: documented below, not summarised
                home = home_of(obj, modname)
                if home == modname:
                    lines.append(f"   {name}")
                elif home.startswith(modname + "."):
                    lines.append(f"   ~{home[len(modname) + 1 :]}.{name}")
                else:
                    lines.append(f"   ~{home}.{name}")
            lines.append("")
            for name, obj in names.items():
                if home_of(obj, modname) != modname:
                    continue
                directive = _directive(obj)
                if directive == "autodata":
                    # a constant's own docstring would be its type's (dict, str ...): show its type and short value
                    # a name relative to the currentmodule set above (a full name would be prefixed twice)
                    lines.append(f".. py:data:: {name}")
                    lines.append(f"   :type: {type(obj).__name__}")
                    value = repr(obj)
                    if len(value) <= 70 and "\n" not in value:
                        lines.append(f"   :value: {value}")
                    lines.append("")
                    continue
                lines.append(f".. {directive}:: {modname}.{name}")
                if directive == "autoclass":
                    lines.append("   :members:")
                    lines.append("   :show-inheritance:")
                lines.append("")
            reexported = [(n, home_of(o, modname)) for n, o in names.items() if home_of(o, modname) != modname]
            if reexported:
                lines += ["Re-exported here, documented where they are defined:", ""]
                lines += [f"- ``{n}``: :py:obj:`{home}.{n}`" for n, home in reexported]
                lines.append("")
        children = [m for m in modules if m.rpartition(".")[0] == modname]
        if children:
            lines += ["Submodules and subpackages:", ""]
            lines += [f"- :doc:`{child}`" for child in children]
            lines.append("")
        pages[modname] = "\n".join(lines)
    return pages


def write_api_pages(outdir: Path, package: str = PACKAGE) -> list[Path]:
    """Write the pages (only those whose text changed, so incremental builds stay fast); remove stale ones."""
    outdir.mkdir(parents=True, exist_ok=True)
    pages = api_pages(package)
    written = []
    for modname, text in pages.items():
        path = outdir / f"{modname}.rst"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        written.append(path)
    for stale in outdir.glob("*.rst"):
        if stale not in written:
            stale.unlink()
    return written


def setup(app):
    """Sphinx extension: write the pages when the builder starts."""

    from sphinx.util import logging

    def _generate(app):
        write_api_pages(Path(app.srcdir) / "api" / "_autosummary")
        for modname, error in import_errors().items():
            logging.getLogger(__name__).warning(f"API reference: module {modname} cannot be imported ({error})")

    app.connect("builder-inited", _generate)
    app.connect("autodoc-process-docstring", _process_docstring, priority=400)  # before napoleon (500)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


# --- docstring style ---------------------------------------------------------------------------------------
# Many config classes document their fields as a list of ``name : description`` lines whose long descriptions
# continue on indented lines. That reads well in the source but is not reST (a paragraph followed by a block
# quote), so each such block is turned into a definition list (the names in code font, the description indented
# below them) before autodoc parses it. The numpy-style section titles ("Parameters" over "----------") become
# rubrics; their ``name : description`` entries become such lists too (napoleon would read the description as a
# type). Google-style sections
# ("Args:") are left to napoleon.

_FIELD = re.compile(r"^(?P<name>[A-Za-z_][\w.]*(?:, ?[A-Za-z_][\w.]*)*) : (?P<text>\S.*)$")


def _definition_lists(lines: list[str]) -> None:
    out: list[str] = []
    in_fields = False
    for line in lines:
        match = _FIELD.match(line)
        if match:
            if not in_fields and out and out[-1].strip():
                out.append("")
            names = ", ".join(f"``{n.strip()}``" for n in match["name"].split(","))
            out += [names, f"    {match['text']}"]
            in_fields = True
            continue
        if in_fields and line.strip() and not line.startswith(" "):
            out.append("")  # a paragraph right after the list
            in_fields = False
        elif in_fields and not line.strip():
            in_fields = False
        out.append(line)
    lines[:] = out


_UNDERLINE = re.compile(r"^(-{3,}|={3,})$")


def _numpy_sections(lines: list[str]) -> None:
    """``Title`` over a line of dashes (numpy style) becomes a rubric: a section title is not allowed in a docstring."""
    out: list[str] = []
    k = 0
    while k < len(lines):
        line = lines[k]
        nxt = lines[k + 1] if k + 1 < len(lines) else ""
        if line.strip() and not line.startswith(" ") and _UNDERLINE.match(nxt) and abs(len(nxt) - len(line.strip())) <= 2:
            if out and out[-1].strip():
                out.append("")
            out += [f".. rubric:: {line.strip()}", ""]
            k += 2
            continue
        out.append(line)
        k += 1
    lines[:] = out


def _process_docstring(app, what, name, obj, options, lines):
    _numpy_sections(lines)
    _definition_lists(lines)
