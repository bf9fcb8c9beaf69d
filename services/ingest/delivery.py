"""Getting replies to the customer's open connections, whichever replica holds them.

Replies reach ingest through its consumer group, so one replica consumes each reply, but the
customer's WebSocket may be open on another. The consuming replica publishes the frame on a
Redis channel per conversation; every replica listens on the pattern and forwards frames to
the sockets it holds. Live streaming is best-effort by nature; the record of every reply is
memory's, in PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import defaultdict, deque
from typing import Any

import redis.asyncio as aioredis
from starlette.websockets import WebSocket

log = logging.getLogger(__name__)


class ConnectionHub:
    """The WebSockets this replica holds, by conversation.

    Deltas and final replies travel on different topics, so a late delta can arrive after
    the reply it belongs to. The hub remembers recently finished replies and drops such
    deltas: a client sees some deltas, then the reply, and nothing more for that reply.
    """

    FINISHED_MEMORY = 64
    """Finished reply ids remembered per conversation."""

    def __init__(self) -> None:
        self._sockets: dict[str, set[WebSocket]] = defaultdict(set)
        self._finished: dict[str, deque[str]] = {}

    def add(self, conversation_id: str, ws: WebSocket) -> None:
        """Start delivering this conversation's frames to `ws`."""
        self._sockets[conversation_id].add(ws)

    def remove(self, conversation_id: str, ws: WebSocket) -> None:
        """Stop delivering to `ws`."""
        sockets = self._sockets.get(conversation_id)
        if sockets is not None:
            sockets.discard(ws)
            if not sockets:
                del self._sockets[conversation_id]
                self._finished.pop(conversation_id, None)

    def count(self) -> int:
        """Open sockets on this replica."""
        return sum(len(s) for s in self._sockets.values())

    async def send(self, conversation_id: str, frame: dict[str, Any]) -> int:
        """Send a frame to every socket of the conversation; return how many got it."""
        sockets = list(self._sockets.get(conversation_id, ()))
        if not sockets:
            return 0
        finished = self._finished.setdefault(conversation_id, deque(maxlen=self.FINISHED_MEMORY))
        reply_id = str(frame.get("reply_id"))
        if frame.get("type") == "delta" and reply_id in finished:
            return 0
        if frame.get("type") == "reply" and reply_id not in finished:
            finished.append(reply_id)
        delivered = 0
        for ws in sockets:
            try:
                await ws.send_json(frame)
                delivered += 1
            except Exception:
                self.remove(conversation_id, ws)
        return delivered


class Fanout:
    """Redis pub/sub between the replica that consumed a reply and the one with the socket."""

    def __init__(self, redis: aioredis.Redis, key_prefix: str, hub: ConnectionHub) -> None:
        self.redis = redis
        self.prefix = f"{key_prefix}deliver:"
        self.hub = hub
        self._ready = asyncio.Event()

    async def publish(self, conversation_id: str, frame: dict[str, Any]) -> None:
        """Offer a frame to every replica."""
        await self.redis.publish(self.prefix + conversation_id, json.dumps(frame))

    async def wait_listening(self, timeout_s: float = 10.0) -> None:
        """Return once the listener is subscribed, so no frame is published into the void."""
        await asyncio.wait_for(self._ready.wait(), timeout_s)

    async def run(self) -> None:
        """Forward frames to local sockets until cancelled, resubscribing after Redis errors."""
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.psubscribe(self.prefix + "*")
                self._ready.set()
                async for message in pubsub.listen():
                    if message.get("type") != "pmessage":
                        continue
                    conversation_id = str(message["channel"])[len(self.prefix) :]
                    await self.hub.send(conversation_id, json.loads(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivery listener lost Redis; resubscribing")
                self._ready.clear()
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
