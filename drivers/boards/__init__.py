"""Serial charge-controller board protocols (PIONIX Yeti COBS/protobuf, OpenEVSE RAPI) on pyserial.

Each driver implements `evstation.drivers.api.ChargeController`; nothing here knows OCPP.
"""
