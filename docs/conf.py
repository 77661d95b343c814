"""Sphinx configuration of the documentation site (built offline: `make docs`)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))  # the package, for the generated CLI reference

from decentralml_jupyter import __version__  # noqa: E402

project = "decentralml-jupyter"
author = "the decentralml-jupyter authors"
copyright = "the decentralml-jupyter authors, Apache-2.0"
release = version = __version__

extensions = ["myst_nb", "dfml_reference", "sphinx.ext.autodoc"]
# signatures as written (string annotations of lazily imported types stay text)
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "sanitize.cfg"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
# Docs notebooks are executed and checked by `pytest --nbval` (tests/docs); the site shows
# their stored outputs, so building it needs no kernel.
nb_execution_mode = "off"

html_theme = "furo"
html_title = f"decentralml-jupyter {version}"
html_static_path = ["_static"]
# Nothing is fetched at build or view time: no external fonts, scripts or analytics.
html_theme_options = {"navigation_with_keys": True}
