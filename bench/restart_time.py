"""How long each service takes from a `kill -9` to ready again, without load.

Starts the chaos platform (embedded servers, no LLM), then kills each service once, lets the
supervisor restart it, and prints the time to the new process and to its `/readyz` answering:
the interpreter, imports and lifespan (clients, migrations, consumer group joins) of a restart.

    .venv/bin/python -m bench.restart_time
    .venv/bin/python -m bench.restart_time memory escalation
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from cbd.chaos import chaos_platform
from cbd.procs import http_ok
from cbd.serve import SERVICES


def main() -> None:
    """Print kill-to-restart and kill-to-ready for each named service."""
    parser = argparse.ArgumentParser(prog="python -m bench.restart_time", description=__doc__)
    parser.add_argument("services", nargs="*", help=f"from {', '.join(SERVICES)} (default: all)")
    names = parser.parse_args().services or list(SERVICES)
    if unknown := sorted(set(names) - set(SERVICES)):
        parser.error(f"unknown services: {', '.join(unknown)}")
    with tempfile.TemporaryDirectory(prefix="cbd-restart-") as tmp:
        platform = chaos_platform(Path(tmp))
        started = time.monotonic()
        platform.start()
        print(f"platform started in {time.monotonic() - started:.1f} s", flush=True)
        try:
            for name in names:
                time.sleep(3.0)  # settled: groups formed, heartbeats flowing
                killed = time.monotonic()
                platform.kill_service(name)
                platform.restart_exited()
                restarted = time.monotonic() - killed
                while not http_ok(f"{platform.url(name)}/readyz"):
                    time.sleep(0.05)
                ready = time.monotonic() - killed
                print(f"{name:<11} restarted {restarted:.2f} s, ready {ready:.2f} s", flush=True)
        finally:
            platform.stop()


if __name__ == "__main__":
    main()
