"""Serial charge-controller board protocols (Yeti-family COBS/protobuf, OpenEVSE RAPI) on pyserial.

Each driver implements `evstation.drivers.api.ChargeController`; nothing here knows OCPP.
"""
