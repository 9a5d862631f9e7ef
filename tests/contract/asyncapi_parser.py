"""The official AsyncAPI parser (npm `@asyncapi/parser`), installed on demand into the repository.

The version is pinned by tests/contract/asyncapi/package.json and its lock file. The first run
installs it with `npm ci` into `.cache/asyncapi/` (git-ignored), which needs the npm registry;
later runs reuse it and work offline. A tiny Node script parses a document and prints the
parser's diagnostics as JSON.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
PINNED = Path(__file__).resolve().parent / "asyncapi"
CACHE = REPO_ROOT / ".cache" / "asyncapi"
_MANIFESTS = ("package.json", "package-lock.json")
# Errors and warnings fail a document; "information" (a newer AsyncAPI version exists) and
# hints do not.
FAILING_SEVERITIES = frozenset({"error", "warning"})


class ParserUnavailable(RuntimeError):
    """Node.js or npm is missing, or the parser could not be installed."""


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: str
    code: str
    message: str
    path: str

    def __str__(self) -> str:
        return f"{self.severity} {self.code} at {self.path or '/'}: {self.message}"


@dataclass(frozen=True, slots=True)
class ParseResult:
    parsed: bool
    diagnostics: list[Diagnostic]

    @property
    def problems(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity in FAILING_SEVERITIES]

    @property
    def valid(self) -> bool:
        return self.parsed and not self.problems


class AsyncApiParser:
    def __init__(self, node: str, prefix: Path) -> None:
        self._node = node
        self._prefix = prefix

    def parse(self, document: Path) -> ParseResult:
        result = subprocess.run(
            [self._node, str(PINNED / "validate.cjs"), str(self._prefix), str(document)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"the AsyncAPI parser crashed: {result.stderr.strip()[-2000:]}")
        report: dict[str, Any] = json.loads(result.stdout)
        return ParseResult(
            parsed=bool(report["valid"]),
            diagnostics=[Diagnostic(**item) for item in report["diagnostics"]],
        )


def installed_parser(cache: Path = CACHE) -> AsyncApiParser:
    """The pinned parser, installed into `cache` first when it is missing or out of date."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise ParserUnavailable(
            "the AsyncAPI contract test needs Node.js (18.18+) and npm on PATH to run the "
            "official @asyncapi/parser; install them (Debian: apt-get install nodejs npm)"
        )
    if not _up_to_date(cache):
        _install(npm, cache)
    return AsyncApiParser(node, cache)


def pinned_version() -> str:
    manifest = json.loads((PINNED / "package.json").read_text())
    return str(manifest["dependencies"]["@asyncapi/parser"])


def _up_to_date(cache: Path) -> bool:
    installed = cache / "node_modules" / "@asyncapi" / "parser" / "package.json"
    if not installed.is_file():
        return False
    if any(
        not (cache / name).is_file() or (cache / name).read_bytes() != (PINNED / name).read_bytes()
        for name in _MANIFESTS
    ):
        return False
    return bool(json.loads(installed.read_text())["version"] == pinned_version())


def _install(npm: str, cache: Path) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    for name in _MANIFESTS:
        shutil.copyfile(PINNED / name, cache / name)
    # `ci` installs exactly the lock file; no package here needs an install script (one
    # dependency's is usage analytics), so none runs.
    command = [npm, "ci", "--prefix", str(cache), "--ignore-scripts", "--no-audit", "--no-fund"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    except subprocess.TimeoutExpired:
        raise ParserUnavailable("npm ci of @asyncapi/parser took longer than 900 s") from None
    if result.returncode != 0:
        raise ParserUnavailable(
            f"could not install @asyncapi/parser {pinned_version()} with npm "
            f"(the first run needs the npm registry): {result.stderr.strip()[-1500:]}"
        )
