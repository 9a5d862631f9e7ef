"""`producer-service`: register a user, run the outbox relay, or simulate load.

Exit codes and the one-line error style come from `shared.cli` (CONTRACT.md): 0 success, 2
invalid input, usage or configuration, 3 conflict, 1 anything else. Logs go to stderr, results
to stdout.
"""

from __future__ import annotations

import argparse
import sys
import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

from producer_service.ports import DuplicateUser
from producer_service.settings import ProducerSettings
from producer_service.validation import (
    EMAIL_RULES,
    FULL_NAME_RULES,
    USERNAME_RULES,
    ValidationError,
)
from shared.amqp import BrokerRefused, refuse_bad_credentials
from shared.cli import (
    EXIT_CONFLICT,
    EXIT_INVALID,
    EXIT_OK,
    MESSAGE_LIMIT,
    ExitCodes,
    add_command,
    new_parser,
    parse,
    positive_int,
    run,
    stop_on_signals,
)
from shared.display import json_line, printable, quoted
from shared.errors import TransientError
from shared.health_probe import add_health_command, run_health
from shared.logging import event_context, get_logger, redact
from shared.runtime import freeze_start_up_objects
from shared.settings import Environment

if TYPE_CHECKING:
    from producer_service.bootstrap import Producer

PROG = "producer-service"
EXIT_CODES: ExitCodes = (
    (ValidationError, EXIT_INVALID, ""),
    (DuplicateUser, EXIT_CONFLICT, ""),
)

_log = get_logger(__name__)
Command = Callable[["Producer", argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(build_parser(), argv)  # usage errors exit 2 here, one line
    if args.command is _health:
        # Asks the running relay; opening (and upgrading) the database here would be wrong.
        return run(PROG, _health, EXIT_CODES)
    return run(PROG, lambda: _start(args.command, args), EXIT_CODES)


def _start(command: Command, args: argparse.Namespace) -> int:
    # Imported here, not at the top: `health` (a container healthcheck) needs none of it.
    import sqlalchemy as sa

    from producer_service.bootstrap import bootstrap
    from shared.database import DatabaseUnreachable, reason_of

    producer = bootstrap()
    try:
        return command(producer, args)
    except sa.exc.SQLAlchemyError as error:
        # The driver's first line only: SQLAlchemy's full text would add the statement.
        raise DatabaseUnreachable(f"database error: {reason_of(error)}") from None
    finally:
        producer.close()


def build_parser() -> argparse.ArgumentParser:
    parser = new_parser(
        PROG,
        "Register users and publish their user_registered events (outbox relay).",
        settings=ProducerSettings.from_env,
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    register = add_command(
        commands,
        "register",
        help="store a user and publish its user_registered event",
        description=(
            "Validate, store the user and its event in one transaction, then publish the event "
            "if the broker answers (otherwise it waits in the outbox for the relay, and exit is "
            "still 0). Prints the event id. Exit 2: invalid input; exit 3: already registered."
        ),
    )
    register.add_argument("username", metavar="USERNAME", help=USERNAME_RULES)
    register.add_argument("email", metavar="EMAIL", help=EMAIL_RULES)
    register.add_argument("--full-name", metavar="NAME", help=FULL_NAME_RULES)
    register.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the event id"
    )
    register.set_defaults(command=_register)

    relay = add_command(
        commands,
        "relay",
        help="publish pending outbox events with publisher confirms",
        description=(
            "Publish pending events until SIGTERM/SIGINT (exit 0), or drain once. Waits for a "
            "broker that is down; exits 2 at start-up if it refuses AMQP_URL's login or vhost."
        ),
    )
    relay.add_argument("--once", action="store_true", help="publish what is pending, then exit")
    relay.set_defaults(command=_relay)

    simulate = add_command(
        commands,
        "simulate",
        help="register N synthetic users (load and demos)",
        description=(
            "Register N synthetic users through the normal use case, publishing each event as "
            "soon as it is committed (as register does; the relay publishes whatever that "
            "misses), then wait until all are published, and print a summary."
        ),
    )
    simulate.add_argument(
        "--count", type=positive_int, required=True, metavar="N", help="users to register"
    )
    simulate.add_argument(
        "--rate", type=_positive_float, metavar="R", help="registrations per second (default: max)"
    )
    simulate.add_argument(
        "--relay-only",
        action="store_true",
        help="only store the events; leave every one to a running relay",
    )
    simulate.set_defaults(command=_simulate)
    add_health_command(commands, "relay").set_defaults(command=_health)
    return parser


# ---- commands ------------------------------------------------------------------------------


def _register(producer: Producer, args: argparse.Namespace) -> int:
    from shared.tracing import within  # not at the top: `health` needs none of it

    registration = producer.register(args.username, args.email, args.full_name)
    with (
        event_context(registration.event_id, registration.correlation_id),
        within(registration.traceparent),
    ):
        _log.info("user registered", user_id=registration.user_id)
        published = _publish_now(producer, registration.event_id)
    if args.json:
        document: dict[str, Any] = {
            "event_id": registration.event_id,
            "user_id": registration.user_id,
            "username": registration.username,
            "email": registration.email,
            "published": published,
        }
        print(json_line(document))
    else:
        print(registration.event_id)
    return EXIT_OK


def _publish_now(producer: Producer, event_id: str) -> bool:
    """Publish the new event at once if possible; otherwise say it waits in the outbox.

    Never raises: the registration is committed, and its event is safe in the outbox whatever
    goes wrong here, so `register` must still exit 0 (the relay publishes the event later).
    """
    try:
        published = _try_to_publish(producer, event_id)
    except BrokerRefused as error:
        reason = str(error)
        _log.error("the broker refused the connection", reason=reason)
    except TransientError as error:
        reason = str(error)
        _log.warning("event not published yet", error_type=type(error).__name__, reason=reason)
    except Exception as error:  # noqa: BLE001 - after the commit, nothing may turn into exit 1
        reason = f"{type(error).__name__}: {error}"
        _log.error("publishing the new event failed", error_type=type(error).__name__)
    else:
        if published:
            return True
        reason = "not published yet"
    shown = printable(redact(reason), MESSAGE_LIMIT)
    print(
        f"event {event_id} was not published ({shown}); it is queued in the "
        "outbox and will be published by the relay",
        file=sys.stderr,
    )
    return False


def _try_to_publish(producer: Producer, event_id: str) -> bool:
    publisher = producer.connect_publisher()
    try:
        published, _failed = producer.relay().publish_pending(publisher, event_ids=[event_id])
        if published:
            return True
    finally:
        publisher.close()
    # Not published by us: a relay claimed it first, and may have published it already (if it is
    # still waiting for the confirm, the event is reported as queued, which it is).
    return producer.outbox.count_published([event_id]) == 1


def _health() -> int:
    return run_health(PROG, ProducerSettings.from_env(Environment()).metrics)


def _relay(producer: Producer, args: argparse.Namespace) -> int:
    # A refused login or vhost is configuration: exit 2 now rather than retry forever.
    from shared import metrics_server

    refuse_bad_credentials(producer.settings.broker)
    stop = stop_on_signals()
    monitoring = producer.monitoring()
    metrics_server.serve(producer.settings.metrics, monitoring.metrics.registry, monitoring.health)
    relay = producer.relay(stop, monitoring=monitoring)
    _log.info("relay starting", once=args.once, batch_size=producer.settings.relay.batch_size)
    freeze_start_up_objects()
    totals = relay.run_once() if args.once else relay.run_forever()
    _log.info(
        "relay stopped", published=totals.published, failed=totals.failed, deleted=totals.deleted
    )
    if args.once:
        print(f"published {totals.published} events; {totals.failed} failed and remain pending")
    return EXIT_OK


def _simulate(producer: Producer, args: argparse.Namespace) -> int:
    from producer_service.progress import terminal_progress
    from producer_service.relay import relaying_meanwhile

    refuse_bad_credentials(producer.settings.broker)
    stop = stop_on_signals()
    # Before the relay thread opens its connection: a connection replaced later must not leave
    # frozen (never collected) objects behind.
    freeze_start_up_objects()
    # Each registration wakes a relay of our own, which publishes its event at once.
    commits = None if args.relay_only else threading.Event()
    relaying = (
        nullcontext() if commits is None else relaying_meanwhile(producer.relay(commits=commits))
    )
    with terminal_progress(args.count) as progress, relaying:
        simulation = producer.simulation(stop, commits=commits)
        summary = simulation.run(args.count, rate=args.rate, progress=progress)
    print(
        f"registered {summary.registered} of {summary.requested} users in "
        f"{summary.register_s:.2f} s ({summary.register_rate:.0f}/s)"
    )
    print(
        f"published {summary.published} of {summary.registered} events in "
        f"{summary.publish_s:.2f} s ({summary.publish_rate:.0f}/s)"
    )
    pending = summary.registered - summary.published
    if pending:
        print(
            f"{pending} events are still pending in the outbox: is `producer-service relay` "
            "running?",
            file=sys.stderr,
        )
    return EXIT_OK


# ---- helpers -------------------------------------------------------------------------------


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {quoted(text)}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value
