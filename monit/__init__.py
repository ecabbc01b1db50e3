"""monit: a NATS-to-SSE gateway for workflow progress."""
