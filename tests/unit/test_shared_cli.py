"""Both command lines: one error style, `--version`, every sub-command described, the
environment variables listed in `--help` as the settings loaders read them."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from email_consumer import cli as consumer_cli
from email_consumer.settings import ConsumerSettings
from producer_service import cli as producer_cli
from producer_service.settings import ProducerSettings
from shared.cli import fail, new_parser, package_version, run
from shared.errors import ConfigError
from shared.settings import Environment

Main = Callable[[Sequence[str] | None], int]
CLIS = [
    pytest.param(producer_cli.main, "producer-service", id="producer"),
    pytest.param(consumer_cli.main, "email-consumer", id="consumer"),
]


def _exit(main: Main, argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    code = exited.value.code
    assert isinstance(code, int)
    return code


@pytest.mark.parametrize(("main", "prog"), CLIS)
def test_a_usage_error_is_one_line_naming_the_program(
    main: Main, prog: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _exit(main, ["no-such-command"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"{prog}: error: argument COMMAND: invalid choice: 'no-such-command' (choose from "
        + ", ".join(f"'{name}'" for name in _commands(main))
        + f") (see {prog} --help)"
    ]


@pytest.mark.parametrize(
    ("main", "argv", "expected"),
    [
        (consumer_cli.main, ["run", "extra"], "email-consumer run: error: unrecognized arguments"),
        (consumer_cli.main, ["dlq", "list", "x"], "email-consumer dlq list: error: unrecognized"),
        (producer_cli.main, ["relay", "extra"], "producer-service relay: error: unrecognized"),
        (producer_cli.main, ["register", "alice"], "producer-service register: error: the foll"),
    ],
)
def test_extra_arguments_are_reported_by_the_sub_command_given_them(
    main: Main, argv: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _exit(main, argv) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(expected)
    assert line.endswith(f"(see {expected.partition(': error')[0]} --help)")


def test_an_argument_is_shown_escaped_in_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit(consumer_cli.main, ["run", "\x1b[2J\x1b[H"]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err
    assert "\\x1b[2J\\x1b[H" in err


@pytest.mark.parametrize(("main", "prog"), CLIS)
def test_version(main: Main, prog: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert _exit(main, ["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"{prog} {package_version()}"
    assert package_version()[0].isdigit()


def _parsers(main: Main) -> list[argparse.ArgumentParser]:
    top = producer_cli.build_parser() if main is producer_cli.main else consumer_cli._parser()
    found, todo = [], [top]
    while todo:
        parser = todo.pop()
        found.append(parser)
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                todo.extend(action.choices.values())
    return found


def _commands(main: Main) -> list[str]:
    top = _parsers(main)[0]
    [commands] = [a for a in top._actions if isinstance(a, argparse._SubParsersAction)]
    return list(commands.choices)


@pytest.mark.parametrize(("main", "prog"), CLIS)
def test_every_sub_command_has_a_description(main: Main, prog: str) -> None:
    parsers = _parsers(main)
    assert len(parsers) >= 4
    for parser in parsers:
        assert parser.description, f"{parser.prog} has no description"


@pytest.mark.parametrize(
    ("main", "loader"),
    [
        (producer_cli.main, ProducerSettings.from_env),
        (consumer_cli.main, ConsumerSettings.from_env),
    ],
)
def test_help_lists_every_variable_the_settings_read(
    main: Main, loader: Callable[[Environment], object], capsys: pytest.CaptureFixture[str]
) -> None:
    env = Environment({})
    loader(env)
    assert _exit(main, ["--help"]) == 0
    out = capsys.readouterr().out
    assert "environment variables" in out
    for name in env.names_read:
        assert f"\n  {name} " in out, name
    assert {"AMQP_URL", "LOG_LEVEL"} <= env.names_read


def test_the_environment_list_is_built_once_per_loader() -> None:
    reads: list[str] = []

    def loader(env: Environment) -> None:
        reads.append(env.text("ONCE_ONLY", "x"))

    first, second = (new_parser("prog", "d", settings=loader) for _ in range(2))

    assert reads == ["x"]
    assert first.epilog == second.epilog
    assert "ONCE_ONLY" in str(first.epilog)


def test_errors_are_escaped_bounded_and_masked(capsys: pytest.CaptureFixture[str]) -> None:
    from shared.logging import configure_logging
    from shared.settings import LoggingSettings

    configure_logging(LoggingSettings("INFO", "json"), service="t", secrets=["s3cret-pw"])

    def broken() -> int:
        raise ConfigError("X is bad: \x1b]0;title\x07 s3cret-pw " + "y" * 1000)

    assert run("prog", broken) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("prog: error: configuration error: X is bad: \\x1b]0;title\\x07 *** ")
    assert len(line) <= len("prog: error: ") + 300
    assert line.endswith("...")


def test_an_unexpected_error_is_one_line_with_its_type_and_exit_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def broken() -> int:
        raise KeyError("boom")

    assert run("prog", broken) == 1
    assert capsys.readouterr().err.splitlines()[-1] == "prog: error: unexpected KeyError: 'boom'"


def test_fail_prints_one_line_and_returns_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert fail("prog", 3, "two\nlines") == 3
    assert capsys.readouterr().err == "prog: error: two\\x0alines\n"


def test_a_database_url_of_another_kind_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PRODUCER_DATABASE_URL", "mysql://user:pw@db/users")
    assert producer_cli.main(["register", "alice", "alice@example.com"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "producer-service: error: configuration error: PRODUCER_DATABASE_URL must start with "
        "sqlite:/// or postgresql://, got a 'mysql' URL"
    ]
