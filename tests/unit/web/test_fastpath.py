"""The fast path's start-up check on this Twisted's own TCP transport: it fits, and a changed field is noticed."""

from __future__ import annotations

import twisted
from twisted.internet import tcp

from monit.web import _fastpath


def test_the_fast_path_fits_this_twisted():
    assert _fastpath.check() is None


def test_a_twisted_whose_fields_changed_is_noticed(monkeypatch):
    """As if a new Twisted buffered writes somewhere else."""

    def write_elsewhere(self, data: bytes) -> None:
        self.queued = getattr(self, "queued", b"") + data

    monkeypatch.setattr(tcp.Connection, "write", write_elsewhere)
    assert _fastpath.check() == f"Twisted {twisted.__version__}: a write to a TCP transport is not counted as unsent"
