"""The command line: usage errors exit 2 before anything connects; start-up installs what every
connection needs."""

from __future__ import annotations

from pathlib import Path

import pytest
from pika import spec

from email_consumer.cli import _parser, main
from email_consumer.wire_properties import TolerantBasicProperties


@pytest.mark.parametrize(
    "argv",
    [[], ["fly"], ["dlq"], ["dlq", "list", "--limit", "0"], ["dlq", "replay", "--limit", "x"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("email-consumer")
    assert ": error: " in line


def test_a_bad_setting_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SMTP_PORT", "twenty-five")
    assert main(["dlq", "list"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "email-consumer: error: configuration error: SMTP_PORT must be a whole number, "
        "got 'twenty-five'"
    ]


@pytest.mark.parametrize("command", [["run"], ["dlq", "list"]])
def test_an_unloadable_amqp_tls_file_exits_2_at_start_up_before_anything_is_opened(
    command: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = tmp_path / "consumer.sqlite3"
    monkeypatch.setenv("AMQP_URL", "amqps://u:tls-secret@broker.invalid:5671/%2F")
    monkeypatch.setenv("AMQP_TLS_CA_FILE", str(tmp_path / "missing-ca.pem"))
    monkeypatch.setenv("CONSUMER_DATABASE_URL", f"sqlite:///{database}")
    assert main(command) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("email-consumer: error: configuration error: AMQP TLS files cannot")
    assert "tls-secret" not in line
    assert not database.exists(), "nothing may be opened or stored before the check"


def test_smtp_login_in_clear_text_to_a_remote_server_exits_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONSUMER_DATABASE_URL", f"sqlite:///{tmp_path / 'consumer.sqlite3'}")
    monkeypatch.setenv("AMQP_URL", "amqp://guest:guest@127.0.0.1:9/%2F")  # never reached
    monkeypatch.setenv("SMTP_HOST", "smtp.example.com")
    monkeypatch.setenv("SMTP_USERNAME", "mailer")
    monkeypatch.setenv("SMTP_PASSWORD", "smtp-secret")
    assert main(["run"]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "SMTP_STARTTLS" in line
    assert "smtp-secret" not in line


def test_dlq_list_is_bounded_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["dlq", "list", "--help"])
    assert "default 100" in capsys.readouterr().out
    assert _parser().parse_args(["dlq", "list"]).limit == 100


def test_start_up_makes_every_connection_decode_header_tables_tolerantly(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(spec.props, spec.BasicProperties.INDEX, spec.BasicProperties)
    assert main(["dlq", "purge"]) == 2  # refused before it connects, after start-up
    assert "--yes" in capsys.readouterr().err
    assert spec.props[spec.BasicProperties.INDEX] is TolerantBasicProperties


def test_a_malformed_database_url_exits_2_without_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CONSUMER_DATABASE_URL", "postgresql://app:db-secret@db:notaport/app")
    assert main(["run"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "email-consumer: error: configuration error: "
        "CONSUMER_DATABASE_URL is not a valid database URL"
    ]
