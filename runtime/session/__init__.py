"""The OCPP session layer: the connection only (boot, heartbeat, statuses, the outbox sender) and the
functional blocks' handlers merged per connection. The station wiring uses `new_session` and
`serve_session` from here.
"""

from evstation.runtime.session.common import SessionContext, new_session, serve_session

__all__ = ["SessionContext", "new_session", "serve_session"]
