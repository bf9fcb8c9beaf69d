"""Run one service: `python -m cbd.serve <service>` (what containers and `make run` call)."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

import uvicorn

SERVICES = ("ingest", "emotion", "memory", "escalation", "generation", "audit")


def load(service: str) -> tuple[Any, Any]:
    """The service's settings (read from the environment) and its ASGI app."""
    if service not in SERVICES:
        raise SystemExit(f"unknown service {service!r}; choose from {', '.join(SERVICES)}")
    module = importlib.import_module(f"services.{service}.app")
    settings = module.Settings()
    return settings, module.create_app(settings)


def serve(service: str) -> None:
    """Serve one service until SIGINT/SIGTERM, finishing in-flight work first."""
    settings, app = load(service)
    # A service that reads WebSocket frames says how long they may be (ingest: 16 KiB); the
    # server drops a connection sending frames past four times that, before buffering more.
    frame_limit = getattr(settings, "ws_max_frame_bytes", None)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        ws="websockets",
        ws_max_size=4 * frame_limit if frame_limit else 16 * 1024 * 1024,
        timeout_graceful_shutdown=10,
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point for `python -m cbd.serve`."""
    parser = argparse.ArgumentParser(prog="python -m cbd.serve", description=__doc__)
    parser.add_argument("service", choices=SERVICES)
    serve(parser.parse_args(argv).service)


if __name__ == "__main__":
    main()
