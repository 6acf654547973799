"""The generated code in quorumdb/pb must be exactly what proto/ produces."""
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_generated_code_matches_proto(tmp_path):
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--out", str(tmp_path)],
        check=True, capture_output=True, timeout=120,
    )
    fresh = {p.name: p.read_text() for p in tmp_path.glob("*_pb2*.py")}
    committed = {p.name: p.read_text() for p in (ROOT / "quorumdb" / "pb").glob("*_pb2*.py")}
    assert fresh, "protoc produced nothing"
    assert sorted(fresh) == sorted(committed), "generated file set differs: run scripts/gen_proto.py"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated code: {stale}; run `python scripts/gen_proto.py`"


def test_every_service_has_its_proto():
    names = {p.stem for p in (ROOT / "proto").glob("*.proto")}
    assert {"journal", "adjudicator", "storage", "compute", "common"} <= names
