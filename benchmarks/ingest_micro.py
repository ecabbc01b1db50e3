"""CPU per NATS message on monit's ingest path, in-process: parser, router, inbox.

    .venv/bin/python benchmarks/ingest_micro.py [--messages 100000] [--profile]

No sockets and no reactor: frames are fed to the NATS protocol as one read of
500 frames at a time, as a busy connection delivers them. It complements the
end-to-end `ingest` scenario of run.py, which includes the kernel and NATS.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from monit.nats.protocol import NATSProtocol
from monit.registry import InboxRegistry
from monit.routing import Router
from monit.service import registry_options, router_options
from monit.settings import Settings

KINDS = {
    "unread": b'{"id":"noreaders","messages":[{"n":1,"body":"nobody reads this"}]}',
    "malformed": b'{"id":"bad","messages":[{"n":',
}
FRAMES_PER_READ = 500


def connected_protocol() -> NATSProtocol:
    clock = Clock()
    settings = Settings()
    router = Router(InboxRegistry(clock, **registry_options(settings)), **router_options(settings))
    protocol = NATSProtocol(clock, lambda sid, msg: router(msg), {"name": "bench"})
    protocol.makeConnection(StringTransport())
    protocol.dataReceived(b'INFO {"max_payload":1048576}\r\nPONG\r\n')
    return protocol


def reads(payload: bytes, messages: int) -> list[bytes]:
    frame = b"MSG monitor.user 1 %d\r\n%s\r\n" % (len(payload), payload)
    return [frame * FRAMES_PER_READ] * (messages // FRAMES_PER_READ)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--profile", action="store_true", help="print where the time goes")
    args = parser.parse_args()
    for kind, payload in KINDS.items():
        protocol, chunks = connected_protocol(), reads(payload, args.messages)
        profile = cProfile.Profile() if args.profile else None
        started = time.process_time()
        if profile:
            profile.enable()
        for chunk in chunks:
            protocol.dataReceived(chunk)
        if profile:
            profile.disable()
        spent = time.process_time() - started
        print(f"{kind}: {spent / args.messages * 1e6:.1f} CPU-µs per message")
        if profile:
            pstats.Stats(profile).sort_stats("cumulative").print_stats(15)


if __name__ == "__main__":
    main()
