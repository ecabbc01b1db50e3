"""Where a starting ``--jetstream`` instance begins its replay: a checkpoint its peers keep.

A running instance that has caught up writes, whenever it moves, its
*horizon*: the first stream sequence any inbox it keeps was built from
(``InboxRegistry.first_needed_id``), or the sequence after the last one it
routed when it keeps nothing. It goes to a JetStream key-value bucket
(``<stream>_CHECKPOINTS``, made by monit with the stream's replicas), under a
key that is a digest of the settings that decide what is kept (subjects,
``--grace``, ``--retention``, ``--expiry``, ``--abandon``, ``--max-inboxes``,
``--max-payload``), with the stream's creation time. A starting instance
with the same settings replays from that sequence instead of the first;
without a usable checkpoint it replays the whole stream.

Why that gives the inboxes, histories and ids of a full replay. An inbox is
a *run* of one job: it starts with the first event after the job's previous
run ended (its close, or its drop) and everything in it comes from messages
at or after that event. Every event is judged by its own time (the stream's
timestamp), and ids are stream sequences, so replaying a run's messages
rebuilds it exactly: same events, same ids, same timers. (A job's earlier
runs that the registry keeps as records for ``--retention`` are kept runs
too.) A run kept now
started at or after the horizon H written at time T: a run that started
before H and is still kept would have been kept at T too (a run that ends
never comes back; the job's next event starts a new run), so H would be at
most its start. A run that started before H and was dropped by T is also
dropped in a full replay, by the same timers on the same event times, and
its job's later events start a new run at or after H in both. The one thing
a run takes from the run before it is ``run_after`` (the previous run's last
id, which tells a reconnecting reader of the old run that it is over), so the
horizon of a re-opened job goes back to that last event. Ids below the
horizon are known to be from this stream (``InboxRegistry.start_after``),
so a reader that resumes with one is no stranger.

When the checkpoint cannot be trusted it is ignored: another creation time
(the stream was made anew since), a horizon past the stream's last sequence,
or other settings (another key). Several instances write the one key; each
writes only once caught up, and since horizons only move forward and every
instance keeps the same runs, any of their writes is a valid start, a stale
one only a slower one. Limits: a peer that dropped an inbox to make room
(``--max-inboxes``) or trimmed histories to ``--memory-budget`` moves its
horizon past what it dropped; hosts' clocks must agree (deadlines are judged
against the local clock); if a run had events after its close event and the
job was then re-opened, the horizon goes back to the run's last event, not
to its close, so a start from the checkpoint does not see that the run was
closing and takes the re-open into it; and a replay fires
a deadline that has passed only between reactor turns, in a full replay as
in this one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from monit.nats.jetstream import MADE_BY, MONIT, NANOSECONDS, STREAM_NAME_IN_USE, JetStreamAPI, JetStreamError
from monit.nats.protocol import RequestTimeout

_BUCKET = re.compile(r"[A-Za-z0-9_-]+")
DUPLICATE_WINDOW = 120 * NANOSECONDS


def bucket_for(stream: str) -> str | None:
    """The key-value bucket of the stream's checkpoints; None if the stream's name cannot name one."""
    name = f"{stream}_CHECKPOINTS"
    return name if _BUCKET.fullmatch(name) else None


def checkpoint_key(
    *,
    open_subjects: tuple[str, ...],
    deliver_subjects: tuple[str, ...],
    grace: float,
    retention: float,
    expiry: float,
    abandon: float,
    max_inboxes: int,
    max_payload: int,
) -> str:
    """A key naming the settings that decide which inboxes are kept: instances that share it agree."""
    deciding = {
        "open": open_subjects,
        "deliver": deliver_subjects,
        "grace": grace,
        "retention": retention,
        "expiry": expiry,
        "abandon": abandon,
        "max_inboxes": max_inboxes,
        "max_payload": max_payload,
    }
    text = json.dumps(deciding, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@attrs.frozen
class Checkpoint:
    """A replay of the stream made at ``created`` may start at sequence ``horizon``."""

    horizon: int
    created: str

    def encode(self) -> bytes:
        return json.dumps({"horizon": self.horizon, "created": self.created}).encode()

    @classmethod
    def decode(cls, data: bytes) -> Checkpoint:
        document = json.loads(data)
        if not isinstance(document, dict):
            raise ValueError("a checkpoint is a JSON object")
        horizon, created = document.get("horizon"), document.get("created")
        if not isinstance(horizon, int) or isinstance(horizon, bool) or horizon < 1 or not isinstance(created, str):
            raise ValueError("a checkpoint needs a horizon (1 or more) and a creation time")
        return cls(horizon, created)

    def unusable_for(self, info: Mapping[str, Any]) -> str | None:
        """Why this checkpoint cannot start a replay of the stream as ``info`` describes it, or None."""
        if info.get("created") != self.created:
            return f"it is of a stream made at {self.created}, and this one was made at {info.get('created')}"
        last = int(info.get("state", {}).get("last_seq", 0))
        if self.horizon > last + 1:
            return f"its horizon {self.horizon} is past the stream's last sequence {last}"
        return None


class CheckpointStore:
    """The checkpoint of one stream for one set of settings, in a JetStream key-value bucket."""

    log = Logger()

    def __init__(self, api: JetStreamAPI, stream: str, key: str) -> None:
        self._api = api
        self._stream = stream
        self._bucket = bucket_for(stream)
        self._key = key
        self._bound = False

    @property
    def subject(self) -> str:
        return f"$KV.{self._bucket}.{self._key}"

    async def start_after(self, info: Mapping[str, Any]) -> int:
        """The sequence a replay of the stream (as ``info`` describes it) may start after; 0: the first."""
        stream = self._stream
        if self._bucket is None:
            self.log.info(
                "stream {stream}: its name cannot name a checkpoint bucket; replaying all of it", stream=stream
            )
            return 0
        try:
            await self._bind(info)
            checkpoint = await self.read()
        except (JetStreamError, RequestTimeout, ValueError) as error:
            self.log.warn("no checkpoint of stream {stream} ({why}); replaying all of it", stream=stream, why=error)
            return 0
        if checkpoint is None:
            self.log.info("no checkpoint of stream {stream} yet; replaying all of it", stream=stream)
            return 0
        why = checkpoint.unusable_for(info)
        if why is not None:
            self.log.info(
                "ignoring the checkpoint of stream {stream}: {why}; replaying all of it", stream=stream, why=why
            )
            return 0
        return checkpoint.horizon - 1

    async def read(self) -> Checkpoint | None:
        message = await self._api.last_message(f"KV_{self._bucket}", self.subject)
        if message is None:
            return None
        return Checkpoint.decode(base64.b64decode(message.get("data") or b""))

    def write(self, checkpoint: Checkpoint, info: Mapping[str, Any]) -> Deferred[None]:
        """Store the checkpoint (binding the bucket first if need be)."""
        return Deferred.fromCoroutine(self._write(checkpoint, info))

    async def _write(self, checkpoint: Checkpoint, info: Mapping[str, Any]) -> None:
        if self._bucket is None:
            return
        if not self._bound:
            await self._bind(info)
        await self._api.store(self.subject, checkpoint.encode())

    async def _bind(self, info: Mapping[str, Any]) -> None:
        """Make the bucket if missing (a key-value bucket as NATS ADR-8 lays them out)."""
        name = f"KV_{self._bucket}"
        if await self._api.stream_info(name) is None:
            config = info.get("config", {})
            max_age = max(0, int(config.get("max_age", 0)))
            try:
                await self._api.create_stream(
                    {
                        "name": name,
                        "description": f"checkpoints of the JetStream stream {self._stream}, for monit's replays",
                        "subjects": [f"$KV.{self._bucket}.>"],
                        "retention": "limits",
                        "storage": "file",
                        "num_replicas": int(config.get("num_replicas", 1)),
                        "max_msgs_per_subject": 1,
                        "max_age": max_age,
                        "duplicate_window": min(DUPLICATE_WINDOW, max_age) if max_age else DUPLICATE_WINDOW,
                        "discard": "new",
                        "allow_rollup_hdrs": True,
                        "deny_delete": True,
                        "deny_purge": False,
                        "allow_direct": True,
                        "metadata": {MADE_BY: MONIT},
                    }
                )
            except JetStreamError as error:
                if error.err_code != STREAM_NAME_IN_USE:  # made meanwhile by another instance
                    raise
        self._bound = True
