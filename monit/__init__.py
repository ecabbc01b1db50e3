"""monit: a NATS-to-SSE gateway for workflow progress.

Embed it in a Twisted program of your own::

    from monit import MonitService, Settings
    monit = MonitService(reactor, Settings(nats=["nats://127.0.0.1:4222"], serve=False))
    monit.setServiceParent(application)
    root.putChild(b"monit", monit.resource)
"""
from typing import Any

__all__ = ["MonitService", "Settings"]


def __getattr__(name: str) -> Any:
    """Import the service only when asked, so ``import monit.sse`` stays light."""
    if name in __all__:
        from monit import service

        return getattr(service, name)
    raise AttributeError(name)
