"""OCPP 2.0.1 message models, one module per class that several actions use. DO NOT EDIT."""
