"""How fast the default emotion model is on one CPU core: load, memory, latency, throughput.

    .venv/bin/python -m bench.emotion_speed        # the default model (loaded, hash-checked)
    .venv/bin/python -m bench.emotion_speed own    # the earlier own-data model (trained at start)

Pinned to a single core with single-threaded BLAS, so the numbers are per core and compare
across machines of different sizes (a service replica is sized in cores). Messages are the
shipped test split, cycled. A report, not a test: it always exits 0.
"""

from __future__ import annotations

import os

# Before numpy, scipy or sklearn are imported: their BLAS/OpenMP pools are sized at import
# time, and a pool of N threads on one pinned core measures contention, not the model.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING  # noqa: E402

import psutil  # noqa: E402

if TYPE_CHECKING:
    from services.emotion.analyzer import EmotionAnalyzer

LATENCY_CALLS = 500
WARMUP_CALLS = 20
BATCH_SIZES = (1, 32, 128)
SECONDS_PER_BATCH_SIZE = 3.0


def pin_to_one_core() -> str:
    """Restrict this process to the first CPU it may use; says which, or why it could not."""
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError) as exc:  # not Linux, or not permitted
        return f"not pinned ({exc.__class__.__name__})"
    return f"pinned to cpu {cpu}"


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or the platform's guess elsewhere."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def rss_mib() -> float:
    """This process's resident memory in MiB."""
    return float(psutil.Process().memory_info().rss) / 2**20


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def latencies_ms(
    analyzer: EmotionAnalyzer, texts: Sequence[str]
) -> tuple[list[float], list[float]]:
    """Wall and CPU milliseconds per `analyze(text)` call, one message at a time.

    CPU time is what the call itself costs; on a machine shared with other work, wall time
    also counts the waits for a core, so both are reported.
    """
    for i in range(WARMUP_CALLS):
        analyzer.analyze(texts[i % len(texts)])
    wall, cpu = [], []
    for i in range(LATENCY_CALLS):
        text = texts[i % len(texts)]
        start, start_cpu = time.perf_counter(), time.process_time()
        analyzer.analyze(text)
        cpu.append((time.process_time() - start_cpu) * 1000)
        wall.append((time.perf_counter() - start) * 1000)
    return wall, cpu


def throughput(
    analyzer: EmotionAnalyzer, texts: Sequence[str], size: int
) -> tuple[int, float, float]:
    """Messages analysed, wall seconds and CPU seconds taken by `analyze_batch(size)`."""
    analyzer.analyze_batch([texts[i % len(texts)] for i in range(size)])  # warm-up
    done = 0
    start, start_cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < SECONDS_PER_BATCH_SIZE:
        analyzer.analyze_batch([texts[(done + i) % len(texts)] for i in range(size)])
        done += size
    return done, time.perf_counter() - start, time.process_time() - start_cpu


def main() -> int:
    """Run the measurements and print the report."""
    pinning = pin_to_one_core()
    rss: dict[str, float] = {"at start": rss_mib()}

    start = time.perf_counter()
    # Imported here, after pinning, so their cost is measured rather than hidden.
    import numpy as np  # noqa: PLC0415

    from services.emotion import dataset  # noqa: PLC0415
    from services.emotion.analyzer import EmotionAnalyzer  # noqa: PLC0415
    from services.emotion.transformer import load_model_from_settings  # noqa: PLC0415

    import_s = time.perf_counter() - start
    rss["after imports"] = rss_mib()

    start = time.perf_counter()
    kind = sys.argv[1] if len(sys.argv) > 1 else "learned"
    analyzer = EmotionAnalyzer(model=load_model_from_settings(kind, None))
    load_s = time.perf_counter() - start
    rss["after load"] = rss_mib()

    texts = [ex.text for ex in dataset.load("test")]
    ms, cpu_ms = latencies_ms(analyzer, texts)
    batches = {size: throughput(analyzer, texts, size) for size in BATCH_SIZES}
    rss["at end"] = rss_mib()

    print("emotion model speed (bench/emotion_speed.py)")
    print(f"  machine   {os.cpu_count()} CPUs, {cpu_model()}; {pinning}; BLAS/OpenMP threads 1")
    print(
        f"  software  Python {platform.python_version()}, numpy {np.__version__}, "
        f"scikit-learn imported: {'sklearn' in sys.modules}; model {analyzer.model_name}"
    )
    print(f"  messages  test split: {len(texts)} distinct texts, cycled")
    print()
    rows = [
        ("import (analyzer + deps)", f"{import_s:.2f} s"),
        ("load: EmotionAnalyzer()", f"{load_s:.2f} s"),
        *((f"RSS {when}", f"{mib:.0f} MiB") for when, mib in rss.items()),
        (f"analyze() p50 ({LATENCY_CALLS} calls)", f"{percentile(ms, 50):.2f} ms"),
        (f"analyze() p99 ({LATENCY_CALLS} calls)", f"{percentile(ms, 99):.2f} ms"),
        ("analyze() mean / max", f"{sum(ms) / len(ms):.2f} / {max(ms):.2f} ms"),
        (
            "analyze() CPU p50 / p99",
            f"{percentile(cpu_ms, 50):.2f} / {percentile(cpu_ms, 99):.2f} ms",
        ),
    ]
    for name, value in rows:
        print(f"  {name:<36}{value:>18}")
    print()
    print(
        f"  {'analyze_batch size':<20}{'messages':>10}{'msg/s':>10}{'ms/batch':>12}"
        f"{'msg/CPU-s':>12}"
    )
    for size, (done, seconds, cpu_seconds) in batches.items():
        per_batch_ms = seconds / (done / size) * 1000
        per_cpu = done / cpu_seconds if cpu_seconds else float("nan")
        print(f"  {size:<20}{done:>10}{done / seconds:>10.0f}{per_batch_ms:>12.2f}{per_cpu:>12.0f}")
    return 0


if __name__ == "__main__":
    try:
        main()
    except Exception:  # a report never fails the caller; show what went wrong instead
        traceback.print_exc(file=sys.stdout)
    sys.exit(0)
