"""monit: a NATS-to-SSE gateway for workflow progress.

Embed it in a Twisted program of your own::

    from monit import MonitService, Settings
    monit = MonitService(reactor, Settings(nats=["nats://127.0.0.1:4222"], serve=False))
    monit.setServiceParent(application)
    root.putChild(b"monit", monit.resource)
"""

from typing import Any

# The one place the version is written: setup.cfg (attr:) and towncrier read it here.
__version__ = "0.1.0"

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
