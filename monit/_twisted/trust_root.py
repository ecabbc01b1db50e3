"""The type of a TLS trust root, which Twisted names only in ``twisted.internet._sslverify``.

monit makes trust roots with the public ``platformTrust()`` and
``trustRootFromCertificates()`` and hands them to ``optionsForClientTLS``;
only the type checker needs their interface's name, so only it imports the
private module. ``check()`` asks whether the public functions still make what
that interface describes. Without it nothing changes when monit runs: only
its type annotations are stale.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from twisted.internet.ssl import platformTrust

if TYPE_CHECKING:
    from twisted.internet._sslverify import IOpenSSLTrustRoot as TrustRoot

__all__ = ["INSTEAD", "WHAT", "TrustRoot", "check"]

WHAT = "the name of Twisted's TLS trust root interface"
INSTEAD = "nothing changes when monit runs: only its type annotations are stale"


def check() -> str | None:
    """Why the installed Twisted's trust roots are not what the name says, or None."""
    try:
        interface = import_module("twisted.internet._sslverify").IOpenSSLTrustRoot
    except (ImportError, AttributeError) as error:
        return f"{type(error).__name__}: {error}"
    if not interface.providedBy(platformTrust()):
        return "platformTrust() makes no IOpenSSLTrustRoot"
    return None
