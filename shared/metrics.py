"""Prometheus metrics every service exports, named once so dashboards can rely on them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from prometheus_client import Counter, Histogram, start_http_server

LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

EVENTS_CONSUMED = Counter(
    "cbd_events_consumed_total",
    "Events a service took off a topic, by outcome (ok, dead_lettered, redelivered).",
    ["service", "topic", "outcome"],
)
EVENTS_PUBLISHED = Counter(
    "cbd_events_published_total", "Events a service published.", ["service", "topic"]
)
DEAD_LETTERS = Counter(
    "cbd_dead_letters_total",
    "Messages sent to the dead-letter topic, by the error that sent them.",
    ["service", "topic", "error_type"],
)
HANDLER_RETRIES = Counter(
    "cbd_handler_retries_total",
    "Handler attempts that failed and were retried.",
    ["service", "topic"],
)
HANDLE_SECONDS = Histogram(
    "cbd_event_handle_seconds",
    "Time spent handling one event.",
    ["service", "topic"],
    buckets=LATENCY_BUCKETS,
)
EVENT_AGE_SECONDS = Histogram(
    "cbd_event_age_seconds",
    "Age of an event when a service picks it up (queueing plus broker hop).",
    ["service", "topic"],
    buckets=LATENCY_BUCKETS,
)


@asynccontextmanager
async def serving_metrics(host: str, port: int) -> AsyncIterator[None]:
    """Serve /metrics on `host:port` (a listener of its own) while the block runs.

    prometheus_client's own server (a thread): it answers even while the service's event
    loop is busy or still starting, which is when a scrape is most telling.
    """
    server, thread = start_http_server(port, addr=host)
    try:
        yield
    finally:
        await asyncio.to_thread(server.shutdown)
        server.server_close()
        thread.join(timeout=5)
