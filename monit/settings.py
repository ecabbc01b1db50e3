"""Everything an operator can choose, in one table: default, help, parser and variable.

``Settings`` is the one source of monit's defaults. Each field that is an
operator's option carries an ``Option`` in its metadata: the command-line
name, how to read it from text, what the documentation and ``--help`` say
about it, and its environment variable (``MONIT_`` and the option's name).
``twistd monit``'s options, the environment and the documentation's table of
options are all made from it (``python -m monit.settings`` prints the table;
the documentation makes it at build time, docs/_ext/monit_options.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
from twisted.internet.endpoints import serverFromString

from monit.auth.keys import (
    HMAC_ALGORITHMS,
    algorithms_for,
    check_algorithms,
    describe,
    load_public_key,
    parse_algorithms,
)
from monit.auth.redis_connection import RedisTarget
from monit.nats.client import check_url
from monit.nats.nkeys import creds_file, seed_file
from monit.redact import redacted_url

MIB = 1024 * 1024
# The seed service's subjects: these open a job's inbox (and, with .done or
# .error after them, close it) ...
LIFECYCLE_SUBJECTS = (
    "service.create",
    "service.delete",
    "service.import",
    "build.create",
    "build.delete",
    "build.import",
    "environment.sync",
)
# ... and these carry its events, in their "messages" list.
DELIVER_SUBJECTS = ("monitor.user",)
ENV_PREFIX = "MONIT_"
_OPTION = "monit.option"


class SettingError(ValueError):
    """An option's value cannot be used; the message names the option."""


@attrs.frozen
class Option:
    """How an operator sets one field of ``Settings``."""

    help: str
    parse: Callable[[str], Any] | None  # None: a flag, on when given
    metavar: str = ""
    default_text: str = ""  # the default in words, where the value alone would not say it
    name: str = ""  # the command-line name, when it is not the field's
    legacy_env: tuple[str, ...] = ()  # older variables that still work, after MONIT_…
    repeatable: bool = False  # given once per value; in the environment, comma separated
    invert: bool = False  # a flag that turns the field off (--no-metrics)


@attrs.frozen
class OptionField:
    """An ``Option`` with the field it sets."""

    field: str
    option: Option
    default: Any

    @property
    def name(self) -> str:
        return self.option.name or self.field.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.replace("-", "_").upper()

    @property
    def is_flag(self) -> bool:
        return self.option.parse is None

    def default_words(self) -> str:
        if self.option.default_text:
            return self.option.default_text
        if self.is_flag:
            return "off"
        return _words(self.default)

    def parse(self, text: str, where: str) -> Any:
        """The value from an option's text; SettingError names ``where`` it came from."""
        parse = self.option.parse
        try:
            if parse is None:
                value = _boolean(text)
                return not value if self.option.invert else value
            if self.option.repeatable:
                return tuple(parse(item.strip()) for item in text.split(",") if item.strip())
            return parse(text)
        except (ValueError, TypeError) as error:
            raise SettingError(f"{where} {error}") from None


# Parsers: text to value, raising ValueError with a short reason.


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"must be true or false, not {text!r}")


def _number(kind: type[int] | type[float], minimum: float = 0, inclusive: bool = False) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"must be {'a whole number' if kind is int else 'a number'}, not {text!r}") from None
        if value < minimum or (value == minimum and not inclusive):
            raise ValueError(f"must be {'at least' if inclusive else 'greater than'} {minimum:g}")
        return value

    parse.__name__ = f"{kind.__name__}_parser"
    return parse


def _text(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


def _nats_urls(text: str) -> tuple[str, ...]:
    urls = tuple(url.strip() for url in text.split(",") if url.strip())
    if not urls:
        raise ValueError("needs at least one URL")
    for url in urls:
        check_url(url)
    return urls


def _nkey_file(text: str) -> str:
    seed_file(text)
    return text


def _creds_file(text: str) -> str:
    creds_file(text)
    return text


def _pem_file(text: str) -> str:
    path = Path(text)
    if not path.is_file():
        raise ValueError(f"{text} is not a file")
    try:
        head = path.read_bytes()
    except OSError as error:
        raise ValueError(f"cannot read {text}: {error.strerror}") from None
    if b"-----BEGIN " not in head:
        raise ValueError(f"{text} is not PEM (no -----BEGIN line)")
    return text


def _subjects(text: str) -> tuple[str, ...]:
    subjects = tuple(subject.strip() for subject in text.split(",") if subject.strip())
    for subject in subjects:
        if any(char.isspace() for char in subject) or "*" in subject or ">" in subject:
            raise ValueError(f"{subject!r} is not a plain NATS subject")
    return subjects


def _http_url(text: str) -> str:
    """An auth service URL, without credentials before the host (see the message)."""
    if not text.startswith(("http://", "https://")):
        raise ValueError(f"{redacted_url(text)!r} must be an http:// or https:// URL")
    try:
        parts = urlsplit(text)
    except ValueError:
        raise ValueError(f"{redacted_url(text)!r} is not a URL") from None
    if "@" in parts.netloc:
        raise ValueError(
            f"{redacted_url(text)!r} must not carry a user or password: the token goes to "
            "the auth service as Authorization: Bearer, so Basic credentials cannot; put the "
            "service's own key in the query (?apikey=…), which monit never logs"
        )
    return text


def _jwks_url(text: str) -> str:
    """A JWKS URL: http(s), with a host, and no credentials (a JWKS is public)."""
    if not text.startswith(("http://", "https://")):
        raise ValueError(f"{redacted_url(text)!r} must be an http:// or https:// URL")
    try:
        parts = urlsplit(text)
        port_is_a_number = parts.port is None or parts.port >= 0
    except ValueError:
        port_is_a_number = False
    if not port_is_a_number:
        raise ValueError(f"{redacted_url(text)!r} is not a URL")
    if not parts.hostname:
        raise ValueError(f"{redacted_url(text)!r} has no host")
    if "@" in parts.netloc:
        raise ValueError(f"{redacted_url(text)!r} must not carry a user or password: a JWKS is public")
    return text


def _valid_jwks_url(instance: object, attribute: object, value: str | None) -> None:
    if value is not None:
        _jwks_url(value)


def _public_key_file(text: str) -> str:
    load_public_key(text)
    return text


def _algorithms(text: str) -> tuple[str, ...]:
    return parse_algorithms(text)


def _valid_auth_url(instance: object, attribute: object, value: str | None) -> None:
    """Settings made in Python are held to what --auth-url accepts."""
    if value is not None:
        _http_url(value)


def _redis_url(text: str) -> str:
    RedisTarget.from_url(text)
    return text


def _valid_auth_redis(instance: object, attribute: object, value: str | None) -> None:
    """Settings made in Python are held to what --auth-redis accepts."""
    if value is not None:
        _redis_url(value)


def _shown_url(url: str | None) -> str:
    return repr(url if url is None else redacted_url(url))


def _origin(text: str) -> str:
    if text != "*" and "://" not in text:
        raise ValueError(f"{text!r} must be like https://host[:port], or *")
    return text.rstrip("/")


def _endpoint(text: str) -> str:
    """A Twisted server endpoint string, checked by parsing it (nothing listens yet)."""
    try:
        serverFromString(None, text)  # parsed only: nothing listens, so no reactor is needed
    except (ValueError, TypeError, KeyError) as error:
        raise ValueError(f"{text!r} is not an endpoint: {error}") from None
    return text


def _words(value: object) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int) and value >= MIB and value % MIB == 0:
        return f"{value // MIB} MiB"
    if isinstance(value, float) and value.is_integer():
        return f"{int(value)}"
    if isinstance(value, int):
        return f"{value:,}" if value >= 10_000 else str(value)
    if isinstance(value, (tuple, frozenset)):
        return ",".join(f"`{item}`" for item in value) or "none"
    return f"`{value}`"


def _option(default: Any, help: str, parse: Callable[[str], Any] | None = None, **option: Any) -> Any:
    """An attrs field that is an operator's option."""
    converter = option.pop("converter", None)
    validator = option.pop("validator", None)
    secret = option.pop("secret", False)
    shown = option.pop("shown", not secret)  # a bool, or a function giving the repr
    return attrs.field(
        default=default,
        converter=converter,
        validator=validator,
        repr=shown,
        metadata={_OPTION: Option(help, parse, **option)},
    )


def _amount(default: float, help: str, metavar: str = "SECONDS", **option: Any) -> Any:
    """An option that is a number above zero, checked when Settings is made in Python too."""
    parse = _number(type(default), 0)
    return _option(default, help, parse, metavar=metavar, validator=attrs.validators.gt(0), **option)


@attrs.frozen
class Settings:
    """Everything an operator can choose; ``twistd monit --help`` documents each.

    Fields without an ``Option`` are for programs that embed monit.
    """

    nats: tuple[str, ...] = _option(
        ("nats://127.0.0.1:4222",),
        "NATS servers, tried in turn, and those a server says its cluster has; credentials in "
        "the URL (`nats://user:pass@host:4222`, `nats://token@host:4222`); `tls://` for TLS. "
        "monit reconnects with exponential backoff and jitter, and re-subscribes.",
        _nats_urls,
        metavar="URL[,URL…]",
        legacy_env=("NATS_URI",),
        converter=tuple,
    )
    nats_ping_interval: float = _amount(
        3.0,
        "how often monit PINGs NATS; with `--nats-max-pings-out`, how soon a frozen server is noticed "
        "(3 × 3 s: about 9 s), and `/readyz` says 503",
    )
    nats_max_pings_out: int = _amount(2, "PINGs left unanswered before monit drops the connection and reconnects", "N")
    nats_tls_ca: str | None = _option(
        None,
        "the CA (PEM) a NATS server's certificate must be signed by; implies TLS",
        _pem_file,
        metavar="FILE",
        default_text="the system's CAs, for `tls://`",
    )
    nats_tls_cert: str | None = _option(
        None,
        "the client certificate (PEM) monit shows NATS, with `--nats-tls-key`; implies TLS",
        _pem_file,
        metavar="FILE",
    )
    nats_tls_key: str | None = _option(None, "its private key (PEM)", _pem_file, metavar="FILE")
    nats_nkey: str | None = _option(
        None,
        "a file holding the NKey seed (`SU…`) of the NATS user monit is",
        _nkey_file,
        metavar="SEED_FILE",
    )
    nats_creds: str | None = _option(
        None,
        "a `.creds` file (user JWT and seed, as `nsc` writes it) for a NATS server in operator mode",
        _creds_file,
        metavar="FILE",
    )
    jetstream: bool = _option(
        False,
        "keep every job's events in a JetStream stream: instances share ids and histories, "
        "and restarts lose nothing (see Running several instances)",
    )
    jetstream_stream: str = _option(
        "MONIT",
        "the JetStream stream monit uses (made if missing, never changed if it exists)",
        _text,
        metavar="NAME",
    )
    jetstream_recreate: bool = _option(
        False,
        "make the stream again whenever it is gone, even one an operator made (without it, monit makes "
        "it again only if monit made it; else `/readyz` says `503`, naming it, until someone does)",
    )
    jetstream_replicas: int = _amount(1, "replicas of the stream monit makes (3 in a 3-node cluster)", "N")
    jetstream_max_age: float = _amount(
        86_400.0,
        "how long the stream monit makes keeps a message: at least `--retention` plus the longest "
        "job (see Running several instances)",
    )
    embedded_nats: bool = _option(
        False,
        "start `nats-server` (from the `embedded` extra) on loopback and use it; for development and demos",
    )
    embedded_nats_port: int = _option(
        0, "its port", _number(int, 0, inclusive=True), metavar="N", default_text="any free port"
    )
    embedded_nats_store: str | None = _option(
        None,
        "where the embedded nats-server keeps JetStream's files",
        _text,
        metavar="DIR",
        default_text="a temporary folder, removed at exit",
    )
    listen: str | None = _option(
        None,
        "a Twisted endpoint string: `tcp:8080:interface=127.0.0.1`, or TLS with "
        "`ssl:8443:privateKey=key.pem:certKey=cert.pem`",
        _endpoint,
        metavar="ENDPOINT",
        default_text='ask NATS `config.get.monitor` (reply `{"host": …, "port": …}`), else `tcp:8080`',
    )
    jwt_secret: str | None = _option(
        None,
        "the HMAC secret (HS256) tokens are checked with",
        _text,
        metavar="S",
        legacy_env=("JWT_SECRET",),
        secret=True,
        default_text="ask NATS `config.get.jwt_token` (unless `--auth-url`, `--auth-redis` or keys are given)",
    )
    jwt_jwks_url: str | None = _option(
        None,
        "check JWTs signed by an identity provider with the public keys at its JWKS URL (below); "
        "fetched at start, every 10 minutes, and when a token names an unknown `kid` (at most "
        "once a second); redirects are not followed",
        _jwks_url,
        metavar="URL",
        validator=_valid_jwks_url,
        shown=_shown_url,
    )
    jwt_public_key: str | None = _option(
        None,
        "check JWTs with this public key: a PEM file holding an RSA, EC or Ed25519 public key or a certificate",
        _public_key_file,
        metavar="FILE",
    )
    jwt_algorithms: tuple[str, ...] | None = _option(
        None,
        "the JWT algorithms accepted, of `HS256`, `HS384`, `HS512` (with a secret) or `RS256`…`RS512`, "
        "`PS256`…`PS512`, `ES256`, `ES384`, `ES512`, `EdDSA` (with keys); never `none`",
        _algorithms,
        metavar="ALG,…",
        converter=attrs.converters.optional(tuple),
        default_text="`HS256` with a secret; with keys, all those the key's kind suits",
    )
    jwt_audience: str | None = _option(
        None,
        "a JWT's `aud` must name this; without it, a JWT that has an `aud` is refused (RFC 7519)",
        _text,
        metavar="AUD",
    )
    jwt_issuer: str | None = _option(None, "a JWT's `iss` must be this", _text, metavar="ISS")
    auth_url: str | None = _option(
        None,
        "ask this URL about each token (below); no `user:password@` (refused at start), "
        "and its query values are never logged",
        _http_url,
        metavar="URL",
        validator=_valid_auth_url,
        shown=_shown_url,
    )
    auth_redis: str | None = _option(
        None,
        "look each token up in this Redis, as the Go service did: `GET token` gives the user "
        "(below); `redis://:password@host:port/db` for a password, `redis://user:password@…` for an "
        "ACL user, `rediss://` for TLS; the password is never logged",
        _redis_url,
        metavar="URL",
        validator=_valid_auth_redis,
        shown=_shown_url,
    )
    auth_redis_tls_ca: str | None = _option(
        None,
        "the CA (PEM) a `rediss://` server's certificate must be signed by",
        _pem_file,
        metavar="FILE",
        default_text="the system's CAs",
    )
    auth_timeout: float = _amount(
        2.0,
        "how long a token check may take; also how long a connection may take to send its request headers",
    )
    auth_cache_ttl: float = _amount(
        30.0,
        "how long a valid answer is kept (never past a JWT's `exp`, nor past `--auth-recheck`); "
        "refusals are kept a few seconds",
    )
    auth_concurrency: int = _amount(
        100,
        "token checks in flight to the auth service (or Redis) at once; past it, a new check is a `503` "
        "at once (a cached answer, or a token already being checked, is not a new check)",
        "N",
    )
    auth_recheck: float = _option(
        300.0,
        "ask the auth service (or Redis) again about an open stream's token this often, and end the "
        "stream if the token is now refused (below); `0`: never",
        _number(float, 0, inclusive=True),
        metavar="SECONDS",
        validator=attrs.validators.ge(0),
    )
    require_exp: bool = _option(False, "refuse a JWT without `exp` (`401`)")
    insecure_no_auth: bool = _option(
        False, "anyone may watch any stream, without a token; logged loudly; for local use only"
    )
    allow_query_token: bool = _option(
        False,
        "also take the token from `?token=` or the `monit_token` cookie, for browsers (below)",
    )
    cors_origins: frozenset[str] = _option(
        frozenset(),
        "repeatable; pages from this origin (`https://app.example.com`) may read streams, with "
        "credentials; `*` lets any page read them without credentials",
        _origin,
        metavar="ORIGIN",
        name="cors-origin",
        repeatable=True,
        converter=frozenset,
    )
    grace: float = _amount(10.0, "how long a finished job's stream stays open, so late readers still get its end")
    retention: float = _amount(
        600.0, "how long a closed inbox is kept so a reconnecting reader gets its end (then `204`)"
    )
    expiry: float = _amount(300.0, "how long an inbox that no job opened and nobody watches lives on")
    abandon: float = _amount(
        3600.0,
        "how long an opened inbox whose close never comes lives on in silence with nobody watching",
    )
    stall_after: float = _option(
        300.0,
        "an open job that publishes nothing this long is stalled: its streams get `monit.stalled`, "
        "and `monit.resumed` when it speaks again (see Finding jobs); `0`: never",
        _number(float, 0, inclusive=True),
        metavar="SECONDS",
        validator=attrs.validators.ge(0),
    )
    history: int = _amount(1000, "events an inbox keeps for late and reconnecting readers", "N")
    heartbeat: float = _amount(15.0, "keep-alive comment interval, so proxies keep idle streams open")
    retry_ms: int = _amount(
        3000,
        "the SSE `retry:` a stream starts with: how long clients wait before reconnecting",
        "MS",
        name="retry",
    )
    base64: bool = _option(False, "send each `data:` payload base64-encoded, as the Go service's `EncodeBase64` did")
    max_pending: int = _amount(
        MIB,
        "a reader whose socket holds more unsent bytes than this is dropped, so slow readers cannot grow the process",
        "BYTES",
    )
    max_streams: int = _amount(50_000, "concurrent SSE responses; past it, refused (below)", "N")
    max_jobs_per_stream: int = _amount(
        100, "jobs one `/events` request may name (`?stream=a&stream=b…`); past it, `400`", "N"
    )
    max_inboxes: int = _amount(
        100_000,
        "inboxes held, including those readers created; at it, a new job takes the place of "
        "unwatched ones (reader-made first, then closed, then the least recently active), and only "
        "when all are watched is it counted and skipped",
        "N",
    )
    max_connections: int = _amount(
        60_000, "HTTP connections open at once; past it, a new one gets `503` and is closed", "N"
    )
    max_connections_per_ip: int = _option(
        0,
        "HTTP connections from one client address; past it, `503`. Off (0) by default: thousands of "
        "users can share one address behind NAT or a proxy; set it where monit faces the internet",
        _number(int, 0, inclusive=True),
        metavar="N",
        default_text="off",
    )
    max_inboxes_per_user: int = _amount(
        1000,
        "inboxes one user's requests may make that no job has opened; past it, refused",
        "N",
    )
    memory_budget: int = _amount(
        256 * MIB,
        "bytes the histories of all inboxes may hold together; past it, the oldest events of "
        "the least recently active inboxes go first (readers who resume into them get the gap notice)",
        "BYTES",
    )
    max_payload: int = _amount(MIB, "larger NATS messages are logged, counted and skipped", "BYTES")
    open_subjects: tuple[str, ...] = _option(
        LIFECYCLE_SUBJECTS,
        "subjects that open an inbox; each followed by `.done` or `.error` closes it",
        _subjects,
        metavar="S,…",
        default_text="the seed's seven (below)",
        converter=tuple,
    )
    deliver_subjects: tuple[str, ...] = _option(
        DELIVER_SUBJECTS,
        "subjects whose `messages` list holds a job's events",
        _subjects,
        metavar="S,…",
        converter=tuple,
    )
    metrics: bool = _option(True, "do not serve `/metrics`", name="no-metrics", invert=True, default_text="metrics on")
    metrics_public: bool = _option(False, "serve `/metrics` without a token")

    # For embedding only.
    serve: bool = True  # False: the embedding program mounts monit.resource in a Site of its own
    request_timeout: float = 2.0  # seconds a NATS request (listen address, JWT secret) may take
    jetstream_check: float = 5.0  # seconds between looks at the stream (gone, made anew, full) and checkpoints
    jetstream_checkpoint: bool = True  # False: always replay the whole stream, ignoring peers' checkpoints
    jwks_min_refetch: float = 1.0  # seconds between JWKS fetches that tokens of unknown kids may cause
    jwks_refresh: float = 600.0  # seconds between JWKS fetches nobody asked for

    def __attrs_post_init__(self) -> None:
        if (self.nats_tls_cert is None) != (self.nats_tls_key is None):
            raise ValueError("--nats-tls-cert and --nats-tls-key go together: give both, or neither")
        if self.nats_nkey is not None and self.nats_creds is not None:
            raise ValueError("--nats-nkey and --nats-creds are two ways to say who monit is: give one")
        self._check_jwt()
        if self.jetstream and self.jetstream_max_age < self.retention + self.abandon:
            raise ValueError(
                f"--jetstream-max-age ({self.jetstream_max_age:g} s) must be at least --retention plus "
                f"--abandon ({self.retention + self.abandon:g} s): a replay must find a whole job"
            )
        if self.auth_redis is not None and self.auth_url is not None:
            raise ValueError("--auth-redis and --auth-url are two places to ask about a token: give one")
        if self.auth_redis is not None and self.insecure_no_auth:
            raise ValueError("--insecure-no-auth checks no token: it does not go with --auth-redis")
        if self.auth_redis_tls_ca is not None and not (self.auth_redis or "").startswith("rediss://"):
            raise ValueError("--auth-redis-tls-ca is for a rediss:// --auth-redis (Redis over TLS)")

    def _check_jwt(self) -> None:
        """The JWT options make one way of checking JWTs, or say what clashes."""
        with_keys = self.jwt_jwks_url is not None or self.jwt_public_key is not None
        if self.jwt_jwks_url is not None and self.jwt_public_key is not None:
            raise ValueError("--jwt-jwks-url and --jwt-public-key are two ways to give the keys: give one")
        if with_keys and self.jwt_secret:
            raise ValueError(
                "--jwt-secret (or JWT_SECRET) cannot go with --jwt-jwks-url or --jwt-public-key: "
                "tokens of either kind would look alike; give one"
            )
        service = "--auth-url" if self.auth_url is not None else "--auth-redis" if self.auth_redis else None
        if service is not None and not (with_keys or self.jwt_secret):
            for name, value in (
                ("algorithms", self.jwt_algorithms),
                ("audience", self.jwt_audience),
                ("issuer", self.jwt_issuer),
            ):
                if value is not None:
                    raise ValueError(f"--jwt-{name} is for JWTs, and with only {service} no JWT is checked here")
        if self.jwt_algorithms is not None:
            self._check_jwt_algorithms(self.jwt_algorithms, with_keys)

    def _check_jwt_algorithms(self, names: tuple[str, ...], with_keys: bool) -> None:
        """Known names, never none; HMAC ones with a secret only, the others with keys only."""
        try:
            check_algorithms(names)
        except ValueError as error:
            raise ValueError(f"--jwt-algorithms {error}") from None
        for name in names:
            if with_keys and name in HMAC_ALGORITHMS:
                raise ValueError(f"--jwt-algorithms {name} needs --jwt-secret: a public key is never an HMAC secret")
            if not with_keys and name not in HMAC_ALGORITHMS:
                raise ValueError(f"--jwt-algorithms {name} needs --jwt-public-key or --jwt-jwks-url")
        if self.jwt_public_key is not None:
            key = load_public_key(self.jwt_public_key)
            for name in names:
                if name not in algorithms_for(key):
                    raise ValueError(
                        f"--jwt-algorithms {name} does not suit --jwt-public-key {self.jwt_public_key} "
                        f"({describe(key)})"
                    )


def options() -> Iterator[OptionField]:
    """The operator's options, in the order ``--help`` and the documentation give them."""
    for field in attrs.fields(Settings):
        option = field.metadata.get(_OPTION)
        if option is not None:
            yield OptionField(field.name, option, field.default)


def from_sources(given: Mapping[str, str | Sequence[str] | bool], environ: Mapping[str, str]) -> Settings:
    """Settings from the command line's values (by option name), else the environment.

    ``given`` holds what the command line gave: text, a list of texts for a
    repeatable option, True for a flag. Raises SettingError naming the option
    or variable whose value is wrong.
    """
    values: dict[str, Any] = {}
    for option in options():
        value = _from_command_line(option, given.get(option.name))
        if value is None:
            value = _from_environment(option, environ)
        if value is not None:
            values[option.field] = value
    return Settings(**values)


def _from_command_line(option: OptionField, raw: str | Sequence[str] | bool | None) -> Any:
    if option.is_flag:
        return (not option.option.invert) if raw else None
    if raw is None or raw == []:
        return None
    where = f"--{option.name}"
    if option.option.repeatable and not isinstance(raw, str):
        raw = ",".join(raw)  # type: ignore[arg-type]
    return option.parse(str(raw), where)


def _from_environment(option: OptionField, environ: Mapping[str, str]) -> Any:
    for name in (option.env, *option.option.legacy_env):
        text = environ.get(name)
        if text is not None and text.strip():
            return option.parse(text, name)
    return None


def options_table() -> str:
    """The table of options (Markdown) the documentation's options page shows, made from ``Settings``."""
    rows = [
        "| option | environment | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    for option in options():
        usage = f"--{option.name} {option.option.metavar}".strip()
        env = ", ".join(f"`{name}`" for name in (option.env, *option.option.legacy_env))
        rows.append(f"| `{usage}` | {env} | {option.default_words()} | {option.option.help} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.stdout.write(options_table())
