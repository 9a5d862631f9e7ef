"""docs/CONTRACT.md keeps up with the code: every environment variable the services read is
documented there, nothing documented is stale, and the README links it."""

from __future__ import annotations

import re

from email_consumer.settings import ConsumerSettings
from producer_service.settings import ProducerSettings
from shared.settings import Environment
from tests.contract.asyncapi_parser import REPO_ROOT
from tests.contract.conftest import CONTRACT_PATH

_PACKAGES = ("shared", "producer_service", "email_consumer")
_VARIABLE = re.compile(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`")


def _names_the_code_reads() -> set[str]:
    env = Environment({})
    ProducerSettings.from_env(env)
    ConsumerSettings.from_env(env)
    return env.names_read


def _documented_variables() -> set[str]:
    """The first column of every table in the Configuration section."""
    text = CONTRACT_PATH.read_text(encoding="utf-8")
    section = text.split("\n## Configuration", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            names.update(_VARIABLE.findall(line.split("|")[1]))
    return names


def test_settings_are_read_in_one_place_only() -> None:
    # So that Environment.names_read below sees every variable the services read.
    readers = sorted(
        str(path.relative_to(REPO_ROOT))
        for package in _PACKAGES
        for path in (REPO_ROOT / package).rglob("*.py")
        if re.search(r"os\.environ|getenv\(", path.read_text(encoding="utf-8"))
    )
    assert readers == ["shared/settings.py"]


def test_every_variable_the_code_reads_is_documented() -> None:
    read = _names_the_code_reads()
    assert len(read) > 30  # the check would pass vacuously if settings read nothing
    assert sorted(read - _documented_variables()) == []


def test_every_documented_variable_is_read_by_the_code() -> None:
    assert sorted(_documented_variables() - _names_the_code_reads()) == []


def test_the_readme_links_the_contract() -> None:
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    assert "(docs/CONTRACT.md)" in readme
    assert "(docs/asyncapi.yaml)" in readme
