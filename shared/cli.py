"""What both command-line entry points share: parsing, the error-to-exit-code map, signals.

Exit codes (CONTRACT.md): 0 success; 2 invalid input, usage or configuration; 3 conflict;
1 anything unexpected. Every failure is one line on stderr, `<prog>: error: <message>`, for usage
errors too. Messages are shown, not hidden: an error that names no value is no help to the person
who typed it. What they could quote (an argument, a name, a message id from the broker) is
escaped and cut to a bounded length (`shared.display`), and the secrets given to logging are
masked, so a message can neither drive the terminal nor leak a password. A library's unexpected
exception is shown the same way, after its traceback has gone to the log.
"""

from __future__ import annotations

import argparse
import functools
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Final, NoReturn

from shared.amqp import BrokerRefused
from shared.display import printable, quoted
from shared.errors import ConfigError, TransientError
from shared.logging import get_logger, redact
from shared.settings import Environment

EXIT_OK: Final = 0
EXIT_UNEXPECTED: Final = 1
EXIT_INVALID: Final = 2
EXIT_CONFLICT: Final = 3
EXIT_INTERRUPTED: Final = 130
# Long enough for a path or a driver's first line, short enough to stay one line on a terminal.
MESSAGE_LIMIT: Final = 300
DISTRIBUTION: Final = "rabbit-welcome"

# Checked in order, the first match wins; a CLI puts its own (more specific) errors first.
ExitCodes = Sequence[tuple[type[BaseException], int, str]]
SHARED_EXIT_CODES: Final[ExitCodes] = (
    (ConfigError, EXIT_INVALID, "configuration error: "),
    # Raised only where refusal is final (start-up checks); running loops retry it.
    (BrokerRefused, EXIT_INVALID, ""),
    (TransientError, EXIT_UNEXPECTED, ""),
)

_log = get_logger(__name__)


class OneLineArgumentParser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, `<prog>: error: ...`, exit 2.

    `prog` of a sub-command's parser names the sub-command (`email-consumer run`), so the
    line says whose usage to read.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(
            EXIT_INVALID,
            f"{self.prog}: error: {printable(message, MESSAGE_LIMIT)} (see {self.prog} --help)\n",
        )


def new_parser(
    prog: str, description: str, *, settings: Callable[[Environment], object]
) -> OneLineArgumentParser:
    """The top-level parser: `--version`, and the environment variables `settings` reads.

    The variables are found by running the settings loader on an empty environment, so the
    list cannot drift from what the service reads.
    """
    parser = OneLineArgumentParser(
        prog=prog,
        description=description,
        epilog=environment_help(settings),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    return parser


@functools.cache
def environment_help(settings: Callable[[Environment], object]) -> str:
    """The `--help` list of the variables `settings` reads; built once per loader and process."""
    env = Environment({})
    settings(env)
    width = max(len(name) for name in env.defaults)
    lines = [
        f"  {name:<{width}}  {default or '(unset)'}"
        for name, default in sorted(env.defaults.items())
    ]
    return "environment variables (default):\n" + "\n".join(lines)


def package_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def add_command(
    commands: argparse._SubParsersAction[OneLineArgumentParser],
    name: str,
    *,
    help: str,
    description: str,
) -> OneLineArgumentParser:
    """A sub-command with a one-line `help` (in the list) and a `description` (its --help)."""
    parser = commands.add_parser(name, help=help, description=description)
    parser.set_defaults(parser=parser)
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse `argv`; extra arguments are reported by the sub-command that was given them.

    argparse leaves extras to the top-level parser, which would print its own usage for
    `email-consumer run extra`. Each sub-command's parser sets `parser` in its defaults.
    """
    args, extras = parser.parse_known_args(argv)
    if extras:
        owner: argparse.ArgumentParser = getattr(args, "parser", parser)
        owner.error(f"unrecognized arguments: {' '.join(extras)}")
    return args


def run(
    prog: str,
    command: Callable[[], int],
    exit_codes: ExitCodes = (),
) -> int:
    """Run `command`; turn what it raises into one line on stderr and the contract's exit code."""
    try:
        return command()
    except KeyboardInterrupt:
        print(f"{prog}: error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - the edge: every error becomes one line
        for kind, code, prefix in (*exit_codes, *SHARED_EXIT_CODES):
            if isinstance(error, kind):
                return fail(prog, code, prefix + str(error))
        # Not ours: where it happened goes to the log (redacted there), one line to the user.
        _log.error(
            "unexpected error",
            error_type=type(error).__name__,
            traceback="".join(traceback.format_tb(error.__traceback__)),
        )
        return fail(prog, EXIT_UNEXPECTED, f"unexpected {type(error).__name__}: {error}")
    finally:
        _flush_spans()


def _flush_spans() -> None:
    """Export the spans still buffered before the process exits (after a SIGTERM too).

    Only a command that set tracing up imported `shared.tracing`; a healthcheck does not pay
    for importing the SDK just to find nothing to flush.
    """
    tracing = sys.modules.get("shared.tracing")
    if tracing is not None:
        tracing.shutdown_tracing()


def fail(prog: str, code: int, message: str) -> int:
    """Print `<prog>: error: <message>` (escaped, bounded, secrets masked); return `code`."""
    print(f"{prog}: error: {printable(redact(message), MESSAGE_LIMIT)}", file=sys.stderr)
    return code


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1, with a one-line error otherwise."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {quoted(text)}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so long-running commands stop cleanly with exit 0."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        _log.info("stop requested", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stop
