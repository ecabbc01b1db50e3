"""The reference server: the least a NATS-to-SSE fan-out has to do, in raw Twisted.

It subscribes to ``monitor.user`` with monit's own NATS client and, for each
element of a message's ``messages`` list, encodes one SSE frame once and writes
it with one ``transport.write`` per reader of that stream. No HTTP, no tokens,
no inboxes, no history, no keep-alives, no logging: a plain TCP reader sends
its stream id as one line (the stand-in for the URL), gets ``retry: 3000``,
then frames. The benchmarks report monit's figures as ratios to this one's.

    python benchmarks/reference.py --nats nats://127.0.0.1:4222 --port 9000
"""

from __future__ import annotations

import argparse
import json

from twisted.internet import reactor
from twisted.internet.protocol import Factory, Protocol

from monit.nats.client import NATSClient
from monit.nats.protocol import Msg

GREETING = b"retry: 3000\n\n"


class Reader(Protocol):
    """One plain TCP reader: its first line names the stream it reads."""

    def __init__(self, streams: dict[str, set[Reader]]) -> None:
        self.streams = streams
        self.stream: str | None = None
        self.pending = b""

    def dataReceived(self, data: bytes) -> None:
        if self.stream is not None:
            return
        self.pending += data
        if b"\n" in self.pending:
            self.stream = self.pending.split(b"\n", 1)[0].decode("utf-8", "replace").strip()
            self.streams.setdefault(self.stream, set()).add(self)
            self.transport.write(GREETING)

    def connectionLost(self, reason: object = None) -> None:
        readers = self.streams.get(self.stream or "")
        if readers is not None:
            readers.discard(self)
            if not readers:
                del self.streams[self.stream]


class Fanout:
    """Turns each NATS message into frames, each encoded once, for its stream's readers."""

    def __init__(self) -> None:
        self.streams: dict[str, set[Reader]] = {}
        self.last_id: dict[str, int] = {}
        self.malformed = 0

    def __call__(self, msg: Msg) -> None:
        try:
            document = json.loads(msg.payload)
            stream = str(document["id"])
            messages = document["messages"]
        except (ValueError, KeyError, TypeError):
            self.malformed += 1
            return
        readers = self.streams.get(stream, ())
        for message in messages:
            event_id = self.last_id[stream] = self.last_id.get(stream, 0) + 1
            data = json.dumps(message, separators=(",", ":"), ensure_ascii=False)
            frame = b"id: %d\ndata: %s\n\n" % (event_id, data.encode("utf-8"))
            for reader in readers:
                reader.transport.write(frame)


class CountOnly:
    """The ingest baseline: a bare subscriber that counts messages.

    It looks inside a message only when it starts like one for a stream that
    has readers (the scenario's marker), and delivers that one as Fanout does.
    """

    def __init__(self, fanout: Fanout) -> None:
        self.fanout = fanout
        self.count = 0

    def __call__(self, msg: Msg) -> None:
        self.count += 1
        payload = msg.payload
        if payload.startswith(b'{"id":"'):
            stream = payload[7 : payload.find(b'"', 7)].decode("utf-8", "replace")
            if stream in self.fanout.streams:
                self.fanout(msg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nats", required=True, help="NATS server URL")
    parser.add_argument("--port", type=int, required=True, help="TCP port for readers (on 127.0.0.1)")
    parser.add_argument("--count-only", action="store_true", help="only count messages (the ingest baseline)")
    args = parser.parse_args()

    fanout = Fanout()
    client = NATSClient([args.nats], reactor, request_timeout=2.0, name="monit-reference")
    client.subscribe("monitor.user", CountOnly(fanout) if args.count_only else fanout)
    client.startService()
    factory = Factory.forProtocol(lambda: Reader(fanout.streams))
    factory.noisy = False
    reactor.listenTCP(args.port, factory, interface="127.0.0.1", backlog=50)
    reactor.run()


if __name__ == "__main__":
    main()
