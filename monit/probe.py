"""A message sent through NATS and heard back on monit's own subscription: ``/readyz?deep=1``.

Being connected is not hearing. An account can keep a client connected and
publishing after it has lost the right to subscribe (its permissions
changed, an import was removed): monit would then stream nothing, while
plain ``/readyz`` says ready. Only a message that comes back proves that
what is published reaches monit.
"""

from __future__ import annotations

import secrets

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from monit.nats.client import NATSClient, NotConnected, Subscription
from monit.nats.protocol import Msg
from monit.oneshot import OneShotObserver

PROBE_TIMEOUT = 1.0  # seconds for a probe to come back


class RoundTrip(Service):
    """Publishes a probe on a subject only this process listens to, and waits for it to come back.

    One probe is in flight at a time: callers while it is out share its
    answer, so a flood of deep checks sends one message per second at most.
    """

    log = Logger()

    def __init__(self, nats: NATSClient, clock: IReactorTime, *, timeout: float = PROBE_TIMEOUT) -> None:
        self._nats = nats
        self._clock = clock
        self._timeout = timeout
        self.subject = f"monit.probe.{secrets.token_hex(8)}"
        self._subscription: Subscription | None = None
        self._sent = 0  # the number of the probe in flight, its payload
        self._answer: OneShotObserver[bool] | None = None
        self._timer: IDelayedCall | None = None

    def startService(self) -> None:
        super().startService()
        self._subscription = self._nats.subscribe(self.subject, self._heard)

    def stopService(self) -> None:
        super().stopService()
        if self._subscription is not None:
            self._subscription.unsubscribe()
            self._subscription = None
        self._settle(False)

    def check(self) -> Deferred[bool]:
        """True once a probe published now has come back, False after the timeout or when not connected."""
        if self._answer is None:
            self._answer = OneShotObserver()
            waiter = self._answer.when_fired()
            self._send()
            return waiter
        return self._answer.when_fired()

    def _send(self) -> None:
        self._sent += 1
        try:
            self._nats.publish(self.subject, b"%d" % self._sent)
        except NotConnected:
            self._settle(False)
            return
        self._timer = self._clock.callLater(self._timeout, self._settle, False)

    def _heard(self, msg: Msg) -> None:
        if self._answer is not None and msg.payload == b"%d" % self._sent:
            self._settle(True)

    def _settle(self, heard: bool) -> None:
        answer, self._answer = self._answer, None
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if answer is not None:
            if not heard:
                self.log.warn(
                    "NATS: a probe published on {subject} did not come back in {timeout} s",
                    subject=self.subject,
                    timeout=self._timeout,
                )
            answer.fire(heard)
