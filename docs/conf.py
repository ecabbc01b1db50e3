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

# The Python API pages: the signatures as written, types in the description.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"

# Names the API pages mention that have no page here: no inventory is fetched for Twisted or
# Python (the build runs offline), and the registry and Settings' fields are not documented one by one.
nitpick_ignore = [
    ("py:class", "collections.abc.Callable"),
    ("py:class", "twisted.internet.defer.Deferred"),
    ("py:class", "IReactorTime"),
    ("py:class", "InboxRegistry"),
    ("py:class", "Settings"),
]
