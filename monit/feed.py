"""--jetstream: the router fed from a JetStream stream, so instances share ids and nothing is lost.

At start the feed makes sure the stream captures every subject monit listens
to (making it if missing, never changing one an operator made), notes the
stream's last sequence, and replays the stream from its first message into
the inboxes; then it follows the stream live. Until the replay has reached
the sequence noted at start, the instance is not ready: a load balancer
sends nobody to a cold instance.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from monit.nats.client import NATSClient
from monit.nats.jetstream import (
    JetStreamAPI,
    JetStreamError,
    OrderedConsumer,
    Position,
    StreamMismatch,
    ensure_stream,
)
from monit.nats.protocol import Msg, RequestTimeout
from monit.routing import Router
from monit.settings import Settings

RETRY_SECONDS = 2.0


class JetStreamFeed(Service):
    """The stream's messages, in order, into the router; see the module docstring."""

    log = Logger()

    def __init__(
        self,
        nats: NATSClient,
        router: Router,
        settings: Settings,
        clock: IReactorTime,
        on_fatal: Callable[[str], None],
    ) -> None:
        self._nats = nats
        self._router = router
        self._settings = settings
        self._clock = clock
        self._on_fatal = on_fatal
        self._api = JetStreamAPI(nats, settings.request_timeout)
        self._consumer = OrderedConsumer(nats, self._api, settings.jetstream_stream, self._received, clock)
        self._target: int | None = None  # the stream's last sequence when the replay began
        self._starting: Deferred[None] | None = None

    @property
    def caught_up(self) -> bool:
        target = self._target
        return target is not None and self._consumer.last_seq >= target and self._router.idle

    @property
    def problem(self) -> str | None:
        """Why this instance is not ready yet, in words, or None."""
        if self._target is None:
            return f"JetStream: binding to stream {self._settings.jetstream_stream}"
        if not self.caught_up:
            return f"JetStream: replaying stream {self._settings.jetstream_stream} ({self._consumer.last_seq} of {self._target})"
        return None

    def startService(self) -> None:
        super().startService()
        self._starting = ensureDeferred(self._start())
        self._starting.addErrback(self._start_failed)

    async def _start(self) -> None:
        info = await self._bind()
        if info is None:
            return
        state: dict[str, Any] = info.get("state", {})
        self._target = int(state.get("last_seq", 0)) if int(state.get("messages", 0)) else 0
        self.log.info(
            "replaying JetStream stream {stream}: {messages} messages, up to sequence {last}",
            stream=self._settings.jetstream_stream, messages=state.get("messages", 0), last=self._target,
        )
        self._consumer.start(after=0)

    def _start_failed(self, failure: Failure) -> None:
        if not failure.check(CancelledError):
            self.log.failure("following the JetStream stream failed", failure)

    async def _bind(self) -> dict[str, Any] | None:
        """The stream's info, once NATS answers; None when monit cannot go on (already said)."""
        settings = self._settings
        while self.running:
            await self._nats.when_connected()
            try:
                return await ensure_stream(
                    self._api,
                    settings.jetstream_stream,
                    self._router.subjects,
                    settings.jetstream_replicas,
                    settings.jetstream_max_age,
                )
            except (StreamMismatch, JetStreamError) as error:
                if isinstance(error, JetStreamError) and error.code >= 500 and error.err_code:
                    self.log.warn("JetStream is not ready ({why}); trying again", why=error)
                else:
                    self._on_fatal(f"monit: --jetstream: {error}")
                    return None
            except RequestTimeout as error:
                self.log.warn("JetStream did not answer ({why}); trying again", why=error)
            await deferLater(self._clock, RETRY_SECONDS)
        return None

    def _received(self, msg: Msg, position: Position) -> None:
        self._router(msg, position)
        if self._target is not None and position.seq == self._target:
            self.log.info("replayed JetStream stream {stream} up to {seq}", stream=self._settings.jetstream_stream,
                          seq=position.seq)

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        self._consumer.stop()
        if self._starting is not None:
            self._starting.cancel()
        return None
