"""Code generated from proto/orbithash/v1 by scripts/gen_proto.py."""
