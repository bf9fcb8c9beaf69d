"""Live updates for the agents' consoles: queue changes and new messages, over WebSockets.

Agents' consoles may be connected to any escalation replica, and the replica that consumed an
event or took an agent's move is usually not the one holding a given console. So every frame
goes through the shared fanout (`shared.fanout`, Redis pub/sub on channel `console`) and each
replica's `AgentHub` forwards what it hears to the consoles it holds.

Agents work for their tenants, so the feed is keyed by tenant (Redis channel
`<prefix>console:<tenant>`): a console hears its agent's tenants' conversations and queue only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from starlette.websockets import WebSocket

from shared.events import DEFAULT_TENANT
from shared.fanout import Fanout, FrameId

CONSOLE_CHANNEL = "console"
"""The fanout channel of the console feed (Redis channel `<prefix>console:agents`)."""


class AgentHub:
    """The consoles connected to this replica (a `shared.fanout.Receiver`).

    Every console of a tenant's agent hears every frame of that tenant and shows the ones for the
    conversation it has open; agents are few, so filtering in the browser costs less than
    tracking who opened what. Another tenant's frames never reach it.
    """

    def __init__(self) -> None:
        self._sockets: dict[WebSocket, frozenset[str]] = {}

    def add(self, ws: WebSocket, tenants: Iterable[str] = (DEFAULT_TENANT,)) -> None:
        """Start sending `ws` the frames of `tenants` (its agent's)."""
        self._sockets[ws] = frozenset(tenants)

    def remove(self, ws: WebSocket) -> None:
        """Stop sending frames to `ws`."""
        self._sockets.pop(ws, None)

    def count(self) -> int:
        """Consoles connected to this replica."""
        return len(self._sockets)

    async def send(self, key: str, frame: dict[str, Any], *, catch_up: bool = False) -> int:
        """Send a frame of tenant `key` to that tenant's consoles here; return how many got it."""
        sent = 0
        for ws, tenants in list(self._sockets.items()):
            if key not in tenants:
                continue
            try:
                await ws.send_json(frame)
                sent += 1
            except Exception:
                self.remove(ws)
        return sent

    def positions(self) -> dict[str, FrameId]:
        """The console feed is not buffered: nothing to catch up."""
        return {}


class ConsoleFeed:
    """Where handlers and routes send console frames: to a tenant's consoles on every replica."""

    def __init__(self, fanout: Fanout) -> None:
        self.fanout = fanout

    async def broadcast(self, frame: dict[str, Any], *, tenant: str) -> None:
        """Publish a frame for the consoles of `tenant`'s agents, on every replica."""
        await self.fanout.publish(tenant, frame)


def message_frame(
    conversation_id: str, role: str, text: str, at: str, emotion: Any
) -> dict[str, Any]:
    """A transcript line for the consoles."""
    return {
        "type": "message",
        "conversation_id": conversation_id,
        "role": role,
        "text": text,
        "at": at,
        "emotion": emotion,
    }
