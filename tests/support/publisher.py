"""The official nats-py client, in a thread of its own, as an independent publisher."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

import nats
from nats.aio.msg import Msg

_T = TypeVar("_T")


class Publisher:
    def __init__(self, url: str, **options: Any) -> None:
        """``options`` go to ``nats.connect`` as they are (``tls=``, ``user=``, …)."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._nc = self._run(nats.connect(url, allow_reconnect=True, max_reconnect_attempts=-1, **options))

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    def publish(self, subject: str, payload: bytes | dict) -> None:
        """Publish and flush, so the server has it when this returns."""
        if isinstance(payload, dict):
            payload = json.dumps(payload).encode()
        self._run(self._publish(subject, payload))

    async def _publish(self, subject: str, payload: bytes) -> None:
        await self._nc.publish(subject, payload)
        await self._nc.flush()

    def request(self, subject: str, payload: bytes, timeout: float = 5.0) -> bytes:
        """A request, as the engine makes them; the first reply's payload."""
        reply: Msg = self._run(self._nc.request(subject, payload, timeout=timeout))
        return reply.data

    def reply_to(self, subject: str, answer: bytes) -> None:
        """Answer every request on subject, as the engine's responder would."""

        async def respond(msg: Msg) -> None:
            await msg.respond(answer)

        self._run(self._nc.subscribe(subject, cb=respond))
        self._run(self._nc.flush())

    def close(self) -> None:
        self._run(self._nc.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
