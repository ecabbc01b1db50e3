"""The ``monit-options`` directive: the table of every option, made from monit/settings.py at build time."""

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.application import Sphinx
from sphinx.util.docutils import SphinxDirective

from monit.settings import options_table


class OptionsTable(SphinxDirective):
    """The Markdown table ``python -m monit.settings`` prints, parsed by the page's parser (MyST)."""

    def run(self) -> list[nodes.Node]:
        table = nodes.container(classes=["monit-options"])
        self.state.nested_parse(StringList(options_table().splitlines()), self.content_offset, table)
        return [table]


def setup(app: Sphinx) -> dict[str, object]:
    app.add_directive("monit-options", OptionsTable)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
