"""What the embedded platform costs while nobody talks to it: CPU per process, idle.

    .venv/bin/python -m bench.idle_cpu [--fetch-wait-ms 20 100 200] [--seconds 20]

Starts the platform without the LLM (the broker, PostgreSQL, Redis, the CRM stand-in and the
six services) once per fetch wait, waits until it is ready and settled, then reads each
process's CPU time from /proc over a quiet window. Every consumer polls the broker once per
`CBD_KAFKA_FETCH_MAX_WAIT_MS` while idle, so this is the floor under every other figure on a
small machine. A report, not a test: it always exits 0.
"""

from __future__ import annotations

import argparse
import os
import platform as host
import tempfile
import time
from pathlib import Path

from bench.capacity import cpu_seconds
from cbd.runtime import Platform


def idle_share(fetch_wait_ms: int, seconds: float) -> dict[str, float]:
    """Percent of one core each process used over `seconds` of idleness."""
    run_dir = Path(tempfile.mkdtemp(prefix="cbd-idle-"))
    wait = {"CBD_KAFKA_FETCH_MAX_WAIT_MS": str(fetch_wait_ms)}
    plat = Platform.for_tests(run_dir, extra_env=wait)
    plat.stack.with_llm = False
    plat.start()
    try:
        # Start-up work (migrations, model loads, group joins) settles first.
        time.sleep(10)
        pids: dict[str, int | None] = {
            proc.name.split(" ")[0]: proc.proc.pid
            for proc in [*plat.stack.processes, *plat.services.values()]
            if proc.proc is not None
        }
        before = cpu_seconds(pids)
        started = time.monotonic()
        time.sleep(seconds)
        elapsed = time.monotonic() - started
        after = cpu_seconds(pids)
        return {name: (after[name] - before[name]) / elapsed * 100 for name in after}
    finally:
        plat.stop()


def main() -> None:
    """Print one line per fetch wait: each process's share of a core, and the total."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fetch-wait-ms", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    print(f"idle CPU, % of one core ({os.cpu_count()} cores, {host.machine()}, {host.node()})")
    for wait in args.fetch_wait_ms:
        share = idle_share(wait, args.seconds)
        parts = " ".join(f"{n}={v:.0f}" for n, v in sorted(share.items(), key=lambda kv: -kv[1]))
        print(f"fetch wait {wait:>4} ms: total {sum(share.values()):.0f}  ({parts})", flush=True)


if __name__ == "__main__":
    main()
