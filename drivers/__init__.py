"""Hardware behind small typing.Protocol seams: meters, charge controllers, identification readers.

Drivers know hardware, not OCPP.
"""
