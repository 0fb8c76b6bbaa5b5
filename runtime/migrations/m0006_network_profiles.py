"""Schema version 6: network connection profiles the CSMS set with SetNetworkProfile (2.0.1 B09).
Released: never edit.

One row per configuration slot; `profile` is the connectionData as received (JSON, wire spelling),
`security_profile` is copied out so the no-downgrade rule and the link can read it without parsing.
"""

STATEMENTS = (
    """
    CREATE TABLE network_profiles (
        slot              INTEGER PRIMARY KEY,
        security_profile  INTEGER NOT NULL,
        profile           TEXT    NOT NULL,
        stored_at         TEXT    NOT NULL
    )
    """,
)
