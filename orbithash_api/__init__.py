"""The OrbitHash gRPC contract: code generated from ``proto/orbithash/v1`` (grpcio + protobuf only).

Clients and services import the messages and stubs from ``orbithash_api.v1``; nothing here
imports the hashing library.
"""
