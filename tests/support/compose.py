"""Reading docker-compose.yml as Compose would, for tests that check it without Docker."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
DEFINITIONS_FILE = REPO_ROOT / "docker" / "rabbitmq" / "definitions.json"

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

    def substitute(match: re.Match[str]) -> str:
        if match["escape"]:
            return "$"
        if match["operator"] in (":-", "-"):
            return match["argument"] or ""
        return ""

    return _VARIABLE.sub(substitute, text)


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


def app_services(services: dict[str, Service]) -> dict[str, Service]:
    """Our own services: those built from this repository's Dockerfile."""
    return {name: service for name, service in services.items() if "build" in service}
