"""OCPP 2.0.1 message models (generated, see messages.py) and their action registry.

Importing this package builds no model and must never import another OCPP version's models.
"""

from evstation.protocol.v201.messages import ACTIONS

__all__ = ["ACTIONS"]
