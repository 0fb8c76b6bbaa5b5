"""OCPP knowledge with no I/O: framing, message models and pure algorithms.

Nothing in this package may import trio, open a socket or a file at run time, or read a clock.
"""
