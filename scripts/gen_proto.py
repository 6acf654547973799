#!/usr/bin/env python3
"""Generate quorumdb/pb/*_pb2*.py from proto/*.proto.

protoc writes `import common_pb2`, which only works with proto/ on sys.path;
we rewrite those imports to package-relative ones so the generated modules live
inside the `quorumdb.pb` package. `tests/test_proto_generated.py` runs this
script into a temporary directory and fails if the committed files differ.

Usage: python scripts/gen_proto.py [--out DIR]   (default: quorumdb/pb)
"""
from __future__ import annotations

import argparse
import pathlib
import re
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
DEFAULT_OUT = ROOT / "quorumdb" / "pb"
IMPORT_RE = re.compile(r"^import (\w+_pb2) as (\w+)$", re.MULTILINE)


def generate(out_dir: pathlib.Path) -> list[pathlib.Path]:
    from grpc_tools import protoc  # imported here: only developers need grpcio-tools

    protos = sorted(PROTO_DIR.glob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            "protoc",
            f"-I{PROTO_DIR}",
            f"--python_out={tmp}",
            f"--grpc_python_out={tmp}",
            *[str(p) for p in protos],
        ]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for generated in sorted(pathlib.Path(tmp).glob("*.py")):
            text = IMPORT_RE.sub(r"from . import \1 as \2", generated.read_text())
            target = out_dir / generated.name
            target.write_text(text)
            written.append(target)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    for path in generate(args.out):
        print(path.relative_to(args.out.parent) if path.is_relative_to(args.out.parent) else path)


if __name__ == "__main__":
    sys.exit(main())
