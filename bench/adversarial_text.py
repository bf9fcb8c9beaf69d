"""What hostile text costs on the paths customer text meets, and what it cost under `re`.

    .venv/bin/python -m bench.adversarial_text

Every case is 4,000 characters shaped against the patterns (the cases of
tests/unit/test_adversarial_text.py). For each path it prints the median and the worst call;
then, in the same run, the marketing-opt-out rule as it was written for Python's `re` against
its RE2 form on the input that made it slow. A report, not a test: it always exits 0.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable

from shared.linear_re import compile_linear
from tests.unit.test_adversarial_text import CASES, LENGTH, PATHS

# memory's rule before this change: a run of n spaces can be split between `\s+` and `\s*` n
# ways, and each way is retried at every later position.
_BACKTRACKING = (
    r"\b(?:don'?t|do not|never|stop|no more)\s+(?:send(?:ing)?|email(?:ing)?|text(?:ing)?)?\s*"
    r"(?:me\s+)?(?:any\s+)?(?:marketing|newsletters?|promotions?|promotional|offers|spam|ads)\b"
)
_LINEAR = (
    r"\b(?:don'?t|do not|never|stop|no more)\s+(?:(?:send(?:ing)?|email(?:ing)?|text(?:ing)?)\s+)?"
    r"(?:me\s+)?(?:any\s+)?(?:marketing|newsletters?|promotions?|promotional|offers|spam|ads)\b"
)


def _time(call: Callable[[str], object], text: str) -> float:
    start = time.perf_counter()
    call(text)
    return time.perf_counter() - start


def main() -> None:
    """Print the figures."""
    print(f"hostile text, {len(CASES)} cases of {LENGTH} characters each")
    print(f"{'path':32s} {'p50 ms':>8s} {'max ms':>8s}  slowest case")
    for name, path in PATHS.items():
        times = [(_time(path, text), text) for text in CASES]
        worst, worst_text = max(times)
        p50 = statistics.median(t for t, _ in times)
        print(f"{name:32s} {p50 * 1000:8.2f} {worst * 1000:8.2f}  {worst_text[:24]!r}")
    slow_input = "don't" + " " * (LENGTH - 6) + "x"
    before = _time(re.compile(_BACKTRACKING, re.I).search, slow_input)
    after = _time(compile_linear(_LINEAR, ignore_case=True).search, slow_input)
    print(
        "marketing opt-out rule on \"don't\" + spaces + 'x': "
        f"re (as it was) {before * 1000:.0f} ms, RE2 {after * 1000:.2f} ms"
    )


if __name__ == "__main__":
    main()
