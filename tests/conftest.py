from collections.abc import Iterator

import pytest
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher

from auth_service import auth_service  # noqa: F401 (a fixture, for every test)
from dripping import drip  # noqa: F401 (a fixture, for every test)
from natsserver import NATSServer
from publisher import Publisher
from signing import Signer

# A test that uses one of these needs a real nats-server: it is an integration test.
NATS_FIXTURES = {"nats_server", "private_nats_server", "publisher", "jetstream_server"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if NATS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def nats_server():
    """One real nats-server for the whole test session."""
    server = NATSServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def private_nats_server():
    """A nats-server of the test's own, which it may stop and restart."""
    server = NATSServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def jetstream_server(tmp_path):
    """A nats-server with JetStream of the test's own (streams may not share subjects)."""
    server = NATSServer(store=str(tmp_path / "jetstream"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def publisher(nats_server):
    """The official nats-py client, publishing to the session's nats-server."""
    publisher = Publisher(nats_server.url)
    yield publisher
    publisher.close()


@pytest.fixture
def clock(request: pytest.FixtureRequest) -> Clock:
    """A fake reactor's clock, at 0 or where a ``clock_starts_at(seconds)`` mark on the test or its module says."""
    clock = Clock()
    starts_at = request.node.get_closest_marker("clock_starts_at")
    if starts_at is not None:
        clock.advance(starts_at.args[0])
    return clock


@pytest.fixture
def events() -> Iterator[EventLoggingObserver]:
    """Every log event emitted during the test."""
    observer = EventLoggingObserver()
    globalLogPublisher.addObserver(observer)
    yield observer
    globalLogPublisher.removeObserver(observer)


# Signing keys for JWTs from an identity provider: made once per test module (RSA is slow to make).


@pytest.fixture(scope="module")
def rsa() -> Signer:
    return Signer.make("RS256")


@pytest.fixture(scope="module")
def ec() -> Signer:
    return Signer.make("ES256")


@pytest.fixture(scope="module")
def ed() -> Signer:
    return Signer.make("EdDSA")
