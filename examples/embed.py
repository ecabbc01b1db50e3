"""monit inside a Twisted program of your own: its service in your application,
its resource mounted in your Site, and the program told of each job's end.

    JWT_SECRET=s python examples/embed.py --nats nats://127.0.0.1:4222 --port 8081
    curl -N -H "X-Auth-Token: $(monit-token --secret s --user me)" \
        'http://127.0.0.1:8081/monit/events?stream=demo1'
"""

import argparse
import os

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import MultiService
from twisted.internet import task
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.web.resource import Resource
from twisted.web.server import Site
from twisted.web.static import Data

from monit import Event, MonitService, Settings


def build(reactor, nats: str, port: int, secret: str) -> MultiService:
    """Your application: your own pages, with monit's streams under /monit/."""
    application = MultiService()
    monit = MonitService(reactor, Settings(nats=[nats], jwt_secret=secret, serve=False))
    monit.setServiceParent(application)

    log_job_ends(monit)

    root = Resource()
    root.putChild(b"", Data(b"my application\n", "text/plain"))
    root.putChild(b"monit", monit.resource)
    endpoint = TCP4ServerEndpoint(reactor, port, interface="127.0.0.1")
    StreamServerEndpointService(endpoint, Site(root)).setServiceParent(application)
    return application


def log_job_ends(monit: MonitService) -> None:
    """Act on jobs in process: when a job opens, wait for its close event and say so."""

    def opened(job: str, event: Event) -> None:
        if event.type in monit.settings.open_subjects:
            monit.when_closed(job).addCallback(ended, job)

    def ended(closing: Event, job: str) -> None:
        print(f"job {job} ended: {closing.type} {closing.data}", flush=True)

    monit.follow(opened)


def main(reactor, args: argparse.Namespace) -> Deferred[None]:
    application = build(reactor, args.nats, args.port, os.environ["JWT_SECRET"])
    application.startService()
    print(f"serving on 127.0.0.1:{args.port}", flush=True)
    stopped: Deferred[None] = Deferred()
    reactor.addSystemEventTrigger("before", "shutdown", application.stopService)
    return stopped


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--port", type=int, default=8081)
    task.react(main, [parser.parse_args()])
