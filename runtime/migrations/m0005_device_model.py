"""Schema version 5: the device model's values, one row per variable attribute. Released: never edit.

An absent component instance, EVSE, connector or variable instance is stored as '' / 0 (EVSE and
connector ids start at 1), because SQLite treats every NULL in a primary key as distinct. `seeded` is
the value station.toml gave the variable at the last start (NULL: the file gives none): comparing it
with the file's value at the next start tells an edit of the file from a change made by the CSMS.
"""

STATEMENTS = (
    """
    CREATE TABLE device_variables (
        component           TEXT    NOT NULL,
        component_instance  TEXT    NOT NULL DEFAULT '',
        evse_id             INTEGER NOT NULL DEFAULT 0,
        connector_id        INTEGER NOT NULL DEFAULT 0,
        variable            TEXT    NOT NULL,
        variable_instance   TEXT    NOT NULL DEFAULT '',
        attribute           TEXT    NOT NULL,
        value               TEXT    NOT NULL,
        seeded              TEXT,
        PRIMARY KEY (component, component_instance, evse_id, connector_id, variable, variable_instance,
                     attribute)
    ) WITHOUT ROWID
    """,
)
