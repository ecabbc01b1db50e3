"""The HTTP side: the Klein app, SSE streams and their framing, the site and its listener.

- ``app``: the routes (``/events``, ``/healthz``, ``/readyz``, ``/metrics``);
- ``stream``: one SSE response, and the keep-alive shared by all of them;
- ``sse``: SSE framing, once per event;
- ``_fastpath``: writing to a reader's socket past ``Request.write``, the one
  place that reads Twisted's private fields, checked at start-up;
- ``site`` and ``listener``: the HTTP site and where it listens.
"""
