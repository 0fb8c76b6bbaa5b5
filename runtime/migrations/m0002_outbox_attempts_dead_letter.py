"""Schema version 2: when an outbox entry was last tried, and the dead-letter table. Released: never edit.

A transaction message that exhausted its attempts is kept in `dead_letter` instead of being dropped.
"""

STATEMENTS = (
    "ALTER TABLE outbox ADD COLUMN last_attempt_at TEXT",
    """
    CREATE TABLE dead_letter (
        id               INTEGER PRIMARY KEY,
        action           TEXT    NOT NULL,
        payload          TEXT    NOT NULL,
        attempts         INTEGER NOT NULL,
        offline          INTEGER NOT NULL,
        created_at       TEXT    NOT NULL,
        last_attempt_at  TEXT,
        reason           TEXT    NOT NULL,
        given_up_at      TEXT    NOT NULL
    )
    """,
)
