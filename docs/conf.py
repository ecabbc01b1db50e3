"""Sphinx settings for monit's documentation site (make docs)."""

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))  # monit from this checkout, for autodoc and the table of options

project = "monit"
author = "the monit authors"
copyright = "the monit authors"
html_title = "monit"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "monit_options",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3

html_theme = "furo"
html_static_path = ["_static"]

# The Python API pages: the signatures as written, types in the description.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"

# Names from Twisted and the standard library: no inventory is fetched for them (the build runs offline).
nitpick_ignore_regex = [
    ("py:class", r"twisted\..*"),
    ("py:class", r"(collections\.abc|typing)\..*"),
    ("py:class", r"(Deferred|Callable|IReactorTime|MultiService|Failure|Batch|InboxRegistry)"),
    ("py:class", r"monit\.(settings\.Settings|inbox\.Event|watch\.Watch|readiness\.Readiness)"),
    ("py:class", r"(Settings|Event|Watch|Readiness)"),
    ("py:exc", r".*"),
]
