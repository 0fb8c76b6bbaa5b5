"""Schema version 11: where MaxEnergyOnInvalidId's allowance of a refused transaction counts from.
Released: never edit.

- transactions `invalid_id_from_wh`: the energy register (Wh) when the station began acting on the
  CSMS's refusal of the transaction's token with StopTxOnInvalidId / 1.6 StopTransactionOnInvalidId
  false. A transaction resumed after a restart gets only the rest of the allowance: counted from the
  resume, every restart would let a refused token take MaxEnergyOnInvalidId again. NULL: no refusal
  acted on (or no reading then).
"""

STATEMENTS = ("ALTER TABLE transactions ADD COLUMN invalid_id_from_wh REAL",)
