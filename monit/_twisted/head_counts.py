"""How much of a request head ``HTTPChannel`` has read: its bytes and its headers.

``HTTPChannel`` counts them (``_receivedHeaderSize``, ``_receivedHeaderCount``)
to enforce its own limits with a bare 400; monit reads the same counts
before each line to answer 431 (or 414) instead, with no counters of its own
on each of thousands of idle connections. ``check()`` feeds a real channel a
head and compares. Without them the site's channels count for themselves
(``monit.web.site.SelfCountingChannel``).
"""

from __future__ import annotations

from twisted.internet.protocol import connectionDone
from twisted.internet.testing import StringTransport
from twisted.web.http import HTTPChannel

WHAT = "the request head counts of HTTPChannel"
INSTEAD = "monit's channels count request heads themselves"


def head_bytes(channel: HTTPChannel) -> int:
    """The bytes of the request head read so far: its lines, without their line ends."""
    return channel._receivedHeaderSize


def headers_read(channel: HTTPChannel) -> int:
    """The headers read whole so far (a header is whole once the line after it comes)."""
    return channel._receivedHeaderCount


def check() -> str | None:
    """Why the counts cannot be read from the installed Twisted's HTTPChannel, or None."""
    channel = HTTPChannel()
    channel.timeOut = None
    channel.makeConnection(StringTransport())
    lines = (b"GET / HTTP/1.1", b"Host: example", b"Accept: */*")
    try:
        for line in lines:
            channel.lineReceived(line)
        counts = head_bytes(channel), headers_read(channel)
    except (AttributeError, TypeError) as error:
        return f"{type(error).__name__}: {error}"
    finally:
        channel.connectionLost(connectionDone)
    expected = sum(map(len, lines)), 1
    if counts != expected:
        return f"a head of {expected[0]} bytes and {expected[1]} whole header reads as {counts}"
    return None
