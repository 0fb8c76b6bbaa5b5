"""Schema version 10: the CSMS's verdict on a transaction's token, kept with the transaction. Released:
never edit.

- transactions `token_status`: 1.6 StartTransaction.conf's idTagInfo status (stored with the
  transactionId it came with), or the first refusal in a 2.0.1 TransactionEventResponse's idTokenInfo.
  A resumed transaction applies a refusal as when the answer came (stop, or suspend the energy after
  MaxEnergyOnInvalidId): the answer itself is not heard again after a restart. NULL: none heard yet.
"""

STATEMENTS = ("ALTER TABLE transactions ADD COLUMN token_status TEXT",)
