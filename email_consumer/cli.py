"""`email-consumer`: run the worker, or inspect and repair the dead-letter queue.

Exit codes and the one-line error style come from `shared.cli` (CONTRACT.md): 0 success; 2
invalid usage or configuration (a refused broker login or vhost at start-up included); 1
anything unexpected.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from email_consumer.settings import ConsumerSettings
from shared.amqp import refuse_bad_credentials
from shared.cli import (
    EXIT_INVALID,
    EXIT_OK,
    add_command,
    fail,
    new_parser,
    parse,
    positive_int,
    run,
    stop_on_signals,
)
from shared.display import json_line, printable
from shared.health_probe import add_health_command, run_health
from shared.logging import get_logger
from shared.runtime import freeze_start_up_objects
from shared.settings import Environment

if TYPE_CHECKING:
    from email_consumer.dead_letters import DeadLetterSummary

PROG = "email-consumer"
DATABASE_VARIABLE = "CONSUMER_DATABASE_URL"
DEFAULT_LIST_LIMIT = 100

_log = get_logger(__name__)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(_parser(), argv)
    return run(PROG, lambda: _start(args))


def _start(args: argparse.Namespace) -> int:
    settings = ConsumerSettings.from_env(Environment())
    if args.command == "health":
        # A container healthcheck, every few seconds: it needs none of the worker's machinery
        # (SQLAlchemy, Jinja, the SMTP sender), and importing it would take most of its time.
        return run_health(PROG, settings.metrics)
    from email_consumer import bootstrap, wire_properties

    # Before any connection opens, for every connection of the process: a header table pika
    # cannot decode then costs one message, not the connection (the worker's or a DLQ tool's).
    wire_properties.install()
    bootstrap.set_up_logging(settings)
    bootstrap.set_up_tracing(settings)
    if args.command == "run":
        return _run(settings)
    return _dlq(settings, args)


def _parser() -> argparse.ArgumentParser:
    parser = new_parser(
        PROG,
        "The welcome-email worker and its dead-letter queue tools.",
        settings=ConsumerSettings.from_env,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_command(
        commands,
        "run",
        help="consume user_registered events until SIGTERM/SIGINT, then drain and exit 0",
        description=(
            "Consume user_registered events and send one welcome email for each, until "
            "SIGTERM/SIGINT; then finish in-flight work and exit 0. Waits for a broker that is "
            "down; exits 2 at start-up if it refuses AMQP_URL's login or vhost."
        ),
    )
    add_health_command(commands, "the worker")
    dlq = add_command(
        commands,
        "dlq",
        help="inspect and repair the dead-letter queue",
        description="List, replay or purge the events in the dead-letter queue.",
    )
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    listing = add_command(
        dlq_commands,
        "list",
        help="show dead-lettered events (error, attempts, time) without removing them",
        description=(
            "Show dead-lettered events with their error, attempts and time; the queue is left "
            "as it was. Values are shown with control characters escaped."
        ),
    )
    # Listed events are held unacknowledged on one channel while listed: bounded by default.
    listing.add_argument(
        "--limit",
        type=positive_int,
        default=DEFAULT_LIST_LIMIT,
        help=f"at most N events (default {DEFAULT_LIST_LIMIT})",
    )
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    replay = add_command(
        dlq_commands,
        "replay",
        help="send dead-lettered events back to the worker, without loss",
        description=(
            "Move dead-lettered events back to the worker's queue for another try; each is "
            "removed from the DLQ only once the broker confirmed its copy."
        ),
    )
    replay.add_argument("--limit", type=positive_int, default=None, help="at most N events")
    add_command(
        dlq_commands,
        "migrate",
        help="re-create a dead-letter queue declared by an older version, keeping its events",
        description=(
            "Re-create a dead-letter queue declared by a version before 2026-12-01 (a quorum "
            "queue) as a classic queue, moving every event through a holding queue; safe to run "
            "again after a crash. Needs the configure permission."
        ),
    )
    purge = add_command(
        dlq_commands,
        "purge",
        help="delete every dead-lettered event",
        description="Delete every event in the dead-letter queue (needs --yes).",
    )
    purge.add_argument("--yes", action="store_true", help="confirm the deletion")
    return parser


# How long a thread may keep the GIL while another waits (CPython's default: 5 ms). A pool
# thread waits for it after each SMTP or database answer, some fifteen times per email; under
# load the default made those waits most of an email's latency (docs/PERFORMANCE.md).
GIL_SWITCH_INTERVAL_S = 0.001


def _run(settings: ConsumerSettings) -> int:
    from email_consumer import bootstrap
    from shared import metrics_server
    from shared.database import check_database

    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    # Start-up checks, each failing with one line naming the variable: a database URL that
    # cannot be used, a broker refusing the login or vhost, a metrics port that is taken.
    bootstrap.check_broker_settings(settings)
    check_database(settings.database_url, DATABASE_VARIABLE)
    refuse_bad_credentials(settings.broker)
    stopping = stop_on_signals()
    app = bootstrap.build_worker(settings, stopping)
    try:
        metrics_server.serve(settings.metrics, app.metrics.registry, app.status)
        freeze_start_up_objects()
        app.worker.run()
    finally:
        app.sender.close_all()
        app.processed.dispose()
    return EXIT_OK


def _dlq(settings: ConsumerSettings, args: argparse.Namespace) -> int:
    from email_consumer import bootstrap

    if args.dlq_command == "purge" and not args.yes:
        return fail(
            PROG, EXIT_INVALID, "dlq purge deletes every dead-lettered event; add --yes to confirm"
        )
    # A tool reports its own failure in one line; the "connected" line would only bury it.
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
            print(json_line(summary.as_dict()))
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
        # Every value came with the message, from whoever published it: escaped, so none can
        # drive the operator's terminal.
        error = f"{s.error_type or '?'}: {s.error_message or ''}"
        table.add_row(
            *(
                printable(value)
                for value in (
                    s.event_id or "?",
                    error,
                    s.dead_letter_reason or "?",
                    str(s.attempts),
                    s.last_failure_at or "?",
                    str(s.replay_count),
                )
            )
        )
    console = Console(markup=False, highlight=False)
    if not console.is_terminal:
        # Piped into a file or another command: do not squeeze the table into 80 columns.
        console.width = 200
    console.print(table)
