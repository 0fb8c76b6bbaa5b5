"""OCPP 1.6 message models, one module per class that several actions use. DO NOT EDIT."""
