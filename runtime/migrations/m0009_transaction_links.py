"""Schema version 9: which transaction an outbox message belongs to, and what a transaction must keep
to be resumed or ended correctly after a restart. Released: never edit.

- outbox / dead_letter `transaction_id`: the station's id of the message's transaction (1.6: the local
  id), in a column instead of a non-OCPP key inside the queued payload (`_localTransactionId`, which
  earlier versions stored and stripped before sending); existing rows are moved over.
- transactions: the 2.0.1 remoteStartId / reservationId (repeated after a resume), the meter values
  that belong in the end message (TxEnded / StopTxn measurands, as JSON in the version's format), the
  signed start and stop readings, and `resumable` (0 once a Reset ended its session).
"""

_LOCAL_ID = "json_extract(payload, '$._localTransactionId')"
_TX_INFO_ID = "json_extract(payload, '$.transactionInfo.transactionId')"
_WIRE_ID = "json_extract(payload, '$.transactionId')"


def _move(table: str) -> tuple[str, ...]:
    return (
        f"ALTER TABLE {table} ADD COLUMN transaction_id TEXT",
        f"UPDATE {table} SET transaction_id = CAST({_LOCAL_ID} AS TEXT), "
        f"payload = json_remove(payload, '$._localTransactionId') WHERE {_LOCAL_ID} IS NOT NULL",
        f"UPDATE {table} SET transaction_id = {_TX_INFO_ID} "
        f"WHERE action = 'TransactionEvent' AND transaction_id IS NULL",
        f"UPDATE {table} SET transaction_id = (SELECT t.id FROM transactions t "
        f"WHERE t.id = CAST({_WIRE_ID} AS TEXT) OR t.csms_transaction_id = {_WIRE_ID}) "
        f"WHERE action IN ('MeterValues', 'StopTransaction') AND transaction_id IS NULL "
        f"AND {_WIRE_ID} IS NOT NULL",
    )


STATEMENTS = (
    *_move("outbox"),
    *_move("dead_letter"),
    "CREATE INDEX outbox_transaction ON outbox (transaction_id)",
    "ALTER TABLE transactions ADD COLUMN remote_start_id INTEGER",
    "ALTER TABLE transactions ADD COLUMN reservation_id INTEGER",
    "ALTER TABLE transactions ADD COLUMN ended_values TEXT",
    "ALTER TABLE transactions ADD COLUMN signed_start TEXT",
    "ALTER TABLE transactions ADD COLUMN signed_stop TEXT",
    "ALTER TABLE transactions ADD COLUMN resumable INTEGER NOT NULL DEFAULT 1",
)
