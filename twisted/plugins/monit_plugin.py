"""twistd plugin: ``twistd monit``; the real work lives in monit.tap, loaded lazily."""

from twisted.application.service import ServiceMaker

monit = ServiceMaker(
    "monit",
    "monit.tap",
    "Gather NATS job progress into inboxes and stream them over Server-Sent Events.",
    "monit",
)
