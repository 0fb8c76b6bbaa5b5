"""The OCPP session layer: boot, heartbeat, status and transaction messages over a link connection.

The station wiring uses `SessionContext`, `serve_session` and `run_transactions` from here.
"""

from evstation.runtime.session.common import (
    SessionContext,
    WallClock,
    serve_session,
)
from evstation.runtime.session.transactions import run_transactions

__all__ = ["SessionContext", "WallClock", "run_transactions", "serve_session"]
