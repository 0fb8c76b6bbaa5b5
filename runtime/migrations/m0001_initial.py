"""Schema version 1: outbox, transactions, key/value settings and boot state. Released: never edit."""

STATEMENTS = (
    """
    CREATE TABLE outbox (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        action      TEXT    NOT NULL,
        payload     TEXT    NOT NULL,
        attempts    INTEGER NOT NULL DEFAULT 0,
        offline     INTEGER NOT NULL DEFAULT 0,
        created_at  TEXT    NOT NULL
    )
    """,
    """
    CREATE TABLE transactions (
        id                   TEXT    PRIMARY KEY,
        evse_id              INTEGER NOT NULL,
        connector_id         INTEGER NOT NULL,
        id_token             TEXT,
        started_at           TEXT    NOT NULL,
        meter_start_wh       REAL    NOT NULL,
        state                TEXT    NOT NULL,
        seq_no               INTEGER NOT NULL DEFAULT 0,
        csms_transaction_id  INTEGER
    )
    """,
    """
    CREATE TABLE settings (
        key    TEXT PRIMARY KEY,
        value  TEXT NOT NULL
    )
    """,
    """
    CREATE TABLE boot_state (
        singleton            INTEGER PRIMARY KEY CHECK (singleton = 1),
        registration_status  TEXT,
        last_boot_at         TEXT,
        next_boot_reason     TEXT
    )
    """,
)
