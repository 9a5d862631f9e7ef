"""docker-compose.cluster.yml: an override of docker-compose.yml, so it must agree with it.

Compose merges a service's volumes by their path in the container, so an override that mounts
another named volume at the broker's data path replaces the single broker's, and one that names
a volume neither file declares makes `up` fail before anything starts. The image is the other
thing the two files must agree on: the nodes boot from the same data the single broker wrote.
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from tests.support.compose import COMPOSE_FILE, REPO_ROOT, Service, load_compose
from tests.unit.test_compose_file import docker_compose_available

CLUSTER_FILE = REPO_ROOT / "docker-compose.cluster.yml"
_DATA_PATH = "/var/lib/rabbitmq"


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    document = yaml.safe_load(CLUSTER_FILE.read_text(encoding="utf-8"))
    assert isinstance(document, dict), f"{CLUSTER_FILE.name} must hold a mapping"
    return document


def _mounts(service: Service) -> dict[str, str]:
    """Container path -> source, for the short-syntax volumes of `service`."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, _, rest = volume.partition(":")
        mounts[rest.split(":", 1)[0]] = source
    return mounts


def _named(source: str) -> bool:
    return not source.startswith(("./", "/", "~"))


def test_every_volume_the_cluster_mounts_is_declared(cluster: dict[str, Any]) -> None:
    declared = set(load_compose().get("volumes") or {}) | set(cluster.get("volumes") or {})
    mounted = {
        f"{name}: {source}"
        for name, service in cluster["services"].items()
        for source in _mounts(service).values()
        if _named(source) and source not in declared
    }
    assert mounted == set()
    # Docker's own parser resolves the merge as `up` does; use it where it runs.
    if docker_compose_available():
        files = ["-f", str(COMPOSE_FILE), "-f", str(CLUSTER_FILE)]
        result = subprocess.run(
            ["docker", "compose", *files, "config", "-q"],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert result.returncode == 0, result.stderr


def test_every_file_the_cluster_mounts_exists(cluster: dict[str, Any]) -> None:
    missing = [
        f"{name}: {source}"
        for name, service in cluster["services"].items()
        for source in _mounts(service).values()
        if source.startswith("./") and not (REPO_ROOT / source).exists()
    ]
    assert missing == []


def test_the_nodes_run_the_single_brokers_image(cluster: dict[str, Any]) -> None:
    single = load_compose()["services"]["rabbitmq"]["image"]
    images = {service["image"] for service in cluster["services"].values() if "image" in service}
    assert images == {single}


def test_the_first_node_keeps_the_single_brokers_data(cluster: dict[str, Any]) -> None:
    single = _mounts(load_compose()["services"]["rabbitmq"])[_DATA_PATH]
    assert _mounts(cluster["services"]["rabbitmq"])[_DATA_PATH] == single
