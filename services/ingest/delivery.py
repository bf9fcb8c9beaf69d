"""Getting replies to the customer's open connections, whichever replica holds them.

Replies reach ingest through its consumer group, so one replica consumes each reply, but the
customer's WebSocket may be open on another. The consuming replica publishes the frame on a
Redis channel per conversation; every replica listens on the pattern and forwards frames to
the sockets it holds.

Every frame published this way also goes into a short per-conversation Redis stream, in the
same Lua script as the publish, and carries that stream entry's id as its frame `id`. Redis
runs the script atomically, so live frames reach every listener in id order, and a client
that reconnects with `after=<last id it saw>` gets the frames it missed replayed from the
stream: nothing lost while the connection was down, nothing sent twice (the hub sends a socket
only frames newer than the newest it has sent it). The record of every reply is still
memory's, in PostgreSQL; the buffer only bridges a dropped connection or a page reload.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections import defaultdict, deque
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import Counter
from starlette.websockets import WebSocket

log = logging.getLogger(__name__)

FRAME_BUFFER_TEMPLATE = "frames:{conversation}"
"""The per-conversation frame buffer's key (after the Redis key prefix)."""
FRAME_BUFFER_MAXLEN = 500
"""Frames kept per conversation (approximately: Redis trims whole stream nodes)."""
FRAME_BUFFER_TTL_S = 24 * 3600
"""A conversation's buffer expires this long after its last frame."""

FrameId = tuple[int, int]
"""A stream entry id, `<milliseconds>-<sequence>`, as a pair that orders like Redis does."""

_FRAME_ID = re.compile(r"^(\d{1,19})(?:-(\d{1,19}))?$")

REPLAYED = Counter(
    "cbd_ingest_frames_replayed_total",
    "Frames sent again to a WebSocket that reconnected with `after`, from the frame buffer.",
)

# XADD and PUBLISH in one script: ids are assigned and published in the same order, so a
# listener never sees id 7 before id 6. The published message wraps the frame JSON as is
# (string concatenation, not cjson, which would turn an empty list into an object).
_PUBLISH_LUA = """
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'frame', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[1], '{"id":"' .. id .. '","frame":' .. ARGV[2] .. '}')
return id
"""


def parse_frame_id(value: str) -> FrameId:
    """A client's `after` or a frame's `id` as an ordered pair; ValueError if it is not one.

    `0` means "from the beginning of the buffer"; `<ms>` alone means `<ms>-0`.
    """
    match = _FRAME_ID.match(value)
    if match is None:
        raise ValueError(f"not a frame id: {value!r}")
    return int(match.group(1)), int(match.group(2) or 0)


def frame_buffer_key(key_prefix: str, conversation_id: str) -> str:
    """The Redis stream holding a conversation's recent frames."""
    return key_prefix + FRAME_BUFFER_TEMPLATE.format(conversation=conversation_id)


def _frame_id_of(frame: dict[str, Any]) -> FrameId | None:
    raw = frame.get("id")
    if not isinstance(raw, str):
        return None
    try:
        return parse_frame_id(raw)
    except ValueError:
        return None


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
        frame_id = _frame_id_of(frame)
        return frame_id is None or self.last is None or frame_id > self.last

    async def deliver(self, frame: dict[str, Any]) -> None:
        await self.ws.send_json(frame)
        frame_id = _frame_id_of(frame)
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
        if frame.get("type") == "reply" and reply_id not in finished:
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
        finished = {str(f.get("reply_id")) for f in replay if f.get("type") == "reply"}
        sent = 0
        for frame in replay:
            late = self._late_delta(conversation_id, frame)
            if late or (frame.get("type") == "delta" and str(frame.get("reply_id")) in finished):
                frame_id = _frame_id_of(frame)
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


class Fanout:
    """Redis pub/sub between the replica that consumed a reply and the one with the socket."""

    def __init__(self, redis: aioredis.Redis, key_prefix: str, hub: ConnectionHub) -> None:
        self.redis = redis
        self.key_prefix = key_prefix
        self.prefix = f"{key_prefix}deliver:"
        self.hub = hub
        self._ready = asyncio.Event()
        self._publish = redis.register_script(_PUBLISH_LUA)

    async def publish(self, conversation_id: str, frame: dict[str, Any]) -> str:
        """Buffer a frame, give it the conversation's next frame id, offer it to every replica.

        Returns the frame id.
        """
        frame_id = await self._publish(
            keys=[frame_buffer_key(self.key_prefix, conversation_id)],
            args=[
                self.prefix + conversation_id,
                json.dumps(frame),
                FRAME_BUFFER_MAXLEN,
                FRAME_BUFFER_TTL_S,
            ],
        )
        return frame_id.decode() if isinstance(frame_id, bytes) else str(frame_id)

    async def replay(self, conversation_id: str, after: FrameId) -> list[dict[str, Any]]:
        """The buffered frames newer than `after`, oldest first, each with its `id`."""
        ms, seq = after
        # XRANGE's start is inclusive; the entry right after `after` is ms-(seq+1).
        start = f"{ms}-{seq + 1}" if seq < 2**64 - 1 else f"{ms + 1}-0"
        entries = await self.redis.xrange(
            frame_buffer_key(self.key_prefix, conversation_id),
            min=start,
            max="+",
            count=FRAME_BUFFER_MAXLEN * 2,
        )
        frames: list[dict[str, Any]] = []
        for entry_id, fields in entries or []:
            raw = fields.get("frame") if isinstance(fields, dict) else None
            if raw is None:
                continue
            frame = json.loads(raw)
            frame["id"] = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            frames.append(frame)
        return frames

    async def wait_listening(self, timeout_s: float = 10.0) -> None:
        """Return once the listener is subscribed, so no frame is published into the void."""
        await asyncio.wait_for(self._ready.wait(), timeout_s)

    @staticmethod
    def _unwrap(data: str) -> dict[str, Any]:
        """The frame in a published message, with its id (plain frames from older replicas)."""
        message: dict[str, Any] = json.loads(data)
        if isinstance(message.get("frame"), dict) and isinstance(message.get("id"), str):
            frame: dict[str, Any] = message["frame"]
            frame["id"] = message["id"]
            return frame
        return message

    async def catch_up(self) -> int:
        """Send connected sockets the buffered frames they missed; return how many frames.

        Run after resubscribing: whatever was published while the listener was away is in
        the buffer. Frames published since the new subscription arrive live as well; the
        hub's id check sends each once.
        """
        sent = 0
        for conversation_id, since in self.hub.positions().items():
            try:
                frames = await self.replay(conversation_id, since)
            except Exception:
                log.warning("could not catch up %s from the frame buffer", conversation_id)
                continue
            for frame in frames:
                sent += await self.hub.send(conversation_id, frame, catch_up=True)
        return sent

    async def run(self) -> None:
        """Forward frames to local sockets until cancelled, resubscribing after Redis errors."""
        subscribed_before = False
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.psubscribe(self.prefix + "*")
                if subscribed_before:
                    await self.catch_up()
                subscribed_before = True
                self._ready.set()
                async for message in pubsub.listen():
                    if message.get("type") != "pmessage":
                        continue
                    conversation_id = str(message["channel"])[len(self.prefix) :]
                    await self.hub.send(conversation_id, self._unwrap(message["data"]))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("delivery listener lost Redis; resubscribing")
                self._ready.clear()
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
