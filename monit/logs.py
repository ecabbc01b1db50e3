"""Machine-readable logs: ``twistd --logger=monit.logs.json_stdout -n monit …``.

Every monit log event carries its figures as named fields (stream, user,
reason, duration, events, subject, url, code …); this observer writes each
event as one JSON text sequence record (RFC 7464) on standard output, for
``jq --seq`` or a log shipper.
"""
from __future__ import annotations

import sys

from twisted.logger import ILogObserver, jsonFileLogObserver


def json_stdout() -> ILogObserver:
    """The log observer factory twistd's --logger option takes."""
    return jsonFileLogObserver(sys.stdout)
