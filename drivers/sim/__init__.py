"""Simulated hardware: an IEC 61851 EV model, an in-process charge controller, a meter, and emulators.

Nothing here knows OCPP; sims implement the Protocols of `evstation.drivers.api`.
"""
