import pytest

from natsserver import NATSServer


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
