"""OCPP 1.6J message models (generated, see messages.py) and their action registry.

Importing this package builds no model and must never import another OCPP version's models.
"""

from evstation.protocol.v16.messages import ACTIONS

__all__ = ["ACTIONS"]
