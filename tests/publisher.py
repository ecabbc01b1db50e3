"""The official nats-py client, in a thread of its own, as an independent publisher."""
from __future__ import annotations

import asyncio
import json
import threading
from typing import Any

import nats


class Publisher:
    def __init__(self, url: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._nc = self._run(nats.connect(url, allow_reconnect=True, max_reconnect_attempts=-1))

    def _run(self, coroutine) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    def publish(self, subject: str, payload: bytes | dict) -> None:
        """Publish and flush, so the server has it when this returns."""
        if isinstance(payload, dict):
            payload = json.dumps(payload).encode()
        self._run(self._publish(subject, payload))

    async def _publish(self, subject: str, payload: bytes) -> None:
        await self._nc.publish(subject, payload)
        await self._nc.flush()

    def close(self) -> None:
        self._run(self._nc.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
