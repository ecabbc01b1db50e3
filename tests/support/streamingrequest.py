"""A response on a DummyRequest whose socket fills and drains, for the stream tests, and an event to fill it."""

from twisted.internet.interfaces import IPushProducer
from twisted.internet.testing import StringTransport
from twisted.web.test.requesthelper import DummyRequest


class StreamingRequest(DummyRequest):
    """A response whose socket holds ``capacity`` bytes and pushes back past them.

    DummyRequest drives producers as pull producers; a stream is a push
    producer, paused while the socket is full and resumed once it drains.
    """

    def __init__(self, capacity: int = 4096):
        super().__init__([b"events"])
        self.transport = StringTransport()
        self.capacity = capacity
        self.producer: IPushProducer | None = None
        self.paused = False

    def write(self, data: bytes) -> None:
        super().write(data)
        self.transport.write(data)
        if len(self.transport.value()) > self.capacity and not self.paused and self.producer is not None:
            self.paused = True
            self.producer.pauseProducing()

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None

    def drain(self) -> None:
        """The reader takes all the socket holds; the stream may write again."""
        self.transport.clear()
        if self.paused and self.producer is not None:
            self.paused = False
            self.producer.resumeProducing()

    def ids(self) -> list[int]:
        return [int(line[4:]) for line in b"".join(self.written).decode().split("\n") if line.startswith("id: ")]


def event(n: int) -> str:
    return '{"n":%d,"pad":"%s"}' % (n, "x" * 100)
