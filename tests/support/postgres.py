"""PostgreSQL for tests: a fresh database per test, dropped afterwards."""

from __future__ import annotations

import os
import time
import uuid
from urllib.parse import urlsplit, urlunsplit

import psycopg

from tests.support.broker import docker_engine_answers, start_compose_service
from tests.support.compose import published_port

DEFAULT_TEST_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
# docker-compose.yml's superuser (POSTGRES_PASSWORD's default), used when nothing answers
# locally and Docker is there.
COMPOSE_POSTGRES_PASSWORD = "superuser-demo-pw"


def compose_test_postgres_url() -> str:
    """docker-compose.yml's PostgreSQL, on the host port compose publishes it on now
    (POSTGRES_PORT, else the compose file's default)."""
    port = published_port("postgres", 5432)
    return f"postgresql://postgres:{COMPOSE_POSTGRES_PASSWORD}@127.0.0.1:{port}/postgres"


class PostgresUnreachable(RuntimeError):
    pass


def _answers(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


def admin_postgres_url() -> str:
    """The administrative URL of the test PostgreSQL, started with Docker if need be."""
    url = os.environ.get("TEST_POSTGRES_URL", DEFAULT_TEST_POSTGRES_URL)
    if _answers(url):
        return url
    if docker_engine_answers():
        start_compose_service("postgres")
        deadline = time.monotonic() + 60
        compose_url = compose_test_postgres_url()
        while not _answers(compose_url):
            if time.monotonic() > deadline:
                break
            time.sleep(1)
        else:
            return compose_url
    raise PostgresUnreachable(
        f"no PostgreSQL answers at {urlsplit(url).hostname}:{urlsplit(url).port or 5432}; "
        "start it, or Docker (docker-compose.yml has one), or set TEST_POSTGRES_URL"
    )


def create_database(admin_url: str) -> tuple[str, str]:
    """Create a new empty database; returns (its name, its URL)."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return name, urlunsplit(urlsplit(admin_url)._replace(path="/" + name))


def drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
