"""monit: a NATS-to-SSE gateway for workflow progress.

Embed it in a Twisted program of your own::

    from monit import MonitService, Settings
    monit = MonitService(reactor, Settings(nats=["nats://127.0.0.1:4222"], serve=False))
    monit.setServiceParent(application)
    root.putChild(b"monit", monit.resource)
"""

from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("txmonit")  # the distribution's name: "monit" on PyPI is another project
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"

__all__ = ["Event", "MonitService", "Settings", "Watch", "__version__"]

_HOMES = {
    "Event": "monit.inbox",
    "MonitService": "monit.service",
    "Settings": "monit.settings",
    "Watch": "monit.watch",
}


def __getattr__(name: str) -> Any:
    """Import the service only when asked, so ``import monit.sse`` stays light."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(name)
    from importlib import import_module

    return getattr(import_module(home), name)
