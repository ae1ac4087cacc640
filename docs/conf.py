"""Sphinx configuration of the ufm documentation (built by ``make docs``)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

# The gallery runs on the shared 2-core machine: one thread per numerical library.
for _var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import ufm  # noqa: E402

project = "ufm"
author = "the ufm authors"
copyright = "the ufm authors"
version = release = ufm.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
    "theory_refs",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "auto_examples/*.zip",
                    "auto_examples/*.codeobj.json", "auto_examples/*.md5", "bridge/fits_table.md",
                    "bridge/forecast_table.md"]
templates_path = ["_templates"]
nitpicky = False

# -- MyST (Markdown pages) ---------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# -- math: MathJax served from the build (make docs copies it from the npm package) ----------------
mathjax_path = "mathjax/tex-chtml.js"
mathjax3_config = {"tex": {"tags": "none"}, "options": {"enableMenu": False}}

# -- API reference -----------------------------------------------------------------------------
autosummary_generate = True
autosummary_ignore_module_all = False
autosummary_imported_members = False
autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_validation_checks = {"GL08", "PR01", "PR02", "PR03", "PR10", "RT03"}
numpydoc_validation_exclude = {r"\.__init__$", r"\.__repr__$"}
# A result or record class lists its fields under "Attributes"; they are its constructor's
# parameters too, which a user never passes, so PR01 does not ask for them again.
numpydoc_validation_overrides = {"PR01": [r"\n\s*Attributes\n\s*-{10}"]}

# numpydoc's validator reports the line where an object is defined by looking for a "def" or
# "class" line; a property made from a lambda has none and numpydoc then raises StopIteration
# (ufm.problems.InputCoupledUFM.K). Report no line for those instead.
import numpydoc.validate as _numpydoc_validate  # noqa: E402

_def_line = _numpydoc_validate.Validator.source_file_def_line.fget


def _source_file_def_line(self):
    try:
        return _def_line(self)
    except StopIteration:
        return None


_numpydoc_validate.Validator.source_file_def_line = property(_source_file_def_line)

# -- gallery -----------------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": str(ROOT / "examples" / "gallery"),
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",
    "ignore_pattern": r"__init__\.py",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "remove_config_comments": True,
    "abort_on_example_error": False,
    "only_warn_on_example_error": False,
    "reset_modules": ("matplotlib",),
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
    "show_memory": False,
    "default_thumb_file": None,
    "capture_repr": (),
    "first_notebook_cell": None,
}

# -- HTML --------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"ufm {release}"
html_static_path = ["_static"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "header_links_before_dropdown": 5,
    "secondary_sidebar_items": ["page-toc"],
}
html_show_sourcelink = False
html_copy_source = False
