"""`make run` shuts everything down even when Ctrl-C comes again while it is stopping."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any, ClassVar

import pytest

from cbd import cli


class SignalledPlatform:
    """Stands in for the embedded platform: the user presses Ctrl-C during start, and again
    (then a SIGTERM) while it stops."""

    instances: ClassVar[list[SignalledPlatform]] = []

    def __init__(self, **_: Any) -> None:
        self.stopped = False
        SignalledPlatform.instances.append(self)

    def start(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(1)  # the handler interrupts this

    def stop(self) -> None:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        self.stopped = True


def test_a_second_ctrl_c_does_not_cut_the_shutdown_short(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "Platform", SignalledPlatform)
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            code = cli.run(tmp_path)
        except KeyboardInterrupt:
            pytest.fail("the second signal interrupted the shutdown")
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    assert code == 0
    assert SignalledPlatform.instances[-1].stopped
    out = capsys.readouterr().out
    assert "Stopping..." in out
    assert "Still stopping" in out
    assert out.rstrip().endswith("Stopped.")
