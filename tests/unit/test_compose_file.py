"""docker-compose.yml and the Dockerfile: valid, pinned, healthy, least privilege, and in step
with the code (console scripts, environment variables, broker users).

The schema check always runs, with the Compose specification's schema that check-jsonschema
ships; `docker compose config` runs in addition wherever a Docker engine answers, since it also
resolves what the schema cannot (anchors, interpolation, file paths).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from email_consumer.settings import ConsumerSettings
from producer_service.settings import ProducerSettings
from shared.settings import Environment
from tests.support import compose as compose_support
from tests.support.broker import compose_test_amqp_url
from tests.support.compose import (
    COMPOSE_FILE,
    DEFINITIONS_FILE,
    REPO_ROOT,
    Service,
    app_services,
    as_list,
    environment_of,
    interpolate,
    interpolated_variables,
    load_services,
    program_of,
    with_defaults,
)
from tests.support.postgres import compose_test_postgres_url

DOCKERFILE = REPO_ROOT / "Dockerfile"
PYPROJECT = REPO_ROOT / "pyproject.toml"

# How each console script reads its settings; a service's environment must be read by these.
SETTINGS_LOADERS: dict[str, Callable[[Environment], object]] = {
    "producer-service": ProducerSettings.from_env,
    "email-consumer": ConsumerSettings.from_env,
}
# The subcommand each long-running service must run (CONTRACT.md).
EXPECTED_COMMANDS = {
    "relay": ["producer-service", "relay"],
    "worker": ["email-consumer", "run"],
}


# --- reading the files ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def services() -> dict[str, Service]:
    return load_services()


def console_scripts() -> set[str]:
    pyproject = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    return set(pyproject["project"]["scripts"])


def docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    for probe in (["docker", "info"], ["docker", "compose", "version"]):
        result = subprocess.run(probe, capture_output=True, timeout=60, check=False)
        if result.returncode != 0:
            return False
    return True


# --- the file as a whole ----------------------------------------------------------------------


def check_jsonschema(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_compose_schema_check_finds_a_wrong_file(tmp_path: Path) -> None:
    # Proves the check below judges the file: a service whose `ports` is not a list fails.
    wrong = tmp_path / "compose.yaml"
    wrong.write_text("services:\n  web:\n    image: nginx:1.27\n    ports: 80\n")
    result = check_jsonschema(str(wrong))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "ports" in result.stdout + result.stderr


def test_compose_file_is_valid_compose() -> None:
    result = check_jsonschema(str(COMPOSE_FILE))
    assert result.returncode == 0, result.stdout + result.stderr

    # Docker's own parser also resolves anchors, interpolation and paths; use it where it runs.
    if docker_compose_available():
        result = subprocess.run(
            ["docker", "compose", "--project-directory", str(REPO_ROOT), "config", "-q"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr


def test_every_file_mounted_from_the_repository_exists(services: dict[str, Service]) -> None:
    missing = [
        f"{name}: {volume}"
        for name, service in services.items()
        for volume in service.get("volumes", [])
        if isinstance(volume, str)
        and volume.startswith("./")
        and not (REPO_ROOT / volume.split(":", 1)[0]).exists()
    ]
    assert missing == []


# --- images and start-up order ----------------------------------------------------------------


def image_tag(image: str) -> str | None:
    """The tag of `registry:port/name:tag@digest`, or None when there is none."""
    name = image.split("@", 1)[0]
    last_part = name.rsplit("/", 1)[-1]
    return last_part.split(":", 1)[1] if ":" in last_part else None


@pytest.mark.parametrize(
    ("image", "tag"),
    [
        ("rabbitmq:4.4.1-management", "4.4.1-management"),
        ("localhost:5000/team/app:1.2", "1.2"),
        ("postgres", None),
        ("postgres@sha256:abc", None),
    ],
)
def test_image_tag_reads_the_tag_only(image: str, tag: str | None) -> None:
    assert image_tag(image) == tag


def test_every_image_is_pinned_to_a_version(services: dict[str, Service]) -> None:
    ours = app_services(services)
    for name, service in services.items():
        image = with_defaults(service.get("image") or "")
        assert image, f"{name} names no image"
        tag = image_tag(image)
        assert tag is not None, f"{name}: {image} has no tag"
        assert tag != "latest", f"{name}: {image} is not pinned"
        if name not in ours:  # pulled from a registry: an exact version
            assert re.search(r"\d+\.\d+", tag), f"{name}: {image} names no exact version"


def test_the_image_is_built_once_for_every_service_that_runs_it(
    services: dict[str, Service],
) -> None:
    # With `build:` on each, compose builds one image per service under the same tag: every
    # build leaves dangling images and `up --build` recreates every container.
    builders = [name for name, service in services.items() if "build" in service]
    assert len(builders) == 1, f"only one service may build the image, not {builders}"
    ours = app_services(services)
    assert set(EXPECTED_COMMANDS) | {"producer"} <= set(ours)
    for name, service in ours.items():
        if name not in builders:
            # The default policy would try a registry for an image that only the build makes.
            assert service.get("pull_policy") == "never", f"{name} would pull {service['image']}"


def test_every_service_others_wait_for_has_a_healthcheck(services: dict[str, Service]) -> None:
    pulled = set(services) - set(app_services(services))
    waited_for = {
        dependency
        for service in services.values()
        for dependency, rule in service.get("depends_on", {}).items()
        if rule.get("condition") == "service_healthy"
    }
    assert waited_for, "no service waits for another"
    for name in pulled | waited_for:
        healthcheck = services[name].get("healthcheck", {})
        assert healthcheck.get("test"), f"{name} has no healthcheck"
        assert not healthcheck.get("disable"), f"{name} disables its healthcheck"


def test_services_start_only_once_what_they_need_is_healthy(services: dict[str, Service]) -> None:
    for name, service in app_services(services).items():
        depends_on = service.get("depends_on")
        # The list form means "started", which for a broker is too early.
        assert isinstance(depends_on, dict), f"{name}: depends_on must name conditions"
        assert {"rabbitmq", "postgres"} <= set(depends_on), (
            f"{name}: must wait for the broker and database"
        )
        for dependency, rule in depends_on.items():
            # Our own services have no healthcheck; started is all another one can wait for.
            wanted = (
                "service_started" if dependency in app_services(services) else "service_healthy"
            )
            assert rule.get("condition") == wanted, f"{name} -> {dependency}"
    assert "mailpit" in services["worker"]["depends_on"]


def test_a_run_before_any_up_builds_the_image(services: dict[str, Service]) -> None:
    # `docker compose run --rm producer register ...` first thing after cloning: the producer
    # does not build, so it must depend on the service that does (`run` starts, and so
    # builds, the dependencies first) or it fails with "No such image".
    [builder] = [name for name, service in services.items() if "build" in service]
    producer = services["producer"]
    assert "build" in producer or builder in producer.get("depends_on", {})


# --- our services -----------------------------------------------------------------------------


def test_the_services_run_the_console_scripts(services: dict[str, Service]) -> None:
    scripts = console_scripts()
    ours = app_services(services)
    assert set(EXPECTED_COMMANDS) | {"producer"} <= set(ours)
    for name, service in ours.items():
        program = program_of(service)
        assert program, f"{name} names no command"
        assert program[0] in scripts, f"{name} runs {program[0]!r}, not a console script"
    for name, expected in EXPECTED_COMMANDS.items():
        assert program_of(services[name]) == expected, f"{name} must run {' '.join(expected)}"


def test_the_producer_is_a_one_off_command_for_register(services: dict[str, Service]) -> None:
    producer = services["producer"]
    # `docker compose run --rm producer register alice alice@example.com` replaces the command,
    # so the console script must be the entrypoint; the profile keeps it out of `up`.
    assert as_list(producer.get("entrypoint")) == ["producer-service"]
    assert producer.get("profiles"), "producer would start (and exit) with `docker compose up`"


def test_the_worker_can_be_scaled(services: dict[str, Service]) -> None:
    worker = services["worker"]
    assert "container_name" not in worker, "a fixed container name allows only one worker"
    assert not worker.get("ports"), "a fixed host port allows only one worker"


def test_published_ports_listen_on_loopback_only(services: dict[str, Service]) -> None:
    for name, service in services.items():
        for port in service.get("ports", []):
            host_ip = port.get("host_ip") if isinstance(port, dict) else with_defaults(str(port))
            assert str(host_ip).startswith("127.0.0.1:") or host_ip == "127.0.0.1", (
                f"{name} publishes {port} beyond this machine"
            )


def settings_loader_for(name: str, service: Service) -> Callable[[Environment], object]:
    program = program_of(service)
    loader = SETTINGS_LOADERS.get(program[0]) if program else None
    assert loader is not None, f"{name}: no settings loader known for {program}"
    return loader


def test_every_environment_variable_is_one_the_code_reads(services: dict[str, Service]) -> None:
    for name, service in app_services(services).items():
        values = environment_of(service)
        env = Environment(values)
        # Loading also proves every value is accepted (a bad one raises ConfigError).
        settings_loader_for(name, service)(env)
        unread = set(values) - env.names_read
        assert unread == set(), f"{name} sets variables the code never reads: {sorted(unread)}"


# --- the broker's users -----------------------------------------------------------------------


def broker_urls(services: dict[str, Service]) -> Iterator[tuple[str, str]]:
    for name, service in app_services(services).items():
        yield name, environment_of(service).get("AMQP_URL", "")


def test_no_service_connects_as_guest(services: dict[str, Service]) -> None:
    for name, url in broker_urls(services):
        # Without AMQP_URL the code falls back to guest@localhost, so it must be set.
        assert url, f"{name} sets no AMQP_URL"
        user = urlsplit(url).username
        assert user, f"{name}: AMQP_URL names no user (pika would use guest)"
        assert user != "guest", f"{name} connects as guest"
    rabbitmq_environment = environment_of(services["rabbitmq"])
    assert rabbitmq_environment.get("RABBITMQ_DEFAULT_USER", "") in ("", None)


def definitions() -> dict[str, Any]:
    if not DEFINITIONS_FILE.is_file():
        pytest.fail(f"{DEFINITIONS_FILE} is missing; docker-compose.yml mounts it", pytrace=False)
    document = json.loads(DEFINITIONS_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return document


def password_matches(user: dict[str, Any], password: str) -> bool:
    """Checks a RabbitMQ password hash: base64(salt[4] + digest(salt + password))."""
    algorithms = {
        "rabbit_password_hashing_sha256": hashlib.sha256,
        "rabbit_password_hashing_sha512": hashlib.sha512,
        "rabbit_password_hashing_md5": hashlib.md5,
    }
    digest = algorithms[user.get("hashing_algorithm", "rabbit_password_hashing_sha256")]
    decoded = base64.b64decode(user["password_hash"])
    salt, expected = decoded[:4], decoded[4:]
    return digest(salt + password.encode()).digest() == expected


def test_password_matches_checks_the_hash() -> None:
    salt = b"\x01\x02\x03\x04"
    user = {
        "hashing_algorithm": "rabbit_password_hashing_sha256",
        "password_hash": base64.b64encode(
            salt + hashlib.sha256(salt + b"s3cret").digest()
        ).decode(),
    }
    assert password_matches(user, "s3cret")
    assert not password_matches(user, "guess")


def test_the_broker_knows_every_user_compose_logs_in_as(services: dict[str, Service]) -> None:
    users = {user["name"]: user for user in definitions().get("users", [])}
    assert "guest" not in users, "the compose broker must not have the guest user"
    permissions = {
        (entry["user"], entry["vhost"]) for entry in definitions().get("permissions", [])
    }
    logins = [(name, url) for name, url in broker_urls(services)]
    # tests/support/broker.py logs in as this operator when it starts the compose broker.
    logins.append(("tests", compose_test_amqp_url()))
    for name, url in logins:
        parts = urlsplit(url)
        user, vhost = parts.username or "", unquote(parts.path[1:]) or "/"
        assert user in users, f"{name} logs in as {user!r}, which the definitions lack"
        assert password_matches(users[user], unquote(parts.password or "")), (
            f"{name}: the default password of {user!r} does not match definitions.json"
        )
        assert (user, vhost) in permissions, f"{user!r} has no permissions on vhost {vhost!r}"


# --- the image --------------------------------------------------------------------------------


def test_the_image_runs_as_a_non_root_user() -> None:
    instructions = [
        line.strip()
        for line in DOCKERFILE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    last_from = max(i for i, line in enumerate(instructions) if line.upper().startswith("FROM "))
    users = [
        line.split(None, 1)[1]
        for line in instructions[last_from:]
        if line.upper().startswith("USER ")
    ]
    assert users, "the final stage sets no USER, so it runs as root"
    user = users[-1].split(":", 1)[0]
    assert user not in {"root", "0"}


# --- the database's roles ---------------------------------------------------------------------


def test_every_database_login_exists_in_the_init_script(services: dict[str, Service]) -> None:
    script = (REPO_ROOT / "docker" / "postgres" / "init.sql").read_text(encoding="utf-8")
    passwords = dict(re.findall(r"CREATE ROLE (\w+) LOGIN PASSWORD '([^']*)'", script))
    owners = dict(re.findall(r"CREATE DATABASE (\w+) OWNER (\w+)", script))
    urls = [
        (name, value)
        for name, service in app_services(services).items()
        for variable, value in environment_of(service).items()
        if variable.endswith("_DATABASE_URL")
    ]
    assert {variable for _, variable in urls}, "no service uses the compose PostgreSQL"
    for name, url in urls:
        parts = urlsplit(url)
        assert parts.scheme == "postgresql", f"{name}: an SQLite file cannot be shared"
        user, database = parts.username or "", parts.path.lstrip("/")
        assert passwords.get(user) == unquote(parts.password or ""), f"{name}: login {user!r}"
        assert owners.get(database) == user, f"{name}: {user!r} does not own {database!r}"


# --- demo passwords, host ports, .env.example ----------------------------------------------------


def compose_names(services: dict[str, Service]) -> set[str]:
    """Names that show up in the services' logs: users, roles, databases, broker objects,
    services, packages and console scripts."""
    document = definitions()
    script = (REPO_ROOT / "docker" / "postgres" / "init.sql").read_text(encoding="utf-8")
    names = {user["name"] for user in document.get("users", [])}
    names |= {entry["name"] for key in ("vhosts", "queues", "exchanges") for entry in document[key]}
    names |= set(re.findall(r"CREATE (?:ROLE|DATABASE) (\w+)", script)) | {"postgres"}
    names |= set(services) | console_scripts() | {"shared", "producer_service", "email_consumer"}
    return names


def demo_passwords(services: dict[str, Service]) -> dict[str, str]:
    """Every demo password, by where it is set."""
    script = (REPO_ROOT / "docker" / "postgres" / "init.sql").read_text(encoding="utf-8")
    passwords = {
        f"init.sql {role}": password
        for role, password in re.findall(r"CREATE ROLE (\w+) LOGIN PASSWORD '([^']*)'", script)
    }
    for name, service in services.items():
        for variable, value in environment_of(service).items():
            if variable.endswith("PASSWORD"):
                passwords[f"{name} {variable}"] = value
            elif "://" in value and urlsplit(value).password:
                passwords[f"{name} {variable}"] = unquote(urlsplit(value).password or "")
    passwords["tests' compose login"] = unquote(urlsplit(compose_test_amqp_url()).password or "")
    return passwords


def test_no_demo_password_is_part_of_a_name(services: dict[str, Service]) -> None:
    # The services' logs mask every password wherever it appears: a password `producer` turned
    # `"logger": "producer_service.cli"` into `"***_service.cli"`.
    names = compose_names(services)
    passwords = demo_passwords(services)
    assert len(passwords) >= 6, passwords
    clashes = [
        f"{where}: {password!r} is part of {name!r}"
        for where, password in passwords.items()
        for name in names
        if password in name
    ]
    assert clashes == []


def default_host_ports(services: dict[str, Service]) -> dict[tuple[str, int], int]:
    """(service, container port) -> the host port published when no variable is set."""
    ports = {}
    for name, service in services.items():
        for port in service.get("ports", []):
            *_, host, container = with_defaults(str(port)).rsplit(":", 2)
            ports[name, int(container)] = int(host)
    return ports


def test_default_host_ports_leave_the_local_services_theirs(services: dict[str, Service]) -> None:
    # The README's set-up without Docker runs RabbitMQ on 5672, PostgreSQL on 5432 and a mail
    # server on 1025 on the same machine; the stack's defaults must not ask for those ports.
    ports = default_host_ports(services)
    assert {("rabbitmq", 5672), ("postgres", 5432), ("mailpit", 1025)} <= set(ports)
    clashes = {where: port for where, port in ports.items() if port in {5672, 5432, 1025}}
    assert clashes == {}
    assert len(set(ports.values())) == len(ports), f"two services share a host port: {ports}"


def env_example() -> dict[str, str]:
    lines = (REPO_ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    pairs = [line.split("=", 1) for line in lines if line.strip() and not line.startswith("#")]
    return {name: value.strip('"') for name, value in pairs}


def test_env_example_lists_exactly_the_variables_compose_reads() -> None:
    interpolated = interpolated_variables(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert set(env_example()) == interpolated


def test_env_example_gives_the_compose_defaults() -> None:
    # Copied to .env unchanged, it must change nothing.
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    assert interpolate(text, env_example()) == with_defaults(text)


def test_the_tests_use_the_compose_ports_the_environment_sets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # tests/support starts the compose broker or database when nothing answers locally; it
    # must then connect where compose publishes them, not on a port of its own.
    monkeypatch.delenv("RABBITMQ_AMQP_PORT", raising=False)
    monkeypatch.delenv("POSTGRES_PORT", raising=False)
    dotenv = tmp_path / ".env"
    monkeypatch.setattr(compose_support, "DOTENV_FILE", dotenv)
    defaults = default_host_ports(load_services())
    assert urlsplit(compose_test_amqp_url()).port == defaults["rabbitmq", 5672]
    assert urlsplit(compose_test_postgres_url()).port == defaults["postgres", 5432]

    dotenv.write_text("RABBITMQ_AMQP_PORT=46672\nPOSTGRES_PORT='46432'\n")
    assert urlsplit(compose_test_amqp_url()).port == 46672
    assert urlsplit(compose_test_postgres_url()).port == 46432

    monkeypatch.setenv("RABBITMQ_AMQP_PORT", "45672")  # the shell wins over .env, as in Compose
    monkeypatch.setenv("POSTGRES_PORT", "45432")
    assert urlsplit(compose_test_amqp_url()).port == 45672
    assert urlsplit(compose_test_postgres_url()).port == 45432
