"""What the care check costs, without an LLM: p50/p99 per sentence and per reply, throughput.

`bench.generation_overhead` measures the check on what the local model streams, but it needs
the model server and takes minutes on a busy machine. This bench feeds recorded replies
straight through the checked stream, word by word as a model streams them, with the real
check the service builds (VADER and the tone cues, grounding against the demo knowledge base,
the voice and language checks, MiniLM relevance at the end):

- the replies the care tests and the rubric use (`reply_scenarios.yaml`), the labelled
  relevance pairs and the labelled voice set (`voice_replies.jsonl`: what SmolLM2 wrote);
- each reply against its own customer message, with the emotion the scenario gives.

It prints, in milliseconds: the check on the first ended sentence (what it adds to the first
released sentence, the issue's <= 30 ms p99 goal; regeneration excluded), every sentence
check, the end-of-reply checks (relevance embeds the reply), and a whole reply; CPU time
beside wall time (on a shared machine wall time includes waiting for a core); then replies
and sentences checked per second on one core.

    make bench
    .venv/bin/python -m bench.care_check --rounds 3
"""

from __future__ import annotations

import argparse
import json
import re
import time
from dataclasses import dataclass
from typing import Any, cast

import yaml

from bench.generation_overhead import routed_turn
from bench.turn_latency import pct
from services.generation.care import CheckedStream
from services.generation.handlers import GenerationHandlers
from services.generation.settings import PACKAGE_DIR, GenerationSettings
from services.generation.variants import Variant
from shared.events import EmotionLabel
from shared.kafka import EventBus
from shared.llm import ChatClient

DATA = PACKAGE_DIR / "data"


@dataclass(frozen=True)
class Case:
    """One customer message and one reply to check against it."""

    message: str
    emotion: EmotionLabel
    reply: str


def cases() -> list[Case]:
    """Every recorded reply the project keeps, with the message it answered."""
    found: list[Case] = []
    spec = yaml.safe_load((DATA / "reply_scenarios.yaml").read_text(encoding="utf-8"))
    for scenario in spec["scenarios"]:
        for turn in scenario["turns"]:
            emotion = EmotionLabel(turn.get("emotion", "neutral"))
            for reply in [turn.get("reply"), *(turn.get("regenerated") or [])]:
                if reply:
                    found.append(Case(turn["text"], emotion, reply))
    for name in ("relevance_pairs.jsonl", "voice_replies.jsonl"):
        for line in (DATA / name).read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                emotion = EmotionLabel(row.get("emotion", "neutral"))
                found.append(Case(row["message"], emotion, row["reply"]))
    return found


class _NoBus:
    async def publish(self, *_: Any, **__: Any) -> None:
        """Nothing is published: only the check runs."""


def line(name: str, values: list[float], unit: str = "ms", scale: float = 1000.0) -> str:
    """p50 and p99 of one measurement."""
    v = [x * scale for x in values]
    return (
        f"{name:<44} n={len(v):<5} p50={pct(v, 50):8.3f} {unit}  p99={pct(v, 99):8.3f} {unit}"
        f"  max={max(v):8.3f} {unit}"
    )


def measure(rounds: int) -> dict[str, Any]:
    """Check every case `rounds` times; return the figures."""
    settings = GenerationSettings(delta_flush_ms=0)
    handlers = GenerationHandlers(cast(EventBus, _NoBus()), cast(ChatClient, None), settings)
    all_cases = cases()
    prepared = []
    for case in all_cases:
        event = routed_turn(case.message, case.emotion)
        prompt = handlers.prompts.build(event.payload, Variant.CARE)
        prepared.append((event, prompt, re.findall(r"\S+\s*", case.reply)))
    # Warm-up: the embedder's and the language model's first calls load their weights.
    for event, prompt, pieces in prepared[:5]:
        guard = CheckedStream(handlers.rails, handlers.care.for_turn(event.payload, prompt))
        for piece in pieces:
            guard.feed(piece)
        guard.finish()
    first: list[float] = []
    first_cpu: list[float] = []
    sentence: list[float] = []
    end: list[float] = []
    whole: list[float] = []
    whole_cpu: list[float] = []
    sentences = 0
    started, started_cpu = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        for event, prompt, pieces in prepared:
            t0, c0 = time.perf_counter(), time.thread_time()
            guard = CheckedStream(handlers.rails, handlers.care.for_turn(event.payload, prompt))
            for piece in pieces:
                guard.feed(piece)
                if guard.stopped:
                    break
            t1 = time.perf_counter()
            guard.finish()
            t2 = time.perf_counter()
            if guard.check_s:
                first.append(guard.check_s[0])
                first_cpu.append(guard.check_cpu_s[0])
            sentence += guard.check_s
            sentences += len(guard.check_s)
            end.append(t2 - t1)
            whole.append(t2 - t0)
            whole_cpu.append(time.thread_time() - c0)
    wall = time.perf_counter() - started
    cpu = time.process_time() - started_cpu
    replies = rounds * len(prepared)
    print(f"care check on {len(prepared)} recorded replies x {rounds} rounds (no LLM)")
    for name, values in (
        ("check on the first ended sentence", first),
        ("  the same, CPU time", first_cpu),
        ("each batch of ended sentences", sentence),
        ("end-of-reply checks (relevance)", end),
        ("whole reply (stream + end)", whole),
        ("  the same, CPU time", whole_cpu),
    ):
        print(line(name, values))
    print(
        f"throughput: {replies / wall:8.1f} replies/s, {sentences / wall:8.1f} sentence "
        f"batches/s (wall {wall:.2f} s, CPU {cpu:.2f} s)"
    )
    return {
        "replies": replies,
        "first_sentence_ms": {"p50": pct(first, 50) * 1e3, "p99": pct(first, 99) * 1e3},
        "whole_reply_ms": {"p50": pct(whole, 50) * 1e3, "p99": pct(whole, 99) * 1e3},
        "replies_per_s": replies / wall,
    }


def main() -> None:
    """Entry point of `make bench`."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="also print the figures as JSON")
    args = parser.parse_args()
    figures = measure(args.rounds)
    if args.json:
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
