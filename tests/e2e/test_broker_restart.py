"""Every service survives a broker restart (kill -9).

While the broker is down, ingest refuses new messages with 503 and every service's readiness
says the broker is the problem; once the supervisor has restarted it, producers and consumers
reconnect by themselves, the topics an in-memory broker lost are created again, and turns go
all the way round. The turn that was in flight when it died gets its reply too: the durable
(S3) broker kept it (tests/integration/test_broker_restart.py proves that storage survives),
and ingest publishes again what an in-memory broker lost (tests/integration/test_ingest_replay.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import httpx
import pytest
import websockets

from cbd.chaos import chaos_platform
from cbd.runtime import Platform
from cbd.serve import SERVICES
from tests.e2e.test_turn_path import frames_until_reply, new_ids, ws_url

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """A platform of its own (no LLM: handoff turns only), so the broker it kills is not the
    one the other end-to-end tests share: after a restart an in-memory broker has lost every
    group's offsets, and consumers rebalance for a while."""
    plat = chaos_platform(tmp_path_factory.mktemp("broker-restart"))
    plat.start()
    try:
        yield plat
    finally:
        plat.stop()


HANDOFF = "Please let me talk to a real person."


async def readiness(platform: Platform) -> dict[str, tuple[int, dict[str, str]]]:
    """Each service's /readyz status code and checks."""
    out = {}
    async with httpx.AsyncClient(timeout=10) as http:
        for name in SERVICES:
            resp = await http.get(f"{platform.url(name)}/readyz")
            out[name] = (resp.status_code, resp.json().get("checks", {}))
    return out


async def post(http: httpx.AsyncClient, conversation_id: str, customer_id: str) -> httpx.Response:
    return await http.post(
        f"/v1/conversations/{conversation_id}/messages",
        json={"customer_id": customer_id, "text": HANDOFF},
    )


async def test_services_ride_out_a_broker_kill(
    platform: Platform,
) -> None:
    in_flight, customer = new_ids()
    async with (
        websockets.connect(ws_url(platform, in_flight, customer)) as ws,
        httpx.AsyncClient(base_url=platform.url("ingest"), timeout=30) as http,
    ):
        accepted = await post(http, in_flight, customer)
        assert accepted.status_code == 202, accepted.text
        platform.kill_broker()
        try:
            # Down: readiness names the broker, and ingest refuses instead of hanging.
            deadline = time.monotonic() + 15
            while True:
                states = await readiness(platform)
                if all(checks.get("kafka", "ok") != "ok" for _, checks in states.values()):
                    break
                assert time.monotonic() < deadline, states
                await asyncio.sleep(0.3)
            assert {code for code, _ in states.values()} == {503}
            refused_conv, refused_customer = new_ids()
            started = time.monotonic()
            refused = await post(http, refused_conv, refused_customer)
            assert refused.status_code == 503, refused.text
            assert time.monotonic() - started < 3.0
        finally:
            # What `make run`'s supervisor does.
            assert "kafka (tansu)" in platform.restart_exited()
        # Back: accepted again within seconds, every service ready, and no turn lost.
        deadline = time.monotonic() + 30
        while (again := await post(http, *new_ids())).status_code != 202:
            assert time.monotonic() < deadline, again.text
            await asyncio.sleep(0.3)
        # The in-flight turn is answered: kept by the durable (S3) broker, or published again
        # by ingest once the in-memory broker is back without it (services/ingest/replay.py).
        frames = await frames_until_reply(ws, timeout_s=60)
        assert frames[-1]["turn_id"] == accepted.json()["turn_id"]
    deadline = time.monotonic() + 30
    while True:
        states = await readiness(platform)
        if {code for code, _ in states.values()} == {200}:
            break
        assert time.monotonic() < deadline, states
        await asyncio.sleep(0.5)
    # A new turn still goes all the way round.
    conversation_id, customer_id = new_ids()
    async with (
        websockets.connect(ws_url(platform, conversation_id, customer_id)) as ws,
        httpx.AsyncClient(base_url=platform.url("ingest"), timeout=30) as http,
    ):
        resp = await post(http, conversation_id, customer_id)
        assert resp.status_code == 202
        frames = await frames_until_reply(ws, timeout_s=60)
    assert frames[-1]["turn_id"] == resp.json()["turn_id"]
