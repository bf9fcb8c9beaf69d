"""Test platforms draw many ports at once; no two may be the same, and none may be in the
range the kernel hands to outgoing connections (a restarted server must be able to bind)."""

from __future__ import annotations

import random
import socket

import pytest

from cbd import procs
from cbd.procs import _ephemeral_floor, free_port


def test_a_thousand_ports_are_all_different() -> None:
    # The kernel's own choice (bind to port 0) repeated a port within 20 in 1 % of tries here,
    # so a thousand draws would all but surely repeat one.
    ports = [free_port() for _ in range(1000)]
    assert len(set(ports)) == len(ports)


def test_ports_avoid_fixed_ports_and_the_ephemeral_range() -> None:
    ceiling = _ephemeral_floor()
    for _ in range(50):
        port = free_port()
        assert 20000 <= port < ceiling


def test_a_port_in_use_is_never_handed_out(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        real = random.randrange
        draws = iter([taken, taken])
        # The draw is random; make the port in use come up first, twice.
        monkeypatch.setattr(random, "randrange", lambda a, b: next(draws, None) or real(a, b))
        monkeypatch.setattr(procs, "_PORT_FLOOR", 0)
        assert procs.free_port() != taken
