"""The HTTP side: the Klein app, SSE responses, the site and its listener.

- ``app``: the routes (``/events``, ``/healthz``, ``/readyz``, ``/metrics``);
- ``stream``: one SSE response, and the keep-alive shared by all of them;
- ``_fastpath``: HTTP chunks written to a reader's socket past ``Request.write``, checked at
  start-up (the private fields it reads are behind ``monit._twisted.tcp_buffer``);
- ``lean``: an HTTP/1.1 stream's connection once its headers are out, taken over from
  twisted.web so its channel and request can go (``monit._twisted.takeover``);
- ``errors``: the JSON body of every HTTP error;
- ``site`` and ``listener``: the HTTP site and where it listens.
"""
