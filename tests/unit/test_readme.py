"""The README stays in step with the code: its configuration tables list exactly the variables
the services read, and it names the images docker-compose.yml and the Dockerfile really use."""

from __future__ import annotations

import json
import re
from pathlib import Path

from email_consumer.settings import ConsumerSettings
from producer_service.settings import ProducerSettings
from shared.events import parse_user_registered, serialise
from shared.settings import Environment
from tests.support.compose import app_services, load_services

REPO_ROOT = Path(__file__).resolve().parents[2]
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
_VARIABLE = re.compile(r"`([A-Z][A-Z0-9_]+)`")


def variables_the_code_reads() -> set[str]:
    names: set[str] = set()
    for load in (ProducerSettings.from_env, ConsumerSettings.from_env):
        env = Environment({})
        load(env)
        names |= env.names_read
    return names


def variables_in_the_configuration_section() -> set[str]:
    section = README.split("\n## Configuration\n", 1)[1].split("\n## ", 1)[0]
    first_cells = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    return {name for cell in first_cells for name in _VARIABLE.findall(cell)}


def test_the_readme_documents_every_variable_the_code_reads() -> None:
    documented = variables_in_the_configuration_section()
    assert documented, "the README has no configuration table"
    assert variables_the_code_reads() - documented == set()


def test_the_readme_documents_no_variable_the_code_ignores() -> None:
    assert variables_in_the_configuration_section() - variables_the_code_reads() == set()


def test_the_readme_names_the_pinned_images() -> None:
    services = load_services()
    pulled = [
        service["image"] for name, service in services.items() if name not in app_services(services)
    ]
    base = re.search(
        r"^ARG PYTHON_IMAGE=(\S+)$",
        (REPO_ROOT / "Dockerfile").read_text(encoding="utf-8"),
        re.MULTILINE,
    )
    assert base is not None, "the Dockerfile names its base image in ARG PYTHON_IMAGE"
    images = [*pulled, base.group(1)]
    assert [image for image in images if f"`{image}`" not in README] == []


def test_the_architecture_doc_names_only_files_that_exist() -> None:
    text = (REPO_ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    paths = set(re.findall(r"`([a-z_]+/[\w/.]*)`", text))
    assert paths, "docs/ARCHITECTURE.md names no module"
    assert sorted(path for path in paths if not (REPO_ROOT / path).exists()) == []


def test_the_example_event_is_what_the_code_publishes() -> None:
    architecture = README.split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]
    [example] = re.findall(r"```json\n(.*?)```", architecture, re.DOTALL)
    event = parse_user_registered(example.encode("utf-8"))
    assert json.loads(serialise(event)) == json.loads(example)
