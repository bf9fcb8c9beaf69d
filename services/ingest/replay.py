"""Turns the edge accepted and nothing answered yet: kept in Redis, published again if lost.

The end-to-end argument: the edge is the one place that knows every turn it told a customer
it had taken, so it is the one place that can make sure each is answered, whatever a hop in
between lost. An in-memory broker that restarts loses every event it held (topics come back
empty, committed offsets gone); a durable log can still lose records (unclean leader
election). So:

- before `turn.received` is published, the event is kept under
  `pending:{conversation}:{turn_id}` (a hash: the event, the replays so far) and indexed in
  the sorted set `pending-due`, scored by when it is due again (`replay_after_s` later);
- the first `reply.generated` for the turn (bot, handoff notice or agent) or
  `assist.suggested` (a person already holds the conversation: the bot stays quiet, the
  agent gets suggestions) settles it: both keys are deleted. Suggestions sent beside a
  handoff notice (`AgentAssist.replied`) do not: the two travel on different topics, and a
  broker that loses its log can keep the suggestions and lose the notice;
- `TurnReplay.publish` watches the offsets the broker gives the edge's own records: a
  partition handing out an offset at or below one it had already given (`LogWatch`) is a
  broker that came back without its log, and every pending turn is published again at once
  (after re-creating the topics); so is every pending turn when the broker watch saw the
  broker go down and come back (a restart faster than its one-second ping is caught by the
  offsets, or by the timeout when no record lands on a partition used before);
- every second the due turns are published again (`no_answer`: a hop lost it some other
  way, or is very slow), at most `replay_attempts` times (replays after a lost log do not
  count); then the turn is given up, logged and counted.

A replay is the same event, same event id: every hop derives its ids from it
(`Envelope.derive`), so a hop that did see the turn finds its own earlier work (the ticket
`opened_by_event`, memory's stored turn, the trajectory's entry), and one that lost it does
it now. The reply id is derived from the turn too, and the edge shows a reply id once
(`Fanout.publish(once=...)`, SMS/WhatsApp sends claimed by reply id), so the customer gets
one reply per turn however many times it was replayed. A new event id per attempt would
open a second ticket and send a second, different reply.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from aiokafka.structs import RecordMetadata
from prometheus_client import Counter

from shared.events import Envelope, TurnReceivedEvent
from shared.kafka import BrokerWatch, EventBus

log = logging.getLogger(__name__)

PENDING_TEMPLATE = "pending:{conversation}"
"""A conversation's unanswered turns are `pending:{conversation}:<turn id>` (after the Redis
key prefix); erasure deletes `pending:{conversation}:*`."""
DUE_KEY = "pending-due"

SCAN_INTERVAL_S = 1.0
"""How often each replica looks for due turns (one Redis script call)."""
RETRY_S = 2.0
"""When a replay could not be published (broker still down), how soon it is tried again."""
BATCH = 200
"""Turns taken per script call."""

REPLAYED = Counter(
    "cbd_ingest_turns_replayed_total",
    "Accepted turns published again by the edge: `broker_log_lost` (the broker handed out an "
    "offset again), `broker_back` (the broker watch saw an outage end) or `no_answer` (no "
    "reply within CBD_INGEST_REPLAY_AFTER_S).",
    ["reason"],
)
ABANDONED = Counter(
    "cbd_ingest_turns_replay_abandoned_total",
    "Accepted turns given up after CBD_INGEST_REPLAY_ATTEMPTS replays without an answer.",
)
LOG_LOSSES = Counter(
    "cbd_ingest_broker_log_losses_total",
    "Times the broker handed the edge an offset it had handed out before (its log was lost).",
)

# Take up to ARGV[2] turns due by ARGV[1]: count the attempt (ARGV[5]: 1, or 0 when the
# broker lost the turn, which is no sign that the turn itself cannot be answered) and schedule
# the next one at ARGV[3]; a turn past ARGV[4] attempts is deleted and returned with an empty
# event; an index entry whose turn is gone (answered, erased, expired) is dropped. One
# script, so two replicas never take the same turn in the same round.
_TAKE_LUA = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
local out = {}
for _, key in ipairs(due) do
    local event = redis.call('HGET', key, 'event')
    if not event then
        redis.call('ZREM', KEYS[1], key)
    else
        local attempts = redis.call('HINCRBY', key, 'attempts', ARGV[5])
        if attempts > tonumber(ARGV[4]) then
            redis.call('DEL', key)
            redis.call('ZREM', KEYS[1], key)
            event = ''
        else
            redis.call('ZADD', KEYS[1], ARGV[3], key)
        end
        table.insert(out, {key, event, attempts})
    end
end
return out
"""

# A replay that could not be published does not count as an attempt (ARGV[2]: what the take
# counted), and is due again at ARGV[1], unless the turn was answered (deleted) meanwhile.
_RETRY_LUA = """
if redis.call('EXISTS', KEYS[2]) == 1 then
    redis.call('HINCRBY', KEYS[2], 'attempts', -tonumber(ARGV[2]))
    redis.call('ZADD', KEYS[1], ARGV[1], KEYS[2])
end
return 0
"""


@dataclass(frozen=True)
class Mark:
    """What the edge knew about a topic's offsets when a publish started."""

    epoch: int
    floors: dict[int, int] = field(default_factory=dict)


class LogWatch:
    """Notices a broker that lost its log, from the offsets it hands the edge's records.

    A partition's offsets only grow: a record published after another was acknowledged gets
    a higher offset, unless the log was lost and the partition starts again from zero. Only
    records that *started* after the earlier one was acknowledged are compared (`before`
    marks what was known then), so concurrent publishes acknowledged out of order are not
    mistaken for a loss. Each loss starts a new epoch: publishes that started before it
    compare against nothing.
    """

    def __init__(self) -> None:
        self.epoch = 0
        self._highest: dict[str, dict[int, int]] = {}

    def before(self, topic: str) -> Mark:
        """Call before publishing on `topic`."""
        return Mark(self.epoch, dict(self._highest.get(topic, {})))

    def after(self, mark: Mark, topic: str, partition: int, offset: int) -> bool:
        """Record an acknowledged offset; True when it shows the log was lost."""
        floor = mark.floors.get(partition) if mark.epoch == self.epoch else None
        if floor is not None and offset <= floor:
            self.epoch += 1
            self._highest = {topic: {partition: offset}}
            return True
        partitions = self._highest.setdefault(topic, {})
        partitions[partition] = max(offset, partitions.get(partition, -1))
        return False


def pending_key(prefix: str, conversation_id: str, turn_id: uuid.UUID | str) -> str:
    """The Redis key of one unanswered turn."""
    return f"{prefix}{PENDING_TEMPLATE.format(conversation=conversation_id)}:{turn_id}"


class TurnReplay:
    """Keeps the edge's accepted turns until answered, and publishes them again if lost."""

    def __init__(
        self,
        redis: aioredis.Redis,
        bus: EventBus,
        prefix: str,
        *,
        after_s: float,
        attempts: int,
        clock: Callable[[], float] = time.time,
        recreate_topics: Callable[[], Awaitable[None]] | None = None,
        watch: BrokerWatch | None = None,
    ) -> None:
        self.redis = redis
        self.bus = bus
        self.prefix = prefix
        self.after_s = after_s
        self.attempts = attempts
        self.due_key = prefix + DUE_KEY
        self.keep_s = int(max(24 * 3600, after_s * (attempts + 2)))
        """How long a pending turn is kept at most, whatever happens to the index."""
        self.watch = LogWatch()
        self.log_lost = False
        """Set when the broker lost its log; every pending turn is replayed at the next scan."""
        self._take = redis.register_script(_TAKE_LUA)
        self._retry = redis.register_script(_RETRY_LUA)
        self._clock = clock
        self.recreate_topics = recreate_topics
        self.broker_watch = watch
        """The broker watch: an outage it saw may have cost the log, so what is pending is
        replayed when the broker is back (a durable broker's copies are then duplicates, which
        every hop absorbs)."""
        self._outages = watch.outages if watch is not None else 0
        """Run before a lost log's replay: the broker may be back without its topics, unseen
        by the broker watch (a restart between two pings), and tansu keeps records sent to a
        missing topic's partition where no consumer sees them until the topic is created."""

    def _now(self) -> float:
        return self._clock()

    async def publish(self, event: Envelope) -> None:
        """Publish an event of the edge's, watching its offset for a lost log."""
        mark = self.watch.before(event.event_type)
        sent = await self.bus.publish(event)
        if isinstance(sent, RecordMetadata) and self.watch.after(
            mark, event.event_type, sent.partition, sent.offset
        ):
            LOG_LOSSES.inc()
            log.warning(
                "the broker gave %s[%d] offset %d again: it lost its log; replaying "
                "every unanswered turn",
                sent.topic,
                sent.partition,
                sent.offset,
            )
            self.log_lost = True

    async def accepted(self, event: TurnReceivedEvent) -> None:
        """Keep a turn about to be published until it is answered."""
        key = pending_key(self.prefix, event.conversation_id, event.payload.message.turn_id)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, mapping={"event": event.model_dump_json(), "attempts": 0})
                pipe.expire(key, self.keep_s)
                pipe.zadd(self.due_key, {key: self._now() + self.after_s})
                await pipe.execute()
        except Exception:
            # The turn still goes out; only its replay after a loss is not guaranteed.
            log.warning("could not keep %s for replay (Redis)", key, exc_info=True)

    async def answered(self, conversation_id: str, turn_id: uuid.UUID | str) -> None:
        """The turn has its answer: nothing to replay. Unknown turns are fine."""
        key = pending_key(self.prefix, conversation_id, turn_id)
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                pipe.zrem(self.due_key, key)
                await pipe.execute()
        except Exception:
            # Left pending, it is replayed once more; the edge shows its reply once anyway.
            log.warning("could not settle %s (Redis)", key, exc_info=True)

    async def forget(self, event: TurnReceivedEvent) -> None:
        """A turn whose publish failed: the customer was told to retry, so no replay."""
        await self.answered(event.conversation_id, event.payload.message.turn_id)

    async def replay_due(self) -> int:
        """Publish the turns that are due (all of them after a lost log); return how many."""
        reason = "broker_log_lost" if self.log_lost else "no_answer"
        broker = self.broker_watch
        if broker is not None and broker.up and broker.outages != self._outages:
            self._outages = broker.outages
            if not self.log_lost:
                reason = "broker_back"
                self.log_lost = True
        everything = self.log_lost
        self.log_lost = False
        if everything and self.recreate_topics is not None:
            try:
                await self.recreate_topics()
            except Exception:
                log.warning("could not re-create the topics", exc_info=True)
        replayed = 0
        while True:
            now = self._now()
            taken = await self._take(
                keys=[self.due_key],
                args=[
                    "+inf" if everything else now,
                    BATCH,
                    now + self.after_s,
                    self.attempts,
                    0 if everything else 1,
                ],
            )
            for raw_key, raw_event, attempts in taken or []:
                key = _text(raw_key)
                if not raw_event:
                    ABANDONED.inc()
                    log.error("gave up %s after %d replays without an answer", key, attempts - 1)
                    continue
                try:
                    event = TurnReceivedEvent.model_validate_json(raw_event)
                    await self.publish(event)
                except Exception:
                    log.warning("could not replay %s; trying again soon", key, exc_info=True)
                    await self._retry_soon(key, counted=not everything)
                    # The broker is still away: the rest wait for the next round, and a lost
                    # log's full replay is not done until they are out.
                    self.log_lost = self.log_lost or everything
                    return replayed
                REPLAYED.labels(reason).inc()
                replayed += 1
            if len(taken or []) < BATCH:
                return replayed

    async def _retry_soon(self, key: str, *, counted: bool) -> None:
        try:
            await self._retry(
                keys=[self.due_key, key], args=[self._now() + RETRY_S, 1 if counted else 0]
            )
        except Exception:
            log.warning("could not reschedule %s (Redis)", key, exc_info=True)

    async def run(self) -> None:
        """Replay due turns every second until cancelled."""
        while True:
            try:
                await self.replay_due()
            except Exception:
                log.warning("replay round failed; trying again", exc_info=True)
            await asyncio.sleep(SCAN_INTERVAL_S)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
