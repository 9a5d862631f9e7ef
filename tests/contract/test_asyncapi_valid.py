"""docs/asyncapi.yaml is a valid AsyncAPI 3.0.0 document per the official parser."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.contract.asyncapi_parser import AsyncApiParser
from tests.contract.conftest import ASYNCAPI_PATH, SCHEMA_PATH


def test_the_asyncapi_document_is_valid(asyncapi_parser: AsyncApiParser) -> None:
    result = asyncapi_parser.parse(ASYNCAPI_PATH)
    assert result.valid, "\n".join(str(d) for d in result.problems) or "the parser gave nothing"


def test_the_document_is_asyncapi_3_0_0_with_amqp_bindings_0_3_0(
    asyncapi_document: dict[str, Any],
) -> None:
    assert asyncapi_document["asyncapi"] == "3.0.0"
    versions = {
        binding["amqp"]["bindingVersion"]
        for section in ("channels", "operations")
        for item in asyncapi_document[section].values()
        for binding in [item["bindings"]]
    }
    assert versions == {"0.3.0"}


def test_the_payload_is_the_json_schema_by_reference(asyncapi_document: dict[str, Any]) -> None:
    messages = asyncapi_document["components"]["messages"]
    for name, message in messages.items():
        target = (ASYNCAPI_PATH.parent / message["payload"]["$ref"]).resolve()
        assert target == SCHEMA_PATH, name


def test_the_parser_rejects_a_broken_document(
    asyncapi_parser: AsyncApiParser, asyncapi_document: dict[str, Any], tmp_path: Path
) -> None:
    # An operation with an action AsyncAPI does not know, and a queue binding that is not one:
    # the parser must report both, so a passing check above means something.
    broken = yaml.safe_load(yaml.safe_dump(asyncapi_document))
    broken["operations"]["publishUserRegistered"]["action"] = "publish"
    broken["channels"]["emailConsumerQueue"]["bindings"]["amqp"]["is"] = "mailbox"
    # Kept beside the original so that the payload's relative $ref still resolves.
    (tmp_path / "schemas").symlink_to(SCHEMA_PATH.parent)
    path = tmp_path / "asyncapi.yaml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    result = asyncapi_parser.parse(path)
    assert not result.valid
    paths = {d.path for d in result.problems}
    assert "operations/publishUserRegistered/action" in paths
    assert any(p.startswith("channels/emailConsumerQueue/bindings/amqp") for p in paths)


def test_the_parser_rejects_a_payload_reference_to_nothing(
    asyncapi_parser: AsyncApiParser, asyncapi_document: dict[str, Any], tmp_path: Path
) -> None:
    broken = yaml.safe_load(yaml.safe_dump(asyncapi_document))
    broken["components"]["messages"]["userRegistered"]["payload"]["$ref"] = "./schemas/none.json"
    path = tmp_path / "asyncapi.yaml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    assert not asyncapi_parser.parse(path).valid
