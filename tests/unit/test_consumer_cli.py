"""The command line's usage errors: exit 2 before anything connects."""

from __future__ import annotations

import pytest

from email_consumer.cli import main


@pytest.mark.parametrize(
    "argv",
    [[], ["fly"], ["dlq"], ["dlq", "list", "--limit", "0"], ["dlq", "replay", "--limit", "x"]],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    assert "usage: email-consumer" in capsys.readouterr().err


def test_a_bad_setting_exits_2_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SMTP_PORT", "twenty-five")
    assert main(["dlq", "list"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "email-consumer: SMTP_PORT must be a whole number, got 'twenty-five'"
    ]
