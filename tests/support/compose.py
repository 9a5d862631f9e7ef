"""Reading docker-compose.yml as Compose would, for tests that check it without Docker."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DEFINITIONS_FILE = REPO_ROOT / "docker" / "rabbitmq" / "definitions.json"
DOTENV_FILE = REPO_ROOT / ".env"

# The demo passwords of the compose broker's users, as docker/rabbitmq/definitions.json hashes
# them and the README documents them. Each differs from every name, since the services' logs
# mask a password wherever it appears (tests/unit/test_compose_file.py checks).
DEMO_BROKER_PASSWORDS = {
    "admin": "operator-demo-pw",
    "producer": "publisher-demo-pw",
    "email_worker": "mailer-demo-pw",
}

Service = dict[str, Any]

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, $NAME and the escape $$.
_VARIABLE = re.compile(
    r"\$(?:(?P<escape>\$)|\{(?P<braced>\w+)(?:(?P<operator>:?[-?+])(?P<argument>[^}]*))?\}"
    r"|(?P<plain>[A-Za-z_]\w*))"
)


def load_compose() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), "docker-compose.yml must hold a mapping"
    return document


def load_services() -> dict[str, Service]:
    services = load_compose().get("services")
    assert isinstance(services, dict), "docker-compose.yml has no services"
    return services


def with_defaults(text: str) -> str:
    """`text` as Compose interpolates it when none of the variables is set."""
    return interpolate(text, {})


def interpolate(text: str, environment: Mapping[str, str]) -> str:
    """`text` as Compose interpolates it with `environment` (`:?` and `?` are not checked)."""

    def substitute(match: re.Match[str]) -> str:
        if match["escape"]:
            return "$"
        name = match["braced"] or match["plain"]
        value = environment.get(name)
        operator = match["operator"]
        if (operator == ":-" and not value) or (operator == "-" and value is None):
            return match["argument"] or ""
        if operator == ":+":
            return (match["argument"] or "") if value else ""
        if operator == "+":
            return (match["argument"] or "") if value is not None else ""
        return value or ""

    return _VARIABLE.sub(substitute, text)


def interpolated_variables(text: str) -> set[str]:
    """The names of the variables `text` interpolates (the `$$` escape names none)."""
    return {
        match["braced"] or match["plain"]
        for match in _VARIABLE.finditer(text)
        if not match["escape"]
    }


def compose_environment() -> dict[str, str]:
    """The variables Compose interpolates with: the repository's `.env` file, if there is one,
    under the process environment (which wins, as it does for Compose)."""
    values: dict[str, str] = {}
    if DOTENV_FILE.is_file():
        for line in DOTENV_FILE.read_text(encoding="utf-8").splitlines():
            name, separator, value = line.strip().partition("=")
            if separator and not name.startswith("#"):
                values[name.strip()] = value.strip().strip("'\"")
    return values | dict(os.environ)


def published_port(service: str, container_port: int) -> int:
    """The host port that `service` publishes `container_port` on, as Compose would resolve it
    from the environment now (RABBITMQ_AMQP_PORT, POSTGRES_PORT, ...)."""
    environment = compose_environment()
    for entry in load_services()[service].get("ports", []):
        *_, host, container = interpolate(str(entry), environment).rsplit(":", 2)
        if int(container) == container_port:
            return int(host)
    raise LookupError(f"{service} publishes no port for {container_port}")


def environment_of(service: Service) -> dict[str, str]:
    """The service's environment (mapping or list form), interpolated with the defaults."""
    raw = service.get("environment") or {}
    if isinstance(raw, list):
        raw = dict(item.split("=", 1) if "=" in item else (item, "") for item in raw)
    return {name: with_defaults("" if value is None else str(value)) for name, value in raw.items()}


def as_list(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return value.split() if isinstance(value, str) else [str(part) for part in value]


def program_of(service: Service) -> list[str]:
    """The command line the container runs: entrypoint, then command (the image sets none)."""
    return as_list(service.get("entrypoint")) + as_list(service.get("command"))


def app_image(services: dict[str, Service]) -> str:
    """The image built from this repository's Dockerfile (by the one service that builds)."""
    images = {service.get("image") for service in services.values() if "build" in service}
    assert len(images) == 1, f"one image must be built from the Dockerfile, not {images}"
    image = images.pop()
    assert isinstance(image, str), "the service that builds must name its image"
    return image


def app_services(services: dict[str, Service]) -> dict[str, Service]:
    """Our own services: those that run the image built from this repository's Dockerfile."""
    image = app_image(services)
    return {name: service for name, service in services.items() if service.get("image") == image}
