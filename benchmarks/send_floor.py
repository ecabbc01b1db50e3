"""The floor under CPU per delivery: what one ``socket.send`` of an event costs, with nothing else.

``python benchmarks/send_floor.py [--readers 1000] [--rounds 200] [--size 260]``

A forked reader process holds ``--readers`` loopback TCP connections and reads
them all (epoll); this process sends one event-sized write to each, round
after round, as monit does for one event per write, and reports its own CPU
per send. On loopback a send also runs the receiving side of TCP on the
sender's core, so this is the least any server in Python (or C) can spend per
delivery that is one write; monit's ``cpu-per-delivery`` figure is this plus
its own Python per reader. Only coalescing, several events to a write, goes
below it.
"""

from __future__ import annotations

import argparse
import os
import select
import socket
import time


def read_all(port: int, readers: int, expected: int) -> None:
    """The reader process: connect, then read until every byte has come."""
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(readers)]
    poller = select.epoll()
    by_fd = {}
    for client in clients:
        client.setblocking(False)
        poller.register(client.fileno(), select.EPOLLIN)
        by_fd[client.fileno()] = client
    received = 0
    while received < expected:
        for fd, _ in poller.poll(1):
            received += len(by_fd[fd].recv(65536))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--size", type=int, default=260, help="bytes a write: an event's frame as monit sends it")
    args = parser.parse_args()
    event = b"x" * args.size
    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    child = os.fork()
    if child == 0:
        listening.close()
        read_all(port, args.readers, args.readers * args.rounds * args.size)
        os._exit(0)
    sockets = [listening.accept()[0] for _ in range(args.readers)]
    for sock in sockets:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    started = time.process_time()
    for _ in range(args.rounds):
        for sock in sockets:
            sock.send(event)
        time.sleep(0.05)  # the readers drain, as between events
    spent = time.process_time() - started
    os.waitpid(child, 0)
    print(f"CPU per send: {spent / (args.readers * args.rounds) * 1e6:.2f} µs ({args.readers} readers, {args.size} B)")


if __name__ == "__main__":
    main()
