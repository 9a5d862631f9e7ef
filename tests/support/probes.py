"""Reading a running service's metrics endpoint and health probes, as Prometheus and the
`health` command do: plain HTTP on 127.0.0.1."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


def scrape(port: int) -> dict[str, float]:
    """Every sample of `/metrics`, keyed `name` or `name{label="value",...}`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{key}="{value}"' for key, value in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


@dataclass(frozen=True)
class Answer:
    status: int
    body: str


def probe(port: int, path: str) -> Answer:
    """GET `path`; a 503 is an answer too."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return Answer(response.status, response.read().decode().strip())
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.read().decode().strip())


def run_health(program: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """`<program> health` with the service's environment."""
    return subprocess.run(
        [program, "health"], env=dict(env), capture_output=True, text=True, timeout=60, check=False
    )
