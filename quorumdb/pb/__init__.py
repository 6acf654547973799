"""Generated protobuf and gRPC code. Do not edit: run `python scripts/gen_proto.py`."""
