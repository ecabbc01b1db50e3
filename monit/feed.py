"""--jetstream: the router fed from a JetStream stream, so instances share ids and nothing is lost.

At start the feed binds to the stream (making it if missing, never changing
one an operator made), notes its last sequence, and replays it into the
inboxes: from the checkpoint its peers keep (``monit.checkpoint``) when there
is a usable one, else from its first message. Then it follows the stream
live. Until the replay has reached the sequence noted at start, the instance
is not ready: a load balancer sends nobody to a cold instance.

Every ``jetstream_check`` seconds, and at once when the consumer has
trouble, it looks at the stream again:

- gone (deleted, or a nats-server that came back with an empty store): made
  again if monit made it (its mark in the stream's metadata) or
  ``--jetstream-recreate`` says so, then replayed as new; otherwise the
  instance is not ready, naming the stream, until someone makes it again;
- made anew (another creation time, or a last sequence below one already
  seen): the inboxes are reset as a restart would find them, and the new
  stream is replayed from its first message;
- unable to store (sealed, or ``discard: new`` at a limit): a problem in
  ``/readyz`` and the log, since every event published meanwhile is lost;
- otherwise, once caught up, the checkpoint is written when it has moved.

A reader that resumes with an id the replay has not reached yet is held
(``hold``) until the replay passes it, then goes on exactly after it: an id
the stream holds is never taken for one from a stream made anew.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall, deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure

from monit.checkpoint import Checkpoint, CheckpointStore
from monit.nats.client import NATSClient
from monit.nats.jetstream import (
    JetStreamAPI,
    JetStreamError,
    OrderedConsumer,
    Position,
    StreamMismatch,
    check_subjects,
    ensure_stream,
    made_by_monit,
    needs_subject_counts,
    why_it_cannot_store,
)
from monit.nats.protocol import Msg, RequestTimeout
from monit.registry import InboxRegistry
from monit.routing import ID_SHIFT, Router

RETRY_SECONDS = 2.0


def _last_seq(info: dict[str, Any]) -> int:
    state = info.get("state", {})
    return int(state.get("last_seq", 0)) if int(state.get("messages", 0)) else 0


class JetStreamFeed(Service):
    """The stream's messages, in order, into the router; see the module docstring."""

    log = Logger()

    def __init__(
        self,
        nats: NATSClient,
        router: Router,
        registry: InboxRegistry,
        clock: IReactorTime,
        on_fatal: Callable[[str], None],
        *,
        stream: str,
        replicas: int,
        max_age: float,
        recreate: bool,
        request_timeout: float,
        check_every: float,
        checkpoint_key: str | None,
    ) -> None:
        """The stream to follow, and to make (with ``replicas`` and ``max_age``) when missing;
        ``recreate``: make it again even if monit did not make it. ``checkpoint_key``: the key
        of this instance's checkpoints (``monit.checkpoint``), None to always replay it all."""
        self._nats = nats
        self._router = router
        self._registry = registry
        self._stream = stream
        self._replicas = replicas
        self._max_age = max_age
        self._recreate = recreate
        self._check_every = check_every
        self._clock = clock
        self._on_fatal = on_fatal
        self._api = JetStreamAPI(nats, request_timeout)
        self._consumer = OrderedConsumer(nats, self._api, self._stream, self._received, clock, trouble=self.look_soon)
        self._checkpoints: CheckpointStore | None = None
        if checkpoint_key is not None:
            self._checkpoints = CheckpointStore(self._api, self._stream, checkpoint_key)
        self._target: int | None = None  # the stream's last sequence when the replay began
        self._created: str | None = None  # the creation time of the stream followed
        self._ours = False  # monit made it: monit may make it again
        self._gone: str | None = None  # why the stream is not followed: it is gone
        self._full: str | None = None  # why the stream cannot store new messages
        self._mismatch: str | None = None  # what the stream no longer captures
        # Readers waiting for the replay: the sequence of their id, and how many looks had begun then.
        self._held: dict[Deferred[None], tuple[int, int]] = {}
        self._looks_begun = 0
        self._latest: tuple[int, int] = (0, 0)  # the last look that found the stream: its number, and last sequence
        self._release_call: IDelayedCall | None = None
        self._starting: Deferred[None] | None = None
        self._looking: Deferred[None] | None = None
        self._look_again = False
        self._timer = LoopingCall(self.look_soon)
        self._timer.clock = clock
        self.replayed_from = 0  # the sequence the last replay started after (0: the first message)
        self.checkpoint: int | None = None  # the horizon this instance last wrote
        self.held = 0  # readers held until the replay passed their id, since start

    @property
    def caught_up(self) -> bool:
        target = self._target
        return target is not None and self._gone is None and self._consumer.last_seq >= target and self._router.idle

    @property
    def problems(self) -> list[str]:
        """What is wrong, in words: why this instance is not ready, and what it cannot do."""
        stream = self._stream
        found = []
        if self._gone is not None:
            found.append(f"JetStream: stream {stream} is gone: {self._gone}")
        elif self._target is None:
            found.append(f"JetStream: binding to stream {stream}")
        elif not self.caught_up:
            found.append(f"JetStream: replaying stream {stream} ({self._consumer.last_seq} of {self._target})")
        if self._full is not None:
            found.append(f"JetStream: stream {stream} cannot store new messages: {self._full}")
        if self._mismatch is not None:
            found.append(f"JetStream: {self._mismatch}")
        return found

    def startService(self) -> None:
        super().startService()
        self._starting = ensureDeferred(self._start())
        self._starting.addErrback(self._failed, "following the JetStream stream failed")

    async def _start(self) -> None:
        info = await self._bind()
        if info is None:
            return
        after = 0
        if self._checkpoints is not None:
            after = await self._checkpoints.start_after(info)
        if not self.running:
            return
        self._replay(info, after)
        self._timer.start(self._check_every, now=False)

    def _failed(self, failure: Failure, what: str) -> None:
        if not failure.check(CancelledError):
            self.log.failure(what, failure)

    async def _bind(self) -> dict[str, Any] | None:
        """The stream's info, once NATS answers; None when monit cannot go on (already said)."""
        while self.running:
            await self._nats.when_connected()
            try:
                return await ensure_stream(
                    self._api,
                    self._stream,
                    self._router.subjects,
                    self._replicas,
                    self._max_age,
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

    def _replay(self, info: dict[str, Any], after: int) -> None:
        """Follow the stream ``info`` describes from the message after ``after`` (0: from its first)."""
        self._note(info)
        self._gone = None
        self._target = max(_last_seq(info), after)
        self.replayed_from = after
        if after:
            self._registry.start_after(((after + 1) << ID_SHIFT) - 1)
        self.log.info(
            "replaying JetStream stream {stream} from sequence {first} up to {last}",
            stream=self._stream,
            first=after + 1,
            last=self._target,
        )
        self._consumer.start(after=after)
        self._release()

    def _received(self, msg: Msg, position: Position) -> None:
        self._router(msg, position)
        if self._held:
            self._release()
        if self._target is not None and position.seq == self._target:
            self.log.info("replayed JetStream stream {stream} up to {seq}", stream=self._stream, seq=position.seq)

    # Looking at the stream again

    def look_soon(self) -> None:
        """Look at the stream now, or once the look under way is over."""
        if not self.running or self._target is None:
            return
        if self._looking is not None:
            self._look_again = True
            return
        self._looking = ensureDeferred(self._look())
        self._looking.addErrback(self._failed, "looking at the JetStream stream failed")
        self._looking.addBoth(self._looked)

    def _looked(self, _: object) -> None:
        self._looking = None
        if self._look_again:
            self._look_again = False
            self.look_soon()

    async def _look(self) -> None:
        seen = self._consumer.last_seq
        self._looks_begun += 1
        number = self._looks_begun
        try:
            info = await self._api.stream_info(self._stream)
            if info is not None and needs_subject_counts(info):
                info = await self._api.stream_info(self._stream, subjects=True)
        except (JetStreamError, RequestTimeout) as error:
            self.log.warn("could not look at JetStream stream {stream}: {why}", stream=self._stream, why=error)
            return
        if info is None:
            info = await self._stream_gone()
            if info is None:
                return
        self._follow(info, seen)
        self._latest = (number, _last_seq(info))
        self._release()

    def _follow(self, info: dict[str, Any], seen: int) -> None:
        """Go on with the stream as found: made anew, back, or as it was."""
        if info.get("created") != self._created:
            self._anew(info, f"made at {info.get('created')}, not {self._created}")
        elif _last_seq(info) < seen:
            self._anew(info, f"its last sequence is {_last_seq(info)}, and sequence {seen} was read from it")
        else:
            if self._gone is not None:  # not found for a while, and back as it was
                self.log.info("JetStream stream {stream} is back", stream=self._stream)
                self._gone = None
                self._consumer.start(after=self._consumer.last_seq)
            self._note(info)
            self._write_checkpoint(info)

    async def _stream_gone(self) -> dict[str, Any] | None:
        """The stream made again, if monit may make it; otherwise None, and it says so until someone does."""
        stream = self._stream
        self._consumer.stop()
        if not (self._ours or self._recreate):
            if self._gone is None:
                self.log.error(
                    "JetStream stream {stream} is gone, and monit may not make it again: an operator made it "
                    "(--jetstream-recreate lets monit make it); every event is lost until it is back",
                    stream=stream,
                )
            self._gone = "an operator made it, and monit may not make it again (see --jetstream-recreate)"
            return None
        try:
            info = await ensure_stream(
                self._api,
                stream,
                self._router.subjects,
                self._replicas,
                self._max_age,
            )
        except (JetStreamError, StreamMismatch, RequestTimeout) as error:
            gone = f"monit could not make it again ({error})"
            if gone != self._gone:  # said once, not at every look
                self.log.error(
                    "JetStream stream {stream} is gone, and making it again failed: {why}; trying again",
                    stream=stream,
                    why=error,
                )
            self._gone = gone
            return None
        self.log.warn("JetStream stream {stream} was gone: monit made it again", stream=stream)
        return info

    def _anew(self, info: dict[str, Any], why: str) -> None:
        """The stream was made anew: start over, as a restart would."""
        self.log.warn(
            "JetStream stream {stream} was made anew ({why}): every inbox ends, and the new stream is replayed "
            "from its first message",
            stream=self._stream,
            why=why,
        )
        self._consumer.stop()
        self._registry.reset()
        self.checkpoint = None
        self._replay(info, 0)

    def _note(self, info: dict[str, Any]) -> None:
        """What the stream is now: whose, whether it can store, whether it captures every subject."""
        stream = self._stream
        self._created = info.get("created")
        self._ours = made_by_monit(info)
        full = why_it_cannot_store(info)
        if full != self._full:
            if full is not None:
                self.log.error(
                    "JetStream stream {stream} cannot store new messages: {why}; every event the engine "
                    "publishes is lost until it can",
                    stream=stream,
                    why=full,
                )
            else:
                self.log.info("JetStream stream {stream} can store new messages again", stream=stream)
            self._full = full
        try:
            check_subjects(info, self._router.subjects)
            mismatch = None
        except StreamMismatch as error:
            mismatch = str(error)
        if mismatch != self._mismatch and mismatch is not None:
            self.log.error("{why}: their events are lost", why=mismatch)
        self._mismatch = mismatch

    def _write_checkpoint(self, info: dict[str, Any]) -> None:
        """Once caught up: the first sequence a replay needs, if it moved since the last write."""
        if self._checkpoints is None or self._created is None or not self.caught_up:
            return
        routed = self._consumer.last_seq  # all routed: caught up means the router is idle
        first = self._registry.first_needed_id()
        horizon = routed + 1 if first is None else min(first >> ID_SHIFT, routed + 1)
        if horizon == self.checkpoint:
            return
        self.checkpoint = horizon
        written = self._checkpoints.write(Checkpoint(horizon, self._created), info)
        written.addErrback(self._not_written)

    def _not_written(self, failure: Failure) -> None:
        self.checkpoint = None  # try again on the next look
        self.log.warn(
            "could not write the checkpoint of JetStream stream {stream}: {why}",
            stream=self._stream,
            why=failure.getErrorMessage(),
        )

    # Readers that resume while the replay runs

    def hold(self, after: int) -> Deferred[None] | None:
        """None if a reader whose last id is ``after`` can be served now; else a Deferred that fires when it can.

        It fires once the replay has passed ``after``, or, for an id from no
        history of ours, once caught up and a look at the stream shows its
        last sequence below the id. Cancelling it stops the wait.
        """
        seq = after >> ID_SHIFT
        if after <= 0 or self._passed(seq):
            return None
        waiter: Deferred[None] = Deferred(self._unhold)
        self._held[waiter] = (seq, self._looks_begun)
        self.held += 1
        self._release()
        return waiter

    @property
    def holding(self) -> int:
        """Readers waiting for the replay now."""
        return len(self._held)

    def _passed(self, seq: int) -> bool:
        """Every message up to ``seq`` has been routed (or lies below the replay's start)."""
        return self._target is not None and self._gone is None and self._consumer.last_seq >= seq and self._router.idle

    def _may_go(self, seq: int, asked: int) -> bool:
        """The replay has passed the id; or, caught up, a look begun after the reader came finds the
        stream's last sequence below it: an id from no history of ours (the stream was made anew)."""
        if self._passed(seq):
            return True
        number, last = self._latest
        if self.caught_up and number > asked and last < seq:
            self.log.info(
                "a reader resumes on stream {stream} with an id of sequence {seq}, past its last "
                "sequence {last}: an id from a stream made anew",
                stream=self._stream,
                seq=seq,
                last=last,
            )
            return True
        return False

    def _unhold(self, waiter: Deferred[None]) -> None:
        self._held.pop(waiter, None)

    def _release(self) -> None:
        """Let the held readers whose id the replay has passed go on (looking again each turn while the
        router works through a long message)."""
        if not self._held or self._release_call is not None:
            return
        if not self._router.idle:
            self._release_call = self._clock.callLater(0, self._release_later)
            return
        look = False
        for waiter, (seq, asked) in list(self._held.items()):
            if self._may_go(seq, asked):
                del self._held[waiter]
                waiter.callback(None)
            elif self.caught_up and self._latest[0] <= asked:
                look = True  # caught up with where the stream was at start, and the id is past it
        if look:
            self.look_soon()

    def _release_later(self) -> None:
        self._release_call = None
        self._release()

    def stopService(self) -> Deferred[None] | None:
        super().stopService()
        if self._timer.running:
            self._timer.stop()
        self._consumer.stop()
        for pending in (self._starting, self._looking):
            if pending is not None:
                pending.cancel()
        if self._release_call is not None and self._release_call.active():
            self._release_call.cancel()
        for waiter in list(self._held):
            waiter.cancel()
        return None
