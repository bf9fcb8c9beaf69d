"""Frames to WebSockets on any replica: Redis pub/sub, optionally buffered in a Redis stream.

How to use it:

    fanout = Fanout(redis, key_prefix, channel="deliver", receiver=hub, buffer="frames")
    listener = asyncio.create_task(fanout.run())     # in the lifespan; cancel it on the way out
    await fanout.wait_listening()
    frame_id = await fanout.publish(conversation_id, {"type": "reply", ...})
    missed = await fanout.replay(conversation_id, after=parse_frame_id(client_after))

- `channel` names the feed: frames for key `k` travel on Redis channel `<prefix><channel>:<k>`,
  and every replica's `run()` pattern-subscribes to `<prefix><channel>:*` and hands each frame to
  its `receiver` (`Receiver.send(k, frame)`), which forwards it to the sockets it holds. The
  replica that publishes hears its own frames the same way, so no socket is special.
- With `buffer` (ingest's customer sockets), each frame is also appended to the stream
  `<prefix><buffer>:<k>` (about `buffer_maxlen` frames, expiring `buffer_ttl_s` after the last)
  in the same Lua script as the publish, and carries the entry id as its `id`: live frames reach
  every listener in id order, a client resumes with `replay(k, after)`, and after a Redis blip
  `run()` sends connected sockets what they missed (`Receiver.positions()` says from where).
- Without `buffer` (the agents' console feed, many conversations in one feed) frames are only
  published: live, unnumbered, not kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any, Protocol

import redis.asyncio as aioredis

from shared.erasure import LATE, LATE_LUA, LateCheck

log = logging.getLogger(__name__)

FrameId = tuple[int, int]
"""A stream entry id, `<milliseconds>-<sequence>`, as a pair that orders like Redis does."""

_FRAME_ID = re.compile(r"^(\d{1,19})(?:-(\d{1,19}))?$")

# XADD and PUBLISH in one script: ids are assigned and published in the same order, so a
# listener never sees id 7 before id 6. The published message wraps the frame JSON as is
# (string concatenation, not cjson, which would turn an empty list into an object).
_PUBLISH_BUFFERED_LUA = """
if KEYS[2] and not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[4]) then
    return false
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'frame', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[1], '{"id":"' .. id .. '","frame":' .. ARGV[2] .. '}')
return id
"""

# The same with an erasure check first (`shared.erasure.LATE_LUA`): KEYS[2] is the once key
# (used when ARGV[5] is '1'), KEYS[3..] the receipts. 0: the frame is about a customer erased
# before it came, and is neither kept nor published.
_PUBLISH_BUFFERED_CHECKED_LUA = (
    LATE_LUA
    + """
if late(3, ARGV[6], ARGV[7], ARGV[8]) then
    return 0
end
if ARGV[5] == '1' and not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[4]) then
    return false
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[3], '*', 'frame', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('PUBLISH', ARGV[1], '{"id":"' .. id .. '","frame":' .. ARGV[2] .. '}')
return id
"""
)


def parse_frame_id(value: str) -> FrameId:
    """A client's `after` or a frame's `id` as an ordered pair; ValueError if it is not one.

    `0` means "from the beginning of the buffer"; `<ms>` alone means `<ms>-0`.
    """
    match = _FRAME_ID.match(value)
    if match is None:
        raise ValueError(f"not a frame id: {value!r}")
    return int(match.group(1)), int(match.group(2) or 0)


def frame_id_of(frame: dict[str, Any]) -> FrameId | None:
    """The frame's `id` as a pair, or None when it has none (or not a valid one)."""
    raw = frame.get("id")
    if not isinstance(raw, str):
        return None
    try:
        return parse_frame_id(raw)
    except ValueError:
        return None


class Receiver(Protocol):
    """What a replica does with the frames it hears: forward them to its sockets."""

    async def send(self, key: str, frame: dict[str, Any], *, catch_up: bool = False) -> int:
        """Forward `frame` to the sockets for `key`; return how many got it.

        `catch_up` frames are buffered ones sent again after the listener lost Redis.
        """
        ...

    def positions(self) -> dict[str, FrameId]:
        """Per key, the oldest frame id one of its sockets is known to have (for catch-up)."""
        ...


class Fanout:
    """Publishes frames for every replica and forwards the ones it hears to its receiver."""

    def __init__(
        self,
        redis: aioredis.Redis,
        key_prefix: str,
        *,
        channel: str,
        receiver: Receiver,
        buffer: str | None = None,
        buffer_maxlen: int = 500,
        buffer_ttl_s: int = 24 * 3600,
    ) -> None:
        self.redis = redis
        self.key_prefix = key_prefix
        self.prefix = f"{key_prefix}{channel}:"
        self.receiver = receiver
        self.buffer = buffer
        self.buffer_maxlen = buffer_maxlen
        self.buffer_ttl_s = buffer_ttl_s
        self._ready = asyncio.Event()
        self._publish_buffered = redis.register_script(_PUBLISH_BUFFERED_LUA)
        self._publish_checked = redis.register_script(_PUBLISH_BUFFERED_CHECKED_LUA)

    def buffer_key(self, key: str) -> str:
        """The Redis stream holding `key`'s recent frames (only meaningful with a buffer)."""
        return f"{self.key_prefix}{self.buffer}:{key}"

    async def publish(
        self,
        key: str,
        frame: dict[str, Any],
        *,
        once: str = "",
        late: LateCheck | None = None,
        store: str = "",
    ) -> str | None:
        """Offer a frame to every replica; with a buffer, keep it and return its frame id.

        With `once` (a buffered fanout only), a frame published under the same `once` before,
        within the buffer's lifetime, is not published again and None is returned: an
        at-least-once consumer that redelivers an event (killed after publishing, before
        committing) does not show the customer the same reply twice. The check and the
        publish are one Lua script, so no kill between them can lose the frame.

        With `late` (a buffered fanout only), a frame about a customer erased before it came
        is neither buffered nor published (None; counted under `store`), checked in the same
        script (`shared.erasure.RedisReceipts`).
        """
        if self.buffer is None:
            await self.redis.publish(self.prefix + key, json.dumps(frame))
            return None
        if late is not None:
            buffer = self.buffer_key(key)
            checked = await self._publish_checked(
                keys=[buffer, f"{self.key_prefix}{self.buffer}-once:{once}", *late.keys],
                args=[
                    self.prefix + key,
                    json.dumps(frame),
                    self.buffer_maxlen,
                    self.buffer_ttl_s,
                    "1" if once else "",
                    late.origin,
                    late.skew,
                    late.ttl,
                ],
            )
            if checked == 0:
                LATE.labels(store).inc()
                return None
            if checked is None:
                return None
            return checked.decode() if isinstance(checked, bytes) else str(checked)
        keys = [self.buffer_key(key)]
        if once:
            keys.append(f"{self.key_prefix}{self.buffer}-once:{once}")
        frame_id = await self._publish_buffered(
            keys=keys,
            args=[self.prefix + key, json.dumps(frame), self.buffer_maxlen, self.buffer_ttl_s],
        )
        if frame_id is None:
            return None
        return frame_id.decode() if isinstance(frame_id, bytes) else str(frame_id)

    async def replay(self, key: str, after: FrameId) -> list[dict[str, Any]]:
        """The buffered frames newer than `after`, oldest first, each with its `id`."""
        if self.buffer is None:
            return []
        ms, seq = after
        # XRANGE's start is inclusive; the entry right after `after` is ms-(seq+1).
        start = f"{ms}-{seq + 1}" if seq < 2**64 - 1 else f"{ms + 1}-0"
        entries = await self.redis.xrange(
            self.buffer_key(key), min=start, max="+", count=self.buffer_maxlen * 2
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
        # Not `asyncio.wait_for`, which on Python 3.11 swallows a cancellation that arrives as
        # an already-set event answers.
        async with asyncio.timeout(timeout_s):
            await self._ready.wait()

    @staticmethod
    def _unwrap(data: str) -> dict[str, Any]:
        """The frame in a published message, with its id when it was buffered."""
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
        receiver's id check sends each once.
        """
        if self.buffer is None:
            return 0
        sent = 0
        for key, since in self.receiver.positions().items():
            try:
                frames = await self.replay(key, since)
            except Exception:
                log.warning("could not catch up %s from the frame buffer", key)
                continue
            for frame in frames:
                sent += await self.receiver.send(key, frame, catch_up=True)
        return sent

    async def run(self) -> None:
        """Forward frames to the receiver until cancelled, resubscribing after Redis errors."""
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
                    key = str(message["channel"])[len(self.prefix) :]
                    try:
                        frame = self._unwrap(message["data"])
                    except ValueError:
                        log.warning("dropped a frame that is not JSON on %s", message["channel"])
                        continue
                    await self.receiver.send(key, frame)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("fanout listener lost Redis; resubscribing")
                self._ready.clear()
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    @contextlib.asynccontextmanager
    async def listening(self) -> AsyncIterator[Fanout]:
        """Run the listener for the duration of the block (for lifespans and tests)."""
        task = asyncio.create_task(self.run(), name=f"fanout-{self.prefix}")
        try:
            await self.wait_listening()
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
