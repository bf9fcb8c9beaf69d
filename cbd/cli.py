"""`cbd`: the Care-by-Design command line."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from cbd import deadletter, emotion, evaluate, issues, learning, reply_rubric, security, training
from cbd.procs import ProcessFailed
from cbd.runtime import DEFAULT_PORTS, Platform
from cbd.serve import SERVICES, serve
from cbd.stack import BrokerStorage, EmbeddedStack, StackPorts
from shared.settings import KafkaSettings

CARE_COMMANDS: dict[tuple[str, str], Callable[[argparse.Namespace], int]] = {
    ("evaluate", "report"): evaluate.main,
    ("evaluate", "scenarios"): evaluate.main,
    ("evaluate", "replies"): reply_rubric.main,
    ("evaluate", "issues"): issues.main,
    ("export", "training"): training.main,
    ("learning", "report"): learning.main,
}
"""The care loop's commands, by (command, sub-action)."""


def run(run_dir: Path, port_offset: int = 0, broker_storage: BrokerStorage = "s3") -> int:
    """Start the embedded platform in the foreground until Ctrl-C."""
    platform = Platform(
        stack=EmbeddedStack(
            run_dir, ports=StackPorts().shifted(port_offset), broker_storage=broker_storage
        ),
        service_ports={name: port + port_offset for name, port in DEFAULT_PORTS.items()},
    )

    def interrupted(signum: int, _: FrameType | None) -> None:
        raise KeyboardInterrupt(signum)

    # Both, explicitly: a shell that starts us in the background may have ignored SIGINT.
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    print("Starting Care-by-Design (embedded stack)...", flush=True)
    try:
        platform.start()
        stack = platform.stack
        print(
            "\nCare-by-Design is running.\n"
            f"  Web chat          {platform.url('ingest')}/\n"
            f"  Agent console     {platform.url('escalation')}/console"
            "  (development sign-in: agent / agent)\n"
            f"  Messages API      POST {platform.url('ingest')}"
            "/v1/conversations/{id}/messages\n"
            f"  Widget demo       {platform.url('ingest')}/widget-demo\n"
            f"  API description   {platform.url('ingest')}/openapi.json\n"
            f"  Customer admin    {platform.url('memory')}/v1/customers/{{id}}"
            "  (development token: dev-admin-token)\n"
            f"  Kafka (tansu)     127.0.0.1:{stack.ports.kafka}\n"
            f"  PostgreSQL        {stack.env()['CBD_PG_DSN']}\n"
            f"  Redis             {stack.env()['CBD_REDIS_URL']}\n"
            f"  LLM (OpenAI API)  {stack.env()['CBD_GENERATION_LLM_BASE_URL']}\n"
            + "".join(
                f"  {name:<17} {platform.url(name)}  (/metrics /livez /readyz)  "
                f"pid {platform.services[name].pid}\n"
                for name in SERVICES
            )
            + f"  Logs              {stack.logs}/\n"
            "Press Ctrl-C to stop.",
            flush=True,
        )
        platform.supervise()
    except ProcessFailed as exc:
        print(f"\nCould not start: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("\nStopping...", flush=True)
    finally:
        # A second Ctrl-C, or a SIGTERM after the first, used to cut the shutdown short and
        # leave the servers running, holding the ports the next `make run` needs.
        signal.signal(signal.SIGTERM, still_stopping)
        signal.signal(signal.SIGINT, still_stopping)
        platform.stop()
        print("Stopped.", flush=True)
    return 0


def still_stopping(_signum: int, _: FrameType | None) -> None:
    """While `make run` shuts down: say so, and let the shutdown finish."""
    print("Still stopping: the services and servers are shut down in turn.", flush=True)


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 (one line per subcommand)
    """Entry point of the `cbd` command."""
    parser = argparse.ArgumentParser(prog="cbd", description="Care-by-Design platform tools.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="run the whole platform on embedded servers")
    p_run.add_argument("--run-dir", type=Path, default=Path(".run"))
    p_run.add_argument(
        "--port-offset",
        type=int,
        default=0,
        help="add this to every port (for a second copy beside a running one)",
    )
    p_run.add_argument(
        "--broker-storage",
        choices=["s3", "memory"],
        default="s3",
        help="s3 (default): topics and offsets survive a broker restart; memory: faster under load",
    )
    p_serve = sub.add_parser("serve", help="run one service (its settings from the environment)")
    p_serve.add_argument("service", choices=SERVICES)
    p_dl = sub.add_parser("deadletter", help="inspect or replay dead-lettered messages")
    dl_sub = p_dl.add_subparsers(dest="action", required=True)
    dl_sub.add_parser("list", help="show every dead letter and its reason")
    p_replay = dl_sub.add_parser("replay", help="republish dead letters to their source topic")
    p_replay.add_argument("--source-topic", help="only letters from this topic")
    p_replay.add_argument("--dry-run", action="store_true", help="show, do not publish")
    p_emo = sub.add_parser("emotion", help="analyse messages or evaluate the emotion model")
    emo_sub = p_emo.add_subparsers(dest="action", required=True)
    p_an = emo_sub.add_parser(
        "analyze", help='analyse TEXT, or JSON Lines ({"text": ...}) from stdin'
    )
    p_an.add_argument("text", nargs="?", help="the message; omit to read JSON Lines on stdin")
    p_ev = emo_sub.add_parser(
        "evaluate", help='score on a JSON Lines file of {"text": ..., "label": ...}'
    )
    p_ev.add_argument(
        "file", nargs="?", help="omit for per-source reports: our test sets, public test splits"
    )
    p_ev.add_argument(
        "--model",
        default="model",
        choices=[*emotion.BASELINES, "all"],
        help="the platform's model (default), a lexicon-only baseline, or all of them",
    )
    p_ev.add_argument("--json", action="store_true", help="print the reports as JSON")
    p_eval = sub.add_parser(
        "evaluate", help="compare the baseline and care variants; score replies on the care checks"
    )
    eval_sub = p_eval.add_subparsers(dest="action", required=True)
    evaluate.add_report_parser(eval_sub)
    p_rep = eval_sub.add_parser(
        "replies", help="score what each scenario turn shows the customer (table and JSON)"
    )
    p_rep.add_argument("scenarios", help="a YAML file of conversations (see reply_scenarios.yaml)")
    p_rep.add_argument("--mode", default="llm_checked", choices=["llm", "llm_checked", "composed"])
    p_rep.add_argument("--llm-url", help="an OpenAI-compatible server for turns without a reply")
    p_rep.add_argument("--model", default="smollm2-135m-instruct")
    p_rep.add_argument("--max-tokens", type=int, default=80)
    p_rep.add_argument("--temperature", type=float, default=0.2)
    p_rep.add_argument("--json", help="write the full JSON report here (default: stdout)")
    p_rep.add_argument(
        "--scripted-only", action="store_true", help="only the scenarios whose turns give a reply"
    )
    issues.add_parser(eval_sub)
    p_export = sub.add_parser("export", help="export data sets")
    export_sub = p_export.add_subparsers(dest="action", required=True)
    training.add_parser(export_sub)
    p_learn = sub.add_parser("learning", help="what reviews and ratings teach")
    learn_sub = p_learn.add_subparsers(dest="action", required=True)
    learning.add_parser(learn_sub)
    security.add_commands(sub)
    args = parser.parse_args(argv)
    if (code := security.dispatch(args)) is not None:
        return code
    care_tool = CARE_COMMANDS.get((args.command, getattr(args, "action", "")))
    if care_tool is not None:
        return care_tool(args)
    if args.command == "emotion":
        return emotion.main(args)
    if args.command == "run":
        return run(args.run_dir, args.port_offset, args.broker_storage)
    if args.command == "deadletter":
        return asyncio.run(deadletter_command(args))
    serve(args.service)
    return 0


async def deadletter_command(args: argparse.Namespace) -> int:
    """`cbd deadletter list|replay`, against the broker in CBD_KAFKA_* settings."""
    settings = KafkaSettings()
    if args.action == "list":
        letters = await deadletter.list_letters(settings)
    else:
        letters = await deadletter.replay(
            settings, source_topic=args.source_topic, dry_run=args.dry_run
        )
    for letter in letters:
        print(deadletter.describe(letter))
    verb = {"list": "dead letters", "replay": "replayed"}[args.action]
    if args.action == "replay" and args.dry_run:
        verb = "would be replayed"
    print(f"{len(letters)} {verb}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
