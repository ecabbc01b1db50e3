"""What the auth parts are told by the service: the auth options alone, not the whole settings."""

from __future__ import annotations

import attrs


@attrs.frozen(kw_only=True)
class AuthOptions:
    """How tokens are checked (each field is the option of the same name, ``monit.settings``)."""

    insecure_no_auth: bool
    jwt_secret: str | None
    jwt_public_key: str | None
    jwt_jwks_url: str | None
    jwt_algorithms: tuple[str, ...] | None
    jwt_audience: str | None
    jwt_issuer: str | None
    require_exp: bool
    auth_url: str | None
    auth_redis: str | None
    auth_redis_tls_ca: str | None
    auth_timeout: float
    auth_concurrency: int
    auth_cache_ttl: float
    auth_recheck: float
    jwks_min_refetch: float
    jwks_refresh: float
    request_timeout: float  # a NATS request's: the JWT secret, when it is asked of NATS
