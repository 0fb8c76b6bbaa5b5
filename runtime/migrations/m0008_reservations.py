"""Schema version 8: the reservations the CSMS made (2.0.1 H01; 1.6 ReserveNow). Released: never edit.

One row per reservation id; a reservation ends (used, cancelled, expired, removed) by deleting its row.
`evse_id` NULL is a reservation of no particular EVSE (2.0.1 evseId absent; 1.6 connector 0).
"""

STATEMENTS = (
    """
    CREATE TABLE reservations (
        id INTEGER PRIMARY KEY,
        evse_id INTEGER,
        connector_type TEXT,
        id_token TEXT NOT NULL,
        token_type TEXT,
        group_id_token TEXT,
        expires_at TEXT NOT NULL
    )
    """,
)
