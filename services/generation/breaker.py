"""A circuit breaker for the LLM server: stop waiting on a server that keeps failing.

While the server is down every turn would otherwise spend its retries and its first-token
budget before the customer hears anything. After `failure_threshold` failed requests in a
row the breaker opens and requests fail at once (the customer gets the caring fallback in
milliseconds); after `reset_after_s` one trial request is let through (half-open), and its
success closes the breaker again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

from prometheus_client import Counter, Gauge

BREAKER_STATE = Gauge(
    "cbd_llm_breaker_open", "1 while the LLM circuit breaker is open or half-open, else 0."
)
BREAKER_TRANSITIONS = Counter(
    "cbd_llm_breaker_transitions_total", "LLM circuit breaker state changes, by new state.", ["to"]
)


class BreakerState(StrEnum):
    """Where the breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Counts consecutive failures; opens, waits, then lets one trial request through."""

    def __init__(
        self,
        failure_threshold: int = 3,
        reset_after_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        """Closed, open, or half-open (the reset time has passed; a trial may go)."""
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock() - self._opened_at >= self.reset_after_s:
            return BreakerState.HALF_OPEN
        return BreakerState.OPEN

    def allow(self) -> bool:
        """Whether a request may go to the server now.

        Half-open lets exactly one request through: if every queued turn tried at once, a
        server that is still down would cost each of them the full timeout again.
        """
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        return False

    def record_success(self) -> None:
        """The server answered: close the breaker and forget past failures."""
        if self._opened_at is not None:
            BREAKER_TRANSITIONS.labels(BreakerState.CLOSED.value).inc()
        self._failures = 0
        self._opened_at = None
        self._trial_in_flight = False
        BREAKER_STATE.set(0)

    def record_failure(self) -> None:
        """The server failed a request: count it, and open (again) at the threshold."""
        self._failures += 1
        was_trial = self._trial_in_flight
        self._trial_in_flight = False
        if was_trial or self._failures >= self.failure_threshold:
            if self._opened_at is None or was_trial:
                BREAKER_TRANSITIONS.labels(BreakerState.OPEN.value).inc()
            self._opened_at = self._clock()
            BREAKER_STATE.set(1)

    def release_trial(self) -> None:
        """A trial request ended without a verdict (cancelled): let another one try."""
        self._trial_in_flight = False
