"""Schema version 3: the id-token type and the stop data of a transaction. Released: never edit.

A transaction that ended while the station was off-line or lost power must still be reported with its
stop reason and meter value after a reboot; 2.0.1 IdTokenType needs the token's type too.
"""

STATEMENTS = (
    "ALTER TABLE transactions ADD COLUMN id_token_type TEXT",
    "ALTER TABLE transactions ADD COLUMN stopped_at TEXT",
    "ALTER TABLE transactions ADD COLUMN meter_stop_wh REAL",
    "ALTER TABLE transactions ADD COLUMN stop_reason TEXT",
)
