"""The board protocols' schemas (.proto files of ours) and the Python code protoc generates from them.

The `*_pb2.py` / `*_pb2.pyi` files are generated and committed; `generate.py` rewrites or checks them.
"""
