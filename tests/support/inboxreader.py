"""A reader of inboxes that keeps what it is delivered (the one fake subscriber of the registry tests), and an inbox
the test knows is there."""

from __future__ import annotations

from monit.inbox import Batch, Inbox
from monit.registry import InboxRegistry


class InboxReader:
    """Keeps each batch's bytes and whether it was ended."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.ended = False

    def deliver(self, batch: Batch) -> None:
        self.frames.append(batch.data)

    def end(self) -> None:
        self.ended = True

    def notice(self, frame: bytes) -> None:
        """A frame that is no event (a stalled job's notice), in order with the events."""
        self.frames.append(frame)

    @property
    def received(self) -> bytes:
        """Every byte delivered, in order."""
        return b"".join(self.frames)

    @property
    def writes(self) -> int:
        """How many batches were delivered."""
        return len(self.frames)

    def ids(self) -> list[int]:
        return [int(line[4:]) for line in self.received.decode().split("\n") if line.startswith("id: ")]


def inbox_of(registry: InboxRegistry, job: str) -> Inbox:
    """The job's inbox, which the test knows the registry has."""
    inbox = registry.get(job)
    assert inbox is not None, job
    return inbox
