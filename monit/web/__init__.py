"""The HTTP side: the Klein app, SSE responses, the site and its listener.

- ``app``: the routes (``/events``, ``/healthz``, ``/readyz``, ``/metrics``);
- ``stream``: one SSE response, and the keep-alive shared by all of them;
- ``_fastpath``: HTTP chunks written to a reader's socket past ``Request.write``, the one
  place that reads Twisted's private fields, checked at start-up;
- ``site`` and ``listener``: the HTTP site and where it listens.
"""
