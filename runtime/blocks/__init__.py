"""The OCPP functional blocks: one module per block, each serving its actions for both versions.

See docs/architecture.md for where a new action goes. This package's `__init__` imports nothing, so a
block module can be imported alone.
"""
