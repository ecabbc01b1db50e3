"""Every use monit makes of a name Twisted keeps private, behind one wall.

One module per use, each with a ``check()`` that tries it on the installed
Twisted (a real object, or a real socket pair) and says why it does not fit,
or None. The rest of monit reaches Twisted's privates only through these
modules (``tests/unit/test_private_names.py`` holds it to that).

- ``tcp_buffer``: what a TCP transport has not sent yet, and sending past its
  queue (the streams' fast path, ``monit.web._fastpath``);
- ``takeover``: a stream taking its TCP connection over from ``HTTPChannel``
  once its headers are out (``monit.web.lean``);
- ``head_counts``: the size and header count of the request head
  ``HTTPChannel`` is reading (``monit.web.site``);
- ``key_sharing``: the attributes ``HTTPChannel`` and its TCP transport set
  only later, which ``monit.tuning`` sets early to save memory;
- ``quiet_logs``: ``HTTPChannel`` and ``ClientService`` without their line per
  timed-out client or retry;
- ``early_disconnect``: ``ClientService`` surviving a connection that closes
  while it is being prepared;
- ``trust_root``: the type of a TLS trust root, named only privately.

``seam.fits`` runs a module's check once a process. Where there is a public
way, a misfit is one warning naming the Twisted version and monit takes that
way; where there is none, monit refuses to start with one line.
``startup.check_all`` runs them all when ``MonitService`` is made; the fast
paths' checks (``tcp_buffer``, ``takeover``) run when the streams start,
which choose how they write.
"""
