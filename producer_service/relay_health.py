"""The relay's `/livez` and `/readyz`.

* **live**: the relay's loop went round within LIVENESS_TIMEOUT_S. It reports progress on each
  pass, each batch settled, each slice of a pause and each wait between two connection
  attempts, so a broker or database outage keeps it live (waiting is its job then); a call
  that never returns (a database lock, a hung socket) does not.
* **ready**: its broker connection is open and the database answers a `SELECT 1`, asked at
  each probe.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from shared.database import reason_of
from shared.health import Heartbeat, Verdict


class RelayHealth:
    def __init__(
        self,
        liveness_timeout_s: float,
        *,
        broker_connected: Callable[[], bool],
        database_problem: Callable[[], str | None],
    ) -> None:
        self._loop = Heartbeat(liveness_timeout_s)
        self._broker_connected = broker_connected
        self._database_problem = database_problem

    def progress(self) -> None:
        """What the relay calls as its loop goes round."""
        self._loop.beat()

    def liveness(self) -> Verdict:
        return self._loop.verdict("the relay loop")

    def readiness(self) -> Verdict:
        if not self._broker_connected():
            return Verdict(False, "no broker connection")
        problem = self._database_problem()
        if problem is not None:
            return Verdict(False, f"the database does not answer: {problem}")
        return Verdict(True, "broker connected, database answers")


def database_problem(engine: Engine) -> str | None:
    """None when the database answers a trivial query; otherwise the driver's one-line reason."""
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as error:
        return reason_of(error)
    return None
