"""Schema version 7: the authorization cache and the local authorization list. Released: never edit.

`token_key` is the token's identity under the station's OCPP version (protocol.authorization.token_key:
case-folded, with the 2.0.1 type); the token is kept as presented. Times are UTC ISO texts. The list's
version is the setting `auth.local_list_version`.
"""

STATEMENTS = (
    """
    CREATE TABLE auth_cache (
        token_key    TEXT PRIMARY KEY,
        id_token     TEXT NOT NULL,
        token_type   TEXT NOT NULL,
        status       TEXT NOT NULL,
        expiry       TEXT,
        group_token  TEXT,
        group_type   TEXT,
        evse_ids     TEXT NOT NULL DEFAULT '',
        last_used    TEXT NOT NULL
    ) WITHOUT ROWID
    """,
    """
    CREATE TABLE local_auth_list (
        token_key    TEXT PRIMARY KEY,
        id_token     TEXT NOT NULL,
        token_type   TEXT NOT NULL,
        status       TEXT NOT NULL,
        expiry       TEXT,
        group_token  TEXT,
        group_type   TEXT,
        evse_ids     TEXT NOT NULL DEFAULT ''
    ) WITHOUT ROWID
    """,
)
