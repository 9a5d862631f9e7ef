"""The monitoring profile's files: Prometheus's configuration, the alert rules and their
`promtool test rules`, the Grafana dashboard, and that every metric they name is one the code
exports (or one of the rabbitmq_prometheus metrics listed below).

promtool comes with Debian's `prometheus` package (`apt-get install prometheus`; .ci/run
installs it); without it these tests fail saying so.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from email_consumer.metrics import WorkerMetrics
from producer_service.bootstrap import bootstrap
from shared.settings import Environment
from shared.topology import DEAD_LETTER_QUEUE, QUEUE
from tests.support.broker import docker_engine_answers

REPO_ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO_ROOT / "docker" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
DASHBOARD = REPO_ROOT / "docker" / "grafana" / "dashboards" / "rabbit-welcome.json"
DATASOURCES = REPO_ROOT / "docker" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
RUNBOOK = REPO_ROOT / "docs" / "OPERATIONS.md"
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"

# What the dashboard and the alerts read from RabbitMQ's own rabbitmq_prometheus plugin, on
# /metrics/detailed with the families queue_coarse_metrics and queue_consumer_count
# (docker/prometheus/prometheus.yml), and what Prometheus itself records for every target.
RABBITMQ_PROMETHEUS_METRICS = frozenset(
    {
        "rabbitmq_detailed_queue_messages",
        "rabbitmq_detailed_queue_messages_ready",
        "rabbitmq_detailed_queue_messages_unacked",
        "rabbitmq_detailed_queue_consumers",
    }
)
PROMETHEUS_METRICS = frozenset({"up"})
PROMETHEUS_IMAGE = next(
    line.split("image:", 1)[1].strip()
    for line in COMPOSE_FILE.read_text(encoding="utf-8").splitlines()
    if "image: prom/prometheus:" in line
)

_PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"}
    | {"unless", "offset", "inf", "nan"}
)


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    """promtool from PATH, or else the one inside the compose file's Prometheus image (where
    Docker answers), as the suite's broker comes from Docker when no local one answers. Name
    files relative to `cwd`: the container sees that folder only."""
    if shutil.which("promtool") is not None:
        command = ["promtool", *args]
    elif docker_engine_answers():
        command = [
            *("docker", "run", "--rm", "--entrypoint", "promtool"),
            # As this user, not the image's `nobody`: pytest's folders are private to their owner.
            *("--user", f"{os.getuid()}:{os.getgid()}"),
            *("--volume", f"{cwd}:/rules:ro", "--workdir", "/rules", PROMETHEUS_IMAGE, *args),
        ]
    else:
        pytest.fail(
            "promtool is not installed and no Docker engine answers: `apt-get install "
            "prometheus` (Debian) provides it",
            pytrace=False,
        )
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=300, check=False
    )


# ---- Prometheus and the alert rules -----------------------------------------------------------


def test_the_prometheus_configuration_and_its_rules_are_valid() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alert_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rule_tests_catch_an_alert_that_no_longer_fires(tmp_path: Path) -> None:
    # A DLQ alert that waits for six events would miss the three of the test: it must fail.
    shutil.copy(PROMETHEUS_DIR / "alerts.test.yml", tmp_path)
    text = ALERTS.read_text(encoding="utf-8")
    threshold = f'queue="{DEAD_LETTER_QUEUE}"}})\n          > 0'
    assert threshold in text, "the DLQ alert's expression changed: update this test"
    (tmp_path / "alerts.yml").write_text(text.replace(threshold, threshold[:-1] + "5"))
    result = promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "DeadLetterQueueNotEmpty" in result.stdout + result.stderr


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_every_alert_is_tested_and_has_a_runbook_section() -> None:
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text(encoding="utf-8"))
    tested = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    headings = set(re.findall(r"^## (\w+)$", RUNBOOK.read_text(encoding="utf-8"), re.MULTILINE))
    for rule in alert_rules():
        name = rule["alert"]
        assert name in tested, f"{name} is never shown to fire in alerts.test.yml"
        assert name in headings, f"docs/OPERATIONS.md has no section '## {name}'"
        assert rule["annotations"]["runbook"] == f"docs/OPERATIONS.md#{name.lower()}"


# ---- the dashboard ---------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def dashboard_queries() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel["targets"]]


def test_the_dashboard_is_one_grafana_can_provision() -> None:
    board = dashboard()
    provisioned = {
        source["uid"]
        for source in yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]
    }
    ids = [panel["id"] for panel in board["panels"]]
    assert board["uid"]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in board["panels"]:
        assert panel["datasource"]["uid"] in provisioned, panel["title"]
        assert panel["targets"], f"{panel['title']} shows nothing"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in provisioned, panel["title"]
            assert target["expr"].strip(), panel["title"]


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    # promtool parses expressions only as rules: one recording rule per query.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{index}", "expr": query}
                    for index, query in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    result = promtool("check", "rules", path.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def metric_names(query: str) -> set[str]:
    """The metric names a PromQL expression selects (not its functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", query)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = re.findall(r"(?<![\w.])([A-Za-z_:][\w:]*)\b(?!\s*\()", text)
    return {name for name in names if name.lower() not in _PROMQL_WORDS}


def test_metric_names_are_read_from_a_query() -> None:
    query = (
        'histogram_quantile(0.99, sum by (le) (rate(a_bucket{queue=~"x\\\\.y"}[5m]))) > 30 '
        'or up{job="w"} == 0 and on (instance) b'
    )
    assert metric_names(query) == {"a_bucket", "up", "b"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """Every sample name the services export, from the registries they build."""
    folder = tmp_path_factory.mktemp("relay")
    producer = bootstrap(Environment({"PRODUCER_DATABASE_URL": f"sqlite:///{folder}/p.sqlite3"}))
    try:
        registries = [producer.monitoring().metrics.registry, WorkerMetrics().registry]
        yield {
            sample.name
            for registry in registries
            for family in registry.collect()
            for sample in family.samples
        }
    finally:
        producer.close()


def test_the_services_export_what_the_issue_asks_for(exported: set[str]) -> None:
    assert {
        "producer_outbox_pending_events",
        "producer_outbox_oldest_pending_age_seconds",
        "producer_relay_events_total",
        "producer_relay_confirm_seconds_bucket",
        "email_consumer_in_flight",
        "email_consumer_broker_connected",
        "email_consumer_consuming",
        "email_consumer_smtp_breaker_open",
        "email_consumer_uncertain_sends_total",
    } <= exported


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_every_metric_queried_is_exported(source: str, exported: set[str]) -> None:
    queries = (
        dashboard_queries() if source == "dashboard" else [rule["expr"] for rule in alert_rules()]
    )
    known = exported | RABBITMQ_PROMETHEUS_METRICS | PROMETHEUS_METRICS
    unknown = {name for query in queries for name in metric_names(query)} - known
    assert unknown == set()


def test_the_queues_the_monitoring_names_are_the_topology_s() -> None:
    text = ALERTS.read_text(encoding="utf-8") + DASHBOARD.read_text(encoding="utf-8")
    named = set(re.findall(r'queue="([^"]+)"', text))
    assert named == {QUEUE, DEAD_LETTER_QUEUE}
