"""A process of the registration service whose wall clock is off by a given number of seconds.

`python -m tests.support.shifted_clock SHIFT_S ACTION DATABASE_URL` sets `time.time` SHIFT_S
seconds off before any of the service's modules is imported (so a default argument bound to it
at import is off too), then does one thing against the database and prints its result as JSON:

- `relay-claim`: claim what a relay may claim (lease 60 s), print the claimed event ids, and
  leave the block without marks, which releases them.

It stands for another host sharing a PostgreSQL database, whose clock disagrees with the
database's; on SQLite, a process whose clock is wrong in Python only.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
LEASE_S = 60.0


def run_shifted(shift_s: float, action: str, database_url: str) -> Any:
    """Run `action` in a process whose clock is `shift_s` seconds off; returns what it printed."""
    done = subprocess.run(
        [sys.executable, "-m", "tests.support.shifted_clock", str(shift_s), action, database_url],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, f"the shifted-clock process failed: {done.stderr}"
    return json.loads(done.stdout.strip().splitlines()[-1])


def _shift_clock(shift_s: float) -> None:
    real_time = time.time
    time.time = lambda: real_time() + shift_s


def _relay_claim(database_url: str) -> list[str]:
    from producer_service.storage import SqlOutboxStore
    from shared.database import create_database_engine

    engine = create_database_engine(database_url)
    try:
        with SqlOutboxStore(engine, lease_s=LEASE_S).claim_pending(after_id=0, limit=100) as batch:
            return [message.event_id for message in batch.messages]
    finally:
        engine.dispose()


def main() -> None:
    shift_s, action, database_url = float(sys.argv[1]), sys.argv[2], sys.argv[3]
    _shift_clock(shift_s)
    actions = {"relay-claim": _relay_claim}
    print(json.dumps(actions[action](database_url)))


if __name__ == "__main__":
    main()
