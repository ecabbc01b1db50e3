"""``twistd monit``: options made from ``Settings``, and the service they build."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import Any

import twisted
from twisted.application.service import IService
from twisted.internet.interfaces import IReactorCore, IReactorFromThreads
from twisted.logger import Logger
from twisted.python import usage

from monit import __version__
from monit import settings as settings_table
from monit.service import MonitService
from monit.settings import OptionField, SettingError, Settings


def _help(option: OptionField) -> str:
    """An option's --help line: what the README says, its default and its variable."""
    text = option.option.help.replace("`", "")
    default = option.default_words().replace("`", "")
    return f"{text} (default: {default}; env {option.env})"


def _repeatable(option: OptionField) -> Callable[[usage.Options, str], None]:
    def collect(self: usage.Options, value: str) -> None:
        self[option.name].append(value)

    collect.__doc__ = _help(option)
    return collect


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "Gathers the progress a workflow engine publishes to NATS into per-job "
        "inboxes and streams them to authenticated users as Server-Sent Events: "
        "GET /events?stream=ID with X-Auth-Token or Authorization: Bearer. "
        "Every option can also be set in the environment variable named beside it; "
        "the command line wins."
    )
    optFlags: list[list[Any]] = [
        [option.name, None, _help(option)] for option in settings_table.options() if option.is_flag
    ]
    optParameters: list[list[Any]] = [
        [option.name, None, None, _help(option)]
        for option in settings_table.options()
        if not option.is_flag and not option.option.repeatable
    ]

    def __init__(self) -> None:
        super().__init__()
        for option in settings_table.options():
            if option.option.repeatable:
                self[option.name] = []
        self.settings = Settings()

    def parseOptions(self, options: list[str] | None = None) -> None:
        """A wrong option is one line on stderr, not twistd's page of usage."""
        try:
            super().parseOptions(options)
        except usage.UsageError as error:
            sys.exit(f"monit: {error} (twistd monit --help lists the options)")

    def postOptions(self) -> None:
        try:
            self.settings = settings_table.from_sources(self, os.environ)
        except (SettingError, ValueError, TypeError) as error:
            sys.exit(f"monit: {error}")

    def opt_version(self) -> None:
        """Print monit's version and exit."""
        print(f"monit {__version__} (Twisted {twisted.__version__})")
        sys.exit(0)


for _repeated in settings_table.options():
    if _repeated.option.repeatable:
        setattr(Options, "opt_" + _repeated.name.replace("-", "_"), _repeatable(_repeated))


def fatal(line: str) -> None:
    """A startup problem: one clear line, then the process stops with status 1.

    The line goes to the real standard error (twistd has put a logger in
    sys.stderr's place); only a daemon, whose standard error leads nowhere,
    logs it instead. Once, either way.
    """
    from twisted.internet import reactor

    if _leads_nowhere(2):
        Logger().critical("{line}", line=line)
    else:
        print(line, file=sys.__stderr__, flush=True)
    reactor.addSystemEventTrigger("after", "shutdown", os._exit, 1)
    reactor.callWhenRunning(reactor.stop)


def _leads_nowhere(fd: int) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(os.devnull))
    except OSError:
        return True


def _stop_cleanly_on_signals(reactor: IReactorCore) -> None:
    """SIGTERM and SIGINT are the normal way to stop monit: exit 0, not by the signal.

    twistd would re-raise the signal after shutdown; installed once the reactor
    runs, these handlers replace its own.
    """

    def stop() -> None:
        if reactor.running:
            reactor.stop()

    def handler(signum: int, frame: object) -> None:
        Logger().info("received signal {signum}, stopping", signum=signum)
        IReactorFromThreads(reactor).callFromThread(stop)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)


def makeService(options: Options) -> IService:
    from twisted.internet import reactor

    reactor.callWhenRunning(_stop_cleanly_on_signals, reactor)
    try:
        return MonitService(reactor, options.settings, on_fatal=fatal)
    except (
        RuntimeError,
        ValueError,
    ) as error:  # no nats-server or its port taken; NATS TLS files; a Twisted monit cannot use
        sys.exit(f"monit: {error}")
