"""`producer-service`: register a user, run the outbox relay, or simulate load.

Exit codes (CONTRACT.md): 0 success, 2 invalid input or usage, 3 conflict, 1 anything else.
Errors are one line on stderr; logs go to stderr too, results to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any, NoReturn

import sqlalchemy as sa

from producer_service.bootstrap import Producer, bootstrap
from producer_service.ports import DuplicateUser
from producer_service.progress import terminal_progress
from producer_service.storage import database_reason
from producer_service.validation import (
    EMAIL_RULES,
    FULL_NAME_RULES,
    USERNAME_RULES,
    ValidationError,
)
from shared.cli import positive_int, stop_on_signals
from shared.errors import ConfigError, TransientError
from shared.logging import event_context, get_logger
from shared.runtime import freeze_start_up_objects

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_INVALID = 2
EXIT_CONFLICT = 3

_log = get_logger(__name__)
Command = Callable[[Producer, argparse.Namespace], int]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # usage errors exit 2 here, one line
    command: Command = args.command
    try:
        producer = bootstrap()
    except ConfigError as error:
        return _fail(EXIT_INVALID, f"configuration error: {error}")
    except sa.exc.SQLAlchemyError as error:
        return _fail(EXIT_UNEXPECTED, f"database unavailable: {database_reason(error)}")
    try:
        return command(producer, args)
    except ValidationError as error:
        return _fail(EXIT_INVALID, str(error))
    except DuplicateUser as error:
        return _fail(EXIT_CONFLICT, str(error))
    except ConfigError as error:
        return _fail(EXIT_INVALID, f"configuration error: {error}")
    except TransientError as error:
        return _fail(EXIT_UNEXPECTED, str(error))
    except sa.exc.SQLAlchemyError as error:
        # The driver's first line only, no traceback: SQLAlchemy's full text and a traceback
        # would add the statement, and a driver's later lines (PostgreSQL's DETAIL) the values.
        reason = database_reason(error)
        _log.error("database error", error_type=type(error).__name__, reason=reason)
        return _fail(EXIT_UNEXPECTED, f"database error: {reason}")
    except Exception as error:  # noqa: BLE001 - the last resort: log it, exit 1, one line
        # Where it happened, but not the message: that could quote a user's name or address.
        _log.error(
            "unexpected error",
            error_type=type(error).__name__,
            traceback="".join(traceback.format_tb(error.__traceback__)),
        )
        return _fail(EXIT_UNEXPECTED, f"unexpected error: {type(error).__name__}")
    finally:
        producer.close()


class OneLineArgumentParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr, exit 2 (the contract)."""

    def error(self, message: str) -> NoReturn:
        # argparse would print the usage block first; the line names where to find it.
        self.exit(EXIT_INVALID, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    # Sub-command parsers are made with the same class, so their errors are one line too.
    parser = OneLineArgumentParser(
        prog="producer-service",
        description="Register users and publish their user_registered events (outbox relay).",
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    register = commands.add_parser(
        "register",
        help="store a user and publish its user_registered event",
        description=(
            "Validate, store the user and its event in one transaction, then publish the event "
            "if the broker answers (otherwise it waits in the outbox for the relay). "
            "Prints the event id. Exit 2: invalid input; exit 3: already registered."
        ),
    )
    register.add_argument("username", metavar="USERNAME", help=USERNAME_RULES)
    register.add_argument("email", metavar="EMAIL", help=EMAIL_RULES)
    register.add_argument("--full-name", metavar="NAME", help=FULL_NAME_RULES)
    register.add_argument(
        "--json", action="store_true", help="print one JSON object instead of the event id"
    )
    register.set_defaults(command=_register)

    relay = commands.add_parser(
        "relay",
        help="publish pending outbox events with publisher confirms",
        description="Publish pending events until SIGTERM/SIGINT (exit 0), or drain once.",
    )
    relay.add_argument("--once", action="store_true", help="publish what is pending, then exit")
    relay.set_defaults(command=_relay)

    simulate = commands.add_parser(
        "simulate",
        help="register N synthetic users (load and demos)",
        description=(
            "Register N synthetic users through the normal use case, publishing each event as "
            "soon as it is committed (as register does; the relay publishes whatever that "
            "misses), then wait until all are published, and print a summary."
        ),
    )
    simulate.add_argument("--count", type=positive_int, required=True, metavar="N")
    simulate.add_argument(
        "--rate", type=_positive_float, metavar="R", help="registrations per second (default: max)"
    )
    simulate.add_argument(
        "--relay-only",
        action="store_true",
        help="only store the events; leave every one to a running relay",
    )
    simulate.set_defaults(command=_simulate)
    return parser


# ---- commands ------------------------------------------------------------------------------


def _register(producer: Producer, args: argparse.Namespace) -> int:
    registration = producer.register(args.username, args.email, args.full_name)
    with event_context(registration.event_id, registration.correlation_id):
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
        print(json.dumps(document, ensure_ascii=False))
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
    except TransientError as error:
        reason = str(error)
        _log.warning("event not published yet", error_type=type(error).__name__, reason=reason)
    except Exception as error:  # noqa: BLE001 - after the commit, nothing may turn into exit 1
        # The type only: the message of an unexpected error could hold the user's data.
        reason = type(error).__name__
        _log.error("publishing the new event failed", error_type=reason)
    else:
        if published:
            return True
        reason = "not published yet"
    print(
        f"event {event_id} was not published ({reason}); it is queued in the outbox "
        "and will be published by the relay",
        file=sys.stderr,
    )
    return False


def _try_to_publish(producer: Producer, event_id: str) -> bool:
    publisher = producer.connect_publisher()
    try:
        if event_id in producer.relay().publish_events(publisher, [event_id]):
            return True
    finally:
        publisher.close()
    # Not published by us: a relay claimed it first, and may have published it already (if it is
    # still waiting for the confirm, the event is reported as queued, which it is).
    return producer.outbox.count_published([event_id]) == 1


def _relay(producer: Producer, args: argparse.Namespace) -> int:
    stop = stop_on_signals()
    relay = producer.relay(stop)
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
    stop = stop_on_signals()
    # Before the publishing thread opens its connection: a connection replaced later must not
    # leave frozen (never collected) objects behind.
    freeze_start_up_objects()
    with (
        terminal_progress(args.count) as progress,
        nullcontext(None) if args.relay_only else producer.publish_after_commit(stop) as now,
    ):
        simulation = producer.simulation(stop, publish_now=now)
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


def _fail(code: int, message: str) -> int:
    print(f"producer-service: error: {message}", file=sys.stderr)
    return code


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value
