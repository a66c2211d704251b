"""Sphinx configuration of the inmaterio documentation.

Build (from the repository root; the HTML lands in ``docs/_build/html``)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

Tutorials are MyST markdown notebooks executed at every build (a failing cell
fails the build); the API reference is generated from the package by
``_ext/apigen.py``. Nothing here needs the network (no intersphinx: no local
inventories of torch or numpy are shipped).
"""

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent / "src"))
# The notebook kernels inherit this: figures are shown inline in the pages even where MPLBACKEND=Agg is set
# (as in CI). The Sphinx process itself never draws.
os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"

import inmaterio  # noqa: E402

project = "inmaterio"
author = "the inmaterio authors"
copyright = "2026, the inmaterio authors"
release = inmaterio.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "apigen",
    "configref",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "jupyter_execute", "**.ipynb_checkpoints", "README.md"]
root_doc = "index"

# --- API reference ---
autosummary_generate = False  # the pages come from _ext/apigen.py, not from autosummary stubs
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"exclude-members": "model_config, model_fields, model_computed_fields"}
autodoc_mock_imports = ["ray", "nidaqmx"]
napoleon_google_docstring = True
napoleon_numpy_docstring = False  # numpy-style sections are handled by _ext/apigen.py
napoleon_use_ivar = True  # "Attributes:" sections as fields, not duplicate attribute entries
add_module_names = False

# --- MyST and notebook execution ---
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "force"  # every tutorial runs at every build
nb_execution_timeout = 600
nb_execution_raise_on_error = True  # a failing cell fails the build
nb_execution_show_tb = True
nb_merge_streams = True

# --- HTML ---
html_theme = "furo"
html_title = f"inmaterio {release}"
html_static_path = []
