"""Schema version 4: an open transaction's last meter reading and its time. Released: never edit.

After a power cut the station ends each open transaction with the last energy reading it had
persisted (1.6 StopTransaction meterStop, 2.0.1 TransactionEvent Ended meterValue) at that time.
"""

STATEMENTS = (
    "ALTER TABLE transactions ADD COLUMN last_meter_wh REAL",
    "ALTER TABLE transactions ADD COLUMN last_meter_at TEXT",
)
