"""evstation: the charging-station side of OCPP (1.6J and 2.0.1), on Trio.

The code lives in three layers, mapped into this package: `evstation.protocol` (pure OCPP, no I/O),
`evstation.drivers` (hardware behind small Protocols) and `evstation.runtime` (all I/O and time).
"""

__version__ = "0.1.0"
