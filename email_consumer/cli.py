"""`email-consumer`: run the worker, or inspect and repair the dead-letter queue.

Exit codes (CONTRACT.md): 0 success; 2 invalid usage or configuration; 1 anything unexpected.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from email_consumer import bootstrap
from email_consumer.dead_letters import DeadLetterSummary
from email_consumer.settings import ConsumerSettings, consumer_settings
from shared.cli import positive_int, stop_on_signals
from shared.errors import ConfigError, TransientError
from shared.logging import get_logger
from shared.runtime import freeze_start_up_objects
from shared.settings import Environment

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
DEFAULT_LIST_LIMIT = 100

_log = get_logger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = consumer_settings(Environment())
    except ConfigError as error:
        print(f"email-consumer: {error}", file=sys.stderr)
        return EXIT_USAGE
    bootstrap.set_up_logging(settings)
    try:
        if args.command == "run":
            return _run(settings)
        return _dlq(settings, args)
    except ConfigError as error:
        print(f"email-consumer: {error}", file=sys.stderr)
        return EXIT_USAGE
    except TransientError as error:
        print(f"email-consumer: {error}", file=sys.stderr)
        return EXIT_UNEXPECTED
    except Exception as error:  # noqa: BLE001 - the last resort: log it, exit 1, one line
        _log.exception("unexpected error")
        print(f"email-consumer: unexpected {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_UNEXPECTED


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="email-consumer",
        description="The welcome-email worker and its dead-letter queue tools.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "run", help="consume user_registered events until SIGTERM/SIGINT, then drain and exit 0"
    )
    dlq = commands.add_parser("dlq", help="inspect and repair the dead-letter queue")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    listing = dlq_commands.add_parser(
        "list", help="show dead-lettered events (error, attempts, time) without removing them"
    )
    # Listed events are held unacknowledged on one channel while listed: bounded by default.
    listing.add_argument(
        "--limit",
        type=positive_int,
        default=DEFAULT_LIST_LIMIT,
        help=f"at most N events (default {DEFAULT_LIST_LIMIT})",
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    replay = dlq_commands.add_parser(
        "replay", help="send dead-lettered events back to the worker, without loss"
    )
    replay.add_argument("--limit", type=positive_int, default=None, help="at most N events")
    dlq_commands.add_parser(
        "migrate",
        help="re-create a dead-letter queue declared by an older version, keeping its events",
    )
    purge = dlq_commands.add_parser("purge", help="delete every dead-lettered event")
    purge.add_argument("--yes", action="store_true", help="confirm the deletion")
    return parser


# How long a thread may keep the GIL while another waits for it (CPython's default: 5 ms). A
# pool thread whose SMTP reply or database answer has arrived waits for the GIL before it can go
# on, once per socket or database call, some fifteen times per email; at 200 emails/s the
# default made those waits most of an email's latency (p50 about 120 ms, against about 40 ms at
# 1 ms in the same bench), for no measurable gain in throughput.
GIL_SWITCH_INTERVAL_S = 0.001


def _run(settings: ConsumerSettings) -> int:
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    stopping = stop_on_signals()
    app = bootstrap.build_worker(settings, stopping)
    try:
        app.metrics.serve(settings.metrics_port, settings.metrics_address)
        freeze_start_up_objects()
        app.worker.run()
    finally:
        app.sender.close_all()
        app.processed.dispose()
    return EXIT_OK


def _dlq(settings: ConsumerSettings, args: argparse.Namespace) -> int:
    if args.dlq_command == "purge" and not args.yes:
        print(
            "email-consumer: dlq purge deletes every dead-lettered event; add --yes to confirm",
            file=sys.stderr,
        )
        return EXIT_USAGE
    # A tool reports its own failure in one line; pika's connection-attempt errors and the
    # "connected" line would only bury it.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    logging.getLogger("shared.amqp").setLevel(max(logging.WARNING, logging.root.level))
    with bootstrap.build_dead_letter_queue(settings) as dlq:
        if args.dlq_command == "list":
            _print_listing(dlq.list(args.limit), as_json=args.json)
        elif args.dlq_command == "migrate":
            moved = dlq.migrate()
            print(f"the dead-letter queue is current; {moved} event(s) moved")
        elif args.dlq_command == "replay":
            moved = dlq.replay(args.limit)
            print(f"replayed {moved} event(s) to {bootstrap.SERVICE}'s queue")
        else:
            purged = dlq.purge()
            print(f"purged {purged} event(s) from the dead-letter queue")
    return EXIT_OK


def _print_listing(summaries: list[DeadLetterSummary], *, as_json: bool) -> None:
    if as_json:
        for summary in summaries:
            print(json.dumps(summary.as_dict(), ensure_ascii=False))
        return
    if not summaries:
        print("the dead-letter queue is empty")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table()
    # Ids and times are copied into other commands and searches: never wrap them.
    table.add_column("event_id", no_wrap=True)
    table.add_column("error", overflow="fold")
    table.add_column("reason")
    table.add_column("attempts", justify="right")
    table.add_column("last failure", no_wrap=True)
    table.add_column("replays", justify="right")
    for s in summaries:
        error = f"{s.error_type or '?'}: {s.error_message or ''}"
        table.add_row(
            s.event_id or "?",
            error,
            s.dead_letter_reason or "?",
            str(s.attempts),
            s.last_failure_at or "?",
            str(s.replay_count),
        )
    console = Console(markup=False, highlight=False)
    if not console.is_terminal:
        # Piped into a file or another command: do not squeeze the table into 80 columns.
        console.width = 200
    console.print(table)
