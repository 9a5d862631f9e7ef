"""Logging: JSON lines with the event bound, library logs routed through, secrets redacted."""

from __future__ import annotations

import json
import logging

import pytest

from shared.logging import configure_logging, event_context, get_logger
from shared.settings import LoggingSettings


def _lines(captured: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in captured.splitlines() if line.strip()]


def test_json_lines_carry_the_event_and_hide_secrets(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(
        LoggingSettings(level="INFO", format="json"), service="test", secrets=["hunter22"]
    )
    log = get_logger("test")
    with event_context("event-1", "corr-1"):
        log.info("connecting", url="amqp://u:hunter22@h/")
        logging.getLogger("some.library").warning("password hunter22 refused")
    log.info("after")
    lines = _lines(capsys.readouterr().err)
    assert [line["event"] for line in lines] == [
        "connecting",
        "password *** refused",
        "after",
    ]
    assert lines[0]["event_id"] == "event-1"
    assert lines[0]["correlation_id"] == "corr-1"
    assert lines[1]["event_id"] == "event-1"  # standard-library lines get the context too
    assert "event_id" not in lines[2]
    assert lines[0]["url"] == "amqp://u:***@h/"
    assert all(line["service"] == "test" for line in lines)
    assert "hunter22" not in json.dumps(lines)


def test_level_filters(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LoggingSettings(level="WARNING", format="json"), service="test")
    get_logger("test").info("hidden")
    get_logger("test").warning("shown")
    assert [line["event"] for line in _lines(capsys.readouterr().err)] == ["shown"]
