"""Fixtures of the contract tests: the documents, and the official AsyncAPI parser."""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml

from tests.contract.asyncapi_parser import (
    REPO_ROOT,
    AsyncApiParser,
    ParserUnavailable,
    installed_parser,
)

ASYNCAPI_PATH = REPO_ROOT / "docs" / "asyncapi.yaml"
SCHEMA_PATH = REPO_ROOT / "docs" / "schemas" / "user_registered.v1.json"
CONTRACT_PATH = REPO_ROOT / "docs" / "CONTRACT.md"


@pytest.fixture(scope="session")
def asyncapi_parser() -> AsyncApiParser:
    try:
        return installed_parser()
    except ParserUnavailable as error:
        reason = str(error)
    pytest.fail(reason, pytrace=False)  # outside the except: one line, no chained traceback


@pytest.fixture(scope="session")
def asyncapi_document() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(ASYNCAPI_PATH.read_text(encoding="utf-8"))
    return document


@pytest.fixture(scope="session")
def event_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return schema
