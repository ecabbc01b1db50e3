"""The checkpoint alone: what it is written for, what is not one, and which instances share one."""

import pytest

from monit.checkpoint import Checkpoint, bucket_for
from monit.service import feed_options
from monit.settings import Settings


def key_of(settings: Settings) -> str:
    """The key of the checkpoints of an instance with these settings."""
    key: str = feed_options(settings)["checkpoint_key"]
    return key


def test_a_checkpoint_is_used_only_for_the_stream_it_was_written_for():
    checkpoint = Checkpoint(101, "2026-01-01T00:00:00Z")
    assert Checkpoint.decode(checkpoint.encode()) == checkpoint
    stream = {"created": "2026-01-01T00:00:00Z", "state": {"last_seq": 100, "messages": 100}}
    assert checkpoint.unusable_for(stream) is None, "all of it read: the next message starts the replay"
    assert "made at" in checkpoint.unusable_for({**stream, "created": "2026-02-02T00:00:00Z"})
    assert "past the stream's last sequence 99" in checkpoint.unusable_for({**stream, "state": {"last_seq": 99}})


@pytest.mark.parametrize(
    "data",
    [b"", b"[]", b'{"horizon": 0, "created": "x"}', b'{"horizon": true, "created": "x"}', b'{"horizon": 5}', b"\xff"],
)
def test_a_checkpoint_that_is_not_one_is_refused(data):
    with pytest.raises(ValueError):
        Checkpoint.decode(data)


def test_instances_share_a_checkpoint_only_with_the_same_settings_that_decide_what_is_kept():
    assert key_of(Settings(history=10, heartbeat=1)) == key_of(Settings())
    for other in (
        dict(retention=60),
        dict(abandon=7200),
        dict(expiry=5),
        dict(grace=1),
        dict(max_inboxes=10),
        dict(open_subjects=("job.start",)),
        dict(deliver_subjects=("job.log",)),
    ):
        assert key_of(Settings(**other)) != key_of(Settings()), other
    assert bucket_for("MONIT") == "MONIT_CHECKPOINTS" and bucket_for("odd~name") is None
