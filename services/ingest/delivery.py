"""Getting replies to the customer's open connections, whichever replica holds them.

Replies reach ingest through its consumer group, so one replica consumes each reply, but the
customer's WebSocket may be open on another. Frames go through the shared fanout
(`shared.fanout`, Redis channel `deliver:<conversation>`), buffered in the stream
`frames:<conversation>` and numbered by it; every replica's listener hands what it hears to its
`ConnectionHub`, which forwards frames to the sockets it holds, each frame once and in order.
A client that reconnects with `after=<last id it saw>` gets what it missed replayed from the
stream. The record of every reply is still memory's, in PostgreSQL; the buffer only bridges a
dropped connection or a page reload.
"""

from __future__ import annotations

import logging
from collections import defaultdict, deque
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter
from starlette.websockets import WebSocket

from shared.fanout import Fanout, FrameId, frame_id_of, parse_frame_id

__all__ = ["ConnectionHub", "Fanout", "FrameId", "conversation_fanout", "parse_frame_id"]

log = logging.getLogger(__name__)

DELIVERY_CHANNEL = "deliver"
"""Frames for conversation `c` travel on Redis channel `<prefix>deliver:c`."""
FRAME_BUFFER = "frames"
FRAME_BUFFER_TEMPLATE = FRAME_BUFFER + ":{conversation}"
"""The per-conversation frame buffer's key (after the Redis key prefix)."""
FRAME_BUFFER_MAXLEN = 500
"""Frames kept per conversation (approximately: Redis trims whole stream nodes)."""
FRAME_BUFFER_TTL_S = 24 * 3600
"""A conversation's buffer expires this long after its last frame."""

REPLAYED = Counter(
    "cbd_ingest_frames_replayed_total",
    "Frames sent again to a WebSocket that reconnected with `after`, from the frame buffer.",
)


def frame_buffer_key(key_prefix: str, conversation_id: str) -> str:
    """The Redis stream holding a conversation's recent frames."""
    return key_prefix + FRAME_BUFFER_TEMPLATE.format(conversation=conversation_id)


class _Subscriber:
    """One socket and where it is in its conversation's frame sequence."""

    __slots__ = ("backlog", "last", "ws")

    def __init__(self, ws: WebSocket, after: FrameId | None) -> None:
        self.ws = ws
        self.last: FrameId | None = after
        """The newest buffered frame this socket has (been sent, or had before it resumed)."""
        self.backlog: list[dict[str, Any]] | None = [] if after is not None else None
        """Live frames held back while the socket's replay is being sent; None once live."""

    def is_new(self, frame: dict[str, Any]) -> bool:
        frame_id = frame_id_of(frame)
        return frame_id is None or self.last is None or frame_id > self.last

    async def deliver(self, frame: dict[str, Any]) -> None:
        await self.ws.send_json(frame)
        frame_id = frame_id_of(frame)
        if frame_id is not None and (self.last is None or frame_id > self.last):
            self.last = frame_id


class ConnectionHub:
    """The WebSockets this replica holds, by conversation.

    Deltas and final replies travel on different topics, so a late delta can arrive after
    the reply it belongs to. The hub remembers recently finished replies and drops such
    deltas: a client sees some deltas, then the reply, and nothing more for that reply.
    """

    FINISHED_MEMORY = 64
    """Finished reply ids remembered per conversation."""

    def __init__(self) -> None:
        self._sockets: dict[str, dict[WebSocket, _Subscriber]] = defaultdict(dict)
        self._finished: dict[str, deque[str]] = {}

    def add(self, conversation_id: str, ws: WebSocket, *, after: FrameId | None = None) -> None:
        """Start delivering this conversation's frames to `ws`.

        With `after` (the last frame id the client has), live frames are held until `resume`
        has sent the replayed ones, so the socket gets the missed frames first and each once.
        """
        self._sockets[conversation_id][ws] = _Subscriber(ws, after)

    def remove(self, conversation_id: str, ws: WebSocket) -> None:
        """Stop delivering to `ws`."""
        sockets = self._sockets.get(conversation_id)
        if sockets is not None:
            sockets.pop(ws, None)
            if not sockets:
                del self._sockets[conversation_id]
                self._finished.pop(conversation_id, None)

    def count(self) -> int:
        """Open sockets on this replica."""
        return sum(len(s) for s in self._sockets.values())

    def _late_delta(self, conversation_id: str, frame: dict[str, Any]) -> bool:
        """Note a finished reply; True for a delta of a reply that already finished."""
        finished = self._finished.setdefault(conversation_id, deque(maxlen=self.FINISHED_MEMORY))
        reply_id = str(frame.get("reply_id"))
        if frame.get("type") == "delta" and reply_id in finished:
            return True
        # A withdrawn reply is finished too: it goes out, and nothing of the reply after it.
        if (frame.get("type") == "reply" or frame.get("withdrawn")) and reply_id not in finished:
            finished.append(reply_id)
        return False

    def positions(self) -> dict[str, FrameId]:
        """Per conversation, the oldest frame id one of its sockets is known to have."""
        oldest: dict[str, FrameId] = {}
        for conversation_id, subs in self._sockets.items():
            known = [sub.last for sub in subs.values() if sub.last is not None]
            if known:
                oldest[conversation_id] = min(known)
        return oldest

    async def send(
        self, conversation_id: str, frame: dict[str, Any], *, catch_up: bool = False
    ) -> int:
        """Send a frame to every socket of the conversation; return how many got it.

        `catch_up` frames are buffered ones sent again after the listener lost Redis: only
        sockets whose position is known get them (the id check then sends each one once).
        """
        sockets = list(self._sockets.get(conversation_id, {}).values())
        if not sockets or self._late_delta(conversation_id, frame):
            return 0
        delivered = 0
        for sub in sockets:
            if sub.backlog is not None:
                sub.backlog.append(frame)
                continue
            if not sub.is_new(frame) or (catch_up and sub.last is None):
                continue
            try:
                await sub.deliver(frame)
                delivered += 1
            except Exception:
                self.remove(conversation_id, sub.ws)
        return delivered

    async def resume(
        self,
        conversation_id: str,
        ws: WebSocket,
        replay: list[dict[str, Any]],
        *,
        complete: bool = True,
    ) -> int:
        """Send `ws` the replayed frames, a `resumed` frame, then the live ones held meanwhile.

        The replay is read after the socket was added, so a frame published in between is
        both replayed and held; the id check sends it once. Deltas of a reply whose final
        frame is in the replay are skipped: the reply replaces them anyway. `complete` False
        tells the client the buffer could not be read. Returns how many replayed frames were
        sent. A failed send raises (the socket is gone).
        """
        sub = self._sockets.get(conversation_id, {}).get(ws)
        if sub is None:
            return 0
        # A reply's deltas are skipped when its final frame is in the replay, and all of a
        # withdrawn reply: a client drawing the buffer afresh never shows it at all.
        finished = {
            str(f.get("reply_id")) for f in replay if f.get("type") == "reply" or f.get("withdrawn")
        }
        sent = 0
        for frame in replay:
            late = self._late_delta(conversation_id, frame)
            if late or (frame.get("type") == "delta" and str(frame.get("reply_id")) in finished):
                frame_id = frame_id_of(frame)
                if frame_id is not None and (sub.last is None or frame_id > sub.last):
                    sub.last = frame_id
                continue
            if sub.is_new(frame):
                await sub.deliver(frame)
                sent += 1
        await sub.ws.send_json(
            {
                "type": "resumed",
                "replayed": sent,
                "last_id": None if sub.last is None else f"{sub.last[0]}-{sub.last[1]}",
                "complete": complete,
            }
        )
        held = sub.backlog or []
        # Frames keep arriving while these sends await; the loop drains them too, and only
        # an empty backlog (checked with no await in between) switches the socket to live.
        while held:
            frame = held.pop(0)
            late = frame.get("type") == "delta" and str(frame.get("reply_id")) in finished
            if not late and sub.is_new(frame):
                await sub.deliver(frame)
        sub.backlog = None
        REPLAYED.inc(sent)
        return sent


def conversation_fanout(redis: aioredis.Redis, key_prefix: str, hub: ConnectionHub) -> Fanout:
    """The fanout of customers' conversations: buffered, numbered, delivered to `hub`."""
    return Fanout(
        redis,
        key_prefix,
        channel=DELIVERY_CHANNEL,
        receiver=hub,
        buffer=FRAME_BUFFER,
        buffer_maxlen=FRAME_BUFFER_MAXLEN,
        buffer_ttl_s=FRAME_BUFFER_TTL_S,
    )
