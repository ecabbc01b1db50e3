"""A reconnecting NATS client service around Twisted's ClientService.

ClientService comes shielded and quiet (``monit._twisted``): a connection
lost while its handshake is pending does not raise out of it, and its line
per retry is left out, since the client says why it cannot connect, once per
reason.

Subscriptions outlive connections: each keeps its sid, and every new
connection subscribes them all again before anyone may use it.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
import secrets
from collections.abc import Callable, Mapping, Sequence
from typing import cast
from urllib.parse import unquote, urlsplit

import attrs
from twisted.application.internet import backoffPolicy
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.error import ConnectingCancelledError, ConnectionDone
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    IStreamClientEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.policies import ProtocolWrapper
from twisted.python.failure import Failure
from zope.interface import implementer

from monit._twisted import early_disconnect
from monit._twisted.early_disconnect import SurviveEarlyDisconnectFactory
from monit._twisted.quiet_logs import QuietClientService
from monit._twisted.seam import fits
from monit.nats.nkeys import NATSUser
from monit.nats.protocol import (
    Msg,
    NATSProtocol,
    NoResponders,
    NotConnected,
    RequestTimeout,
    check_subject,
)
from monit.nats.tls import ClientTLS
from monit.oneshot import OneShotObserver
from monit.tally import Tally

DEFAULT_PORT = 4222
# How long a new connection may take from TCP connect to the PONG after CONNECT.
HANDSHAKE_TIMEOUT = 10.0
_NO_RESPONDERS = 503


def check_url(url: str) -> None:
    """Raise ValueError, saying what is wrong, if ``url`` is not a NATS server URL monit can use."""
    try:
        _Server.parse(url)
    except ValueError as error:
        raise ValueError(f"{url!r} is not a NATS URL monit can use: {error}") from None


@attrs.frozen
class _Server:
    """One nats:// or tls:// URL, parsed; its repr never shows the credentials."""

    host: str
    port: int
    user: str | None = attrs.field(default=None, repr=False)
    password: str | None = attrs.field(default=None, repr=False)
    token: str | None = attrs.field(default=None, repr=False)
    tls: bool = False  # tls://: upgrade to TLS even if the server does not require it
    tls_name: str = ""  # the name its certificate must carry; the host's unless learnt from a server

    @classmethod
    def parse(cls, url: str) -> _Server:
        parts = urlsplit(url)
        if parts.scheme not in ("nats", "tls"):
            raise ValueError(f"scheme {parts.scheme!r}: nats://host:port or tls://host:port")
        if not parts.hostname:
            raise ValueError("no host")
        try:
            _ = parts.port  # reading it checks it
        except ValueError:
            raise ValueError("the port is not a number from 1 to 65535") from None
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        where = dict(host=parts.hostname, port=parts.port or DEFAULT_PORT, tls=parts.scheme == "tls")
        if password is None:
            return cls(**where, token=user)  # type: ignore[arg-type]
        return cls(**where, user=user, password=password)  # type: ignore[arg-type]

    def learnt(self, address: object) -> _Server | None:
        """A server of the same cluster from INFO's ``connect_urls`` ("host:port"), or None.

        It takes this server's credentials and TLS; when it is given by IP
        address, its certificate is checked against the name this one has.
        """
        if not isinstance(address, str):
            return None
        try:
            parts = urlsplit(f"//{address}")
            host, port = parts.hostname, parts.port or DEFAULT_PORT
        except ValueError:
            return None
        if not host:
            return None
        return attrs.evolve(self, host=host, port=port, tls_name=self.name if _is_ip(host) else host)

    @property
    def name(self) -> str:
        """The name the server's TLS certificate must carry."""
        return self.tls_name or self.host

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def redacted(self) -> str:
        """The URL as it may be logged: the user name but no password or token."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.token is not None:
            credentials = "***@"
        elif self.user is not None:
            credentials = f"{self.user}:***@"
        else:
            credentials = ""
        return f"{'tls' if self.tls else 'nats'}://{credentials}{host}:{self.port}"

    def credentials(self) -> dict[str, str]:
        """The CONNECT fields that authenticate us."""
        if self.token is not None:
            return {"auth_token": self.token}
        if self.user is not None:
            return {"user": self.user, "pass": self.password or ""}
        return {}


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@implementer(IStreamClientEndpoint)
class _RoundRobinEndpoint:
    """Connect to the next server of the list on each attempt; the list grows with the cluster."""

    def __init__(self, reactor: IReactorTime, servers: Sequence[_Server], failed: Callable[[str], None]) -> None:
        self._reactor = reactor
        self._servers = list(servers)
        self._failed = failed
        self._attempts = 0
        self.current = servers[0]

    def connect(self, factory: IProtocolFactory) -> Deferred[IProtocol]:
        self.current = self._servers[self._attempts % len(self._servers)]
        self._attempts += 1
        endpoint = HostnameEndpoint(self._reactor, self.current.host, self.current.port)
        connecting = endpoint.connect(SurviveEarlyDisconnectFactory(factory))
        return connecting.addCallbacks(_unwrapped, self._attempt_failed)

    @property
    def servers(self) -> tuple[_Server, ...]:
        return tuple(self._servers)

    def learn(self, server: _Server) -> bool:
        """Add a server not yet in the list; say whether it was new."""
        if any(known.address == server.address for known in self._servers):
            return False
        self._servers.append(server)
        return True

    def _attempt_failed(self, failure: Failure) -> Failure:
        if failure.check(CancelledError, ConnectingCancelledError):
            return failure  # stopping: nothing went wrong
        why = failure.getErrorMessage().rstrip(".")
        self._failed(f"cannot connect to NATS at {self.current.redacted}: {why}")
        return failure

    def __repr__(self) -> str:
        return f"<NATS servers {', '.join(server.redacted for server in self._servers)}>"


class _ConnectionFactory(Factory):
    """A new NATSProtocol for each connection, made by the client that owns them."""

    noisy = False

    def __init__(self, build: Callable[[], NATSProtocol]) -> None:
        self._build = build

    def buildProtocol(self, addr: IAddress | None) -> NATSProtocol:
        return self._build()


def _unwrapped(wrapper: IProtocol) -> IProtocol:
    """The protocol inside the wrapper that shields ClientService (its own, which it must be handed)."""
    return cast(ProtocolWrapper, wrapper).wrappedProtocol


@attrs.define(eq=False)
class Subscription:
    """A live interest in a subject; it survives reconnects."""

    subject: str
    queue: str | None
    sid: int
    callback: Callable[[Msg], None] = attrs.field(repr=False)
    _client: NATSClient = attrs.field(repr=False)

    def unsubscribe(self) -> None:
        """Stop delivery now; calling it again does nothing."""
        self._client._unsubscribe(self)


@attrs.define(eq=False)
class _Request:
    """A request waiting for its reply."""

    subject: str
    result: Deferred[Msg]
    timer: IDelayedCall
    connecting: Deferred[None] | None = None

    def stop_waiting(self) -> None:
        """Cancel the timer and the wait for a connection, whichever are still on."""
        if self.timer.active():
            self.timer.cancel()
        if self.connecting is not None:
            self.connecting.cancel()


class NATSClient(Service):
    """Subscribe, publish and request over a NATS connection that comes back."""

    log = Logger()

    def __init__(
        self,
        urls: Sequence[str],
        reactor: IReactorTime,
        *,
        request_timeout: float,
        name: str = "monit",
        ping_interval: float = 30.0,
        max_pings_out: int = 2,
        initial_delay: float = 0.1,
        max_delay: float = 5.0,
        tls: ClientTLS | None = None,
        user: NATSUser | None = None,
    ) -> None:
        """``tls``: the CA and client certificate for TLS (the system's CAs if None);
        ``user``: an NKey or ``.creds`` user to sign the server's nonce with."""
        if not urls:
            raise ValueError("no NATS server URL given")
        self._reactor = reactor
        self._name = name
        self._request_timeout = request_timeout
        self._ping_interval = ping_interval
        self._max_pings_out = max_pings_out
        self._tls = tls
        self._want_tls = tls is not None  # TLS options given: every server, tls:// or not
        self._user = user
        self._why_not = "not connected yet"
        servers = [_Server.parse(url) for url in urls]
        self._endpoint = _RoundRobinEndpoint(reactor, servers, self._not_connected)
        factory = _ConnectionFactory(self._build_protocol)
        fits(early_disconnect)  # raises Unfit when ClientService cannot be shielded
        self._service = QuietClientService(
            self._endpoint,
            factory,
            retryPolicy=backoffPolicy(initial_delay, max_delay, factor=2, jitter=random.random),
            clock=reactor,
            prepareConnection=self._prepare,
        )
        self._protocol: NATSProtocol | None = None
        self._ever_connected = False
        self._sids = itertools.count(1)
        self._subscriptions: dict[int, Subscription] = {}
        self._next_connection: OneShotObserver[None] = OneShotObserver()
        self._inbox_prefix = f"_INBOX.{secrets.token_hex(11)}."
        self._inbox: Subscription | None = None
        self._tokens = itertools.count(1)
        self._requests: dict[str, _Request] = {}
        self.url: str | None = None
        self.reconnects = 0
        self.unusable = 0
        self.skipped = Tally(reactor, self.log, "skipped unusable NATS messages")
        self._reading_paused = False
        self._said: set[str] = set()  # reasons for failing to connect, logged since the last connection

    @property
    def connected(self) -> bool:
        """Whether a connection has finished its handshake and is still up."""
        return self._protocol is not None

    @property
    def problem(self) -> str | None:
        """Why there is no usable connection, or None when there is one."""
        return None if self.connected else self._why_not

    def _not_connected(self, why: str) -> None:
        """Say why there is no connection: each reason once, until a connection is made.

        Nothing is said once stopping: an attempt the stop cuts short is no
        fault of NATS (and one cut short while looking up the host fails as
        "DNS lookup failed", Twisted's HostnameEndpoint's word for any
        cancelled lookup: twisted/twisted#9696).
        """
        if not self.running:
            return
        self._why_not = why
        if why not in self._said:
            self._said.add(why)
            self.log.warn("{problem}; trying again with backoff", problem=why)

    def pause_reading(self, paused: bool) -> None:
        """Stop reading from NATS (or go on): the server holds what comes meanwhile."""
        self._reading_paused = paused
        if self._protocol is not None:
            self._protocol.pause_reading(paused)

    # Service

    def startService(self) -> None:
        super().startService()
        self._service.startService()

    def stopService(self) -> Deferred[None]:
        """Disconnect, and fail whatever still waits for the connection."""
        super().stopService()
        self.skipped.stop()
        stopped = self._service.stopService()
        for token in list(self._requests):
            self._fail_request(token, NotConnected("the NATS client was stopped"))
        self._settle_next_connection(Failure(NotConnected("the NATS client was stopped")))
        return stopped

    # Connections

    @property
    def servers(self) -> list[str]:
        """The servers monit tries in turn: those given, then those the cluster told of."""
        return [server.redacted for server in self._endpoint.servers]

    def _build_protocol(self) -> NATSProtocol:
        server = self._endpoint.current
        options = {"name": self._name, **server.credentials()}
        return NATSProtocol(
            self._reactor,
            self._deliver,
            options,
            ping_interval=self._ping_interval,
            max_outstanding_pings=self._max_pings_out,
            on_unusable=self._unusable,
            on_info=lambda info: self._learn(info, server),
            tls=lambda: self._client_tls().for_server(server.name),
            want_tls=server.tls or self._want_tls,
            sign=self._user.connect_fields if self._user is not None else None,
        )

    def _client_tls(self) -> ClientTLS:
        """The TLS options given, else the system's CAs (for a server that requires TLS)."""
        if self._tls is None:
            self._tls = ClientTLS.from_files()
        return self._tls

    def _learn(self, info: dict[str, object], via: _Server) -> None:
        """Add the servers a server says its cluster has, so losing the one given is survivable."""
        addresses = info.get("connect_urls")
        if not isinstance(addresses, list):
            return
        for address in addresses:
            server = via.learnt(address)
            if server is not None and self._endpoint.learn(server):
                self.log.info("NATS server {via} told of {server}", via=via.redacted, server=server.redacted)

    def _unusable(self, subject: str, reason: str) -> None:
        """A message the server relayed that cannot be read: counted and skipped, the connection kept."""
        self.unusable += 1
        self.skipped.add(subject, reason)

    def _prepare(self, connected: IProtocol) -> Deferred[None]:
        """Finish the handshake and subscribe again, before ClientService says connected."""
        protocol = cast(NATSProtocol, connected)
        server = self._endpoint.current
        handshake = protocol.when_connected()
        handshake.addCallback(lambda _: self._resubscribe(protocol))
        handshake.addTimeout(HANDSHAKE_TIMEOUT, self._reactor)
        return handshake.addCallbacks(
            lambda sent: self._connected(protocol, server, sent),
            lambda reason: self._handshake_failed(reason, protocol, server),
        )

    def _handshake_failed(self, reason: Failure, protocol: NATSProtocol, server: _Server) -> Failure:
        if not reason.check(CancelledError):
            self._not_connected(f"NATS handshake with {server.redacted} failed: {reason.getErrorMessage()}")
        if protocol.transport is not None:
            protocol.transport.loseConnection()
        return reason

    def _resubscribe(self, protocol: NATSProtocol) -> Deferred[set[int]]:
        """Send every live subscription; fire with their sids once the server has them.

        The server handles a connection's commands in order, so the PONG
        after the SUBs means that a message published anywhere from now on
        reaches them.
        """
        sent = set(self._subscriptions)
        for subscription in self._subscriptions.values():
            protocol.subscribe(subscription.sid, subscription.subject, subscription.queue)
        return protocol.ping().addCallback(lambda _: sent)

    def _catch_up(self, protocol: NATSProtocol, sent: set[int]) -> None:
        """Send the (un)subscriptions made while the server was confirming the others."""
        for sid in sent - self._subscriptions.keys():
            protocol.unsubscribe(sid)
        for sid, subscription in self._subscriptions.items():
            if sid not in sent:
                protocol.subscribe(sid, subscription.subject, subscription.queue)

    def _connected(self, protocol: NATSProtocol, server: _Server, sent: set[int]) -> None:
        self._catch_up(protocol, sent)
        if self._ever_connected:
            self.reconnects += 1
        self._ever_connected = True
        self._protocol = protocol
        if self._reading_paused:
            protocol.pause_reading(True)
        self.url = server.redacted
        self.log.info("connected to NATS at {url}", url=self.url)
        self._said.clear()
        protocol.when_lost().addCallback(self._lost)
        self._settle_next_connection(None)

    def _settle_next_connection(self, outcome: None | Failure) -> None:
        """Tell those waiting for a connection; the next wait is for the next one."""
        settled, self._next_connection = self._next_connection, OneShotObserver()
        settled.fire(outcome)

    def _lost(self, reason: BaseException) -> None:
        if not self.running:
            self.log.info("left NATS at {url}", url=self.url)
        elif isinstance(reason, ConnectionDone):
            self._not_connected(f"the NATS server at {self.url} closed the connection (shutting down or restarting?)")
        else:
            self._not_connected(f"lost the connection to NATS at {self.url}: {str(reason).rstrip('.')}")
        self._protocol = None
        self.url = None

    def when_connected(self) -> Deferred[None]:
        """Fire now if connected, else on the next connection."""
        if self.connected:
            return succeed(None)
        return self._next_connection.when_fired()

    # Messages

    def _deliver(self, sid: int, msg: Msg) -> None:
        """Route a message to its subscription; drop it if that was just unsubscribed."""
        subscription = self._subscriptions.get(sid)
        if subscription is not None:
            subscription.callback(msg)

    def subscribe(self, subject: str, callback: Callable[[Msg], None], queue: str | None = None) -> Subscription:
        """Call callback with every message on subject, across reconnects."""
        check_subject(subject)
        if queue is not None:
            check_subject(queue, "queue group")
        subscription = Subscription(subject, queue, next(self._sids), callback, self)
        self._subscriptions[subscription.sid] = subscription
        if self._protocol is not None:
            self._protocol.subscribe(subscription.sid, subject, queue)
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        live = self._subscriptions.pop(subscription.sid, None) is not None
        if live and self._protocol is not None:
            self._protocol.unsubscribe(subscription.sid)

    def publish(
        self,
        subject: str,
        payload: bytes,
        reply: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send a message now, or raise NotConnected."""
        if self._protocol is None:
            raise NotConnected("not connected to NATS")
        self._protocol.publish(subject, payload, reply, headers)

    # Requests

    def request(self, subject: str, payload: bytes = b"", timeout: float | None = None) -> Deferred[Msg]:
        """Publish with a reply subject of ours; fire with the first reply.

        Fails with RequestTimeout, or NoResponders when nobody listens on
        subject.  Cancelling it forgets the request.
        """
        check_subject(subject)
        token = str(next(self._tokens))
        if timeout is None:
            timeout = self._request_timeout
        result: Deferred[Msg] = Deferred(lambda _: self._forget(token))
        timer = self._reactor.callLater(timeout, self._expire, token, timeout)
        request = self._requests[token] = _Request(subject, result, timer)
        if self.connected:
            self._send_request(token, payload)
        else:
            request.connecting = self.when_connected()
            request.connecting.addCallback(lambda _: self._send_request(token, payload))
            request.connecting.addErrback(lambda f: f.trap(CancelledError))
        return result

    def _send_request(self, token: str, payload: bytes) -> None:
        request = self._requests[token]
        request.connecting = None
        if self._inbox is None:
            self._inbox = self.subscribe(self._inbox_prefix + "*", self._on_reply)
        try:
            self.publish(request.subject, payload, reply=self._inbox_prefix + token)
        except Exception as error:
            self._fail_request(token, error)

    def _on_reply(self, msg: Msg) -> None:
        request = self._requests.pop(msg.subject[len(self._inbox_prefix) :], None)
        if request is None:
            return
        request.stop_waiting()
        if msg.status == _NO_RESPONDERS:
            request.result.errback(NoResponders(f"no responders on {request.subject}"))
        else:
            request.result.callback(msg)

    def _expire(self, token: str, timeout: float) -> None:
        subject = self._requests[token].subject
        self._fail_request(token, RequestTimeout(f"no reply on {subject} within {timeout}s"))

    def _fail_request(self, token: str, error: Exception) -> None:
        request = self._requests.pop(token)
        request.stop_waiting()
        request.result.errback(error)

    def _forget(self, token: str) -> None:
        """The request was cancelled: drop it and its timer."""
        request = self._requests.pop(token, None)
        if request is not None:
            request.stop_waiting()
