"""The short chaos run: services and the broker killed (kill -9) under open-loop load.

Five turns a second for a minute on a platform of its own (no LLM: every turn is handed to a
person), with ingest, the in-memory broker and the pipeline's services killed at random
moments. Nothing may be
lost or duplicated, at the customer's socket or on the reply topic. `make chaos` is the long
form; select this one with `-m chaos`.
"""

from __future__ import annotations

import asyncio

import pytest

from cbd.chaos import BROKER, chaos_platform, run_chaos
from cbd.serve import SERVICES

pytestmark = [pytest.mark.e2e, pytest.mark.chaos]


async def test_a_minute_of_kills_loses_and_duplicates_no_reply(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    platform = chaos_platform(tmp_path_factory.mktemp("chaos"))
    await asyncio.to_thread(platform.start)
    try:
        report = await run_chaos(
            platform,
            rate=5,
            duration_s=60,
            targets=(*SERVICES, BROKER),
            # The edge first, so a short run always covers reconnecting sockets, then the
            # in-memory broker, whose lost log the edge's replay makes up for.
            first_targets=["ingest", BROKER],
            seed=17,
        )
    finally:
        await asyncio.to_thread(platform.stop)
    lines = "\n".join(report.lines())
    print(lines)
    assert [k.target for k in report.kills[:2]] == ["ingest", BROKER], lines
    assert len(report.accepted) == len(report.turns) == 300, lines
    assert report.ok, lines
    assert all(k.recovered_s is not None for k in report.kills), lines
