"""Who is asking, and may they watch: tokens, verifiers and access per stream.

- ``interface``: what every verifier promises (``ITokenVerifier``), the
  ``Identity`` it yields, and the two ways it refuses;
- ``request``: where a request carries its token;
- ``jwt_verifier``: HMAC JWTs (HS256), with a secret given or fetched from NATS,
  and the claim checks every JWT goes through;
- ``signed``: JWTs signed by an identity provider, checked with its public key;
- ``keys``: public keys, the algorithms each suits, and reading one from PEM;
- ``jwks``: an identity provider's keys, fetched from its JWKS URL and kept;
- ``body``: an HTTP body read up to a limit, given up at the deadline;
- ``remote``: an auth service asked over HTTP with treq;
- ``redis_verifier``: a session store asked with ``GET token``, as the Go service did;
- ``bound``: at most so many checks of an auth service or Redis in flight;
- ``cache``: remembered answers, one check in flight per token;
- ``modes``: the verifier an operator's settings call for;
- ``recheck``: open streams' tokens asked about again, so a revoked one ends.
"""
