"""Live updates for the agents' consoles: queue changes and new messages, over WebSockets."""

from __future__ import annotations

from typing import Any

from starlette.websockets import WebSocket


class AgentHub:
    """The consoles connected to this replica.

    Every console hears every frame and shows the ones for the conversation it has open;
    agents are few, so filtering in the browser costs less than tracking who opened what.
    """

    def __init__(self) -> None:
        self._sockets: set[WebSocket] = set()

    def add(self, ws: WebSocket) -> None:
        """Start sending frames to `ws`."""
        self._sockets.add(ws)

    def remove(self, ws: WebSocket) -> None:
        """Stop sending frames to `ws`."""
        self._sockets.discard(ws)

    async def broadcast(self, frame: dict[str, Any]) -> int:
        """Send a frame to every console; return how many got it."""
        sent = 0
        for ws in list(self._sockets):
            try:
                await ws.send_json(frame)
                sent += 1
            except Exception:
                self.remove(ws)
        return sent
