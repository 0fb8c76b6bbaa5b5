"""OCPP 2.0.1 message models, one module per action: its request and response and the classes only they use. DO NOT EDIT."""
