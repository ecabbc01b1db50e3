"""Publish a simulated job to NATS, as a workflow engine would: open, progress, done.

    python examples/demo_job.py --nats nats://127.0.0.1:4222 --job demo1

Watch it with the curl line that ``make run`` prints.
"""

import argparse
import json

from twisted.internet import defer, task
from twisted.internet.defer import ensureDeferred

from monit.nats.client import NATSClient

PROGRESS = [
    ("INFO", "Validating the definition of web-env"),
    ("INFO", "Creating network web-env-net (10.1.0.0/24)"),
    ("INFO", "Network web-env-net created"),
    ("INFO", "Creating firewall web-env-sg"),
    ("WARNING", "Firewall rule 22/tcp is open to 0.0.0.0/0"),
    ("INFO", "Firewall web-env-sg created"),
    ("INFO", "Creating instances web-1, web-2"),
    ("ERROR", "Instance web-2 failed to boot; retrying"),
    ("INFO", "Instance web-2 created on second attempt"),
    ("INFO", "Instances web-1, web-2 created"),
    ("INFO", "Creating load balancer web-env-lb"),
    ("SUCCESS", "Load balancer web-env-lb created"),
]


CONNECT_TIMEOUT = 5.0


async def publish_job(reactor, url: str, job: str, interval: float) -> None:
    client = NATSClient([url], reactor, request_timeout=2.0, name="monit-demo")
    client.startService()
    try:
        await client.when_connected().addTimeout(CONNECT_TIMEOUT, reactor)
    except defer.TimeoutError:
        await client.stopService()
        raise SystemExit(
            f"demo: no NATS answers at {url} within {CONNECT_TIMEOUT:g} s: start one with 'make run'"
        ) from None
    service = f"web-env-{job}"

    def send(subject: str, document: dict) -> None:
        client.publish(subject, json.dumps(document).encode())
        print(f"{subject}: {json.dumps(document)}")

    send("service.create", {"id": job, "service": service, "name": "web-env"})
    for level, body in PROGRESS:
        await task.deferLater(reactor, interval, lambda: None)
        send("monitor.user", {"service": service, "messages": [{"body": body, "level": level}]})
    send("service.create.done", {"id": job, "service": service, "status": "done"})
    await client.stopService()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--job", default="demo1")
    parser.add_argument("--interval", type=float, default=0.4, help="seconds between messages")
    args = parser.parse_args()
    task.react(lambda reactor: ensureDeferred(publish_job(reactor, args.nats, args.job, args.interval)))


if __name__ == "__main__":
    main()
