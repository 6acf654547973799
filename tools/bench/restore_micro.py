"""Restore time per phase against backup size, on a synthetic backup in a local object store.

    python -m tools.bench.restore_micro --entries 20000 --writes 5 --value-bytes 100 [--base-at 10000]

Builds DIR/backup the way a storage copy ships it (genesis base or a checkpoint base, 8 MB log
objects, a manifest), then runs tools.dr.restore.restore to the latest time and to the middle
of the log, and prints bytes, entries and seconds per phase (plan, download, replay, write).
"""
from __future__ import annotations

import argparse
import pathlib
import tempfile
import time

from quorumdb import backup_layout as layout
from quorumdb import config as config_mod
from tools.dr import restore as restore_mod
from quorumdb.objectstore import LocalStore
from quorumdb.pb import common_pb2
from storage_node import backup_core, checkpoint
from storage_node.core import Segment
from storage_node.service import to_record

T0 = 1_700_000_000_000_000_000


def build(directory: pathlib.Path, entries: int, writes: int, value_bytes: int, base_at: int) -> int:
    store = LocalStore(directory)
    store.put(layout.CLUSTER_CONFIG_KEY, config_mod.default_cluster(directory / "src").to_toml().encode())
    segment = Segment()
    value = b"v" * value_bytes
    batch: list[common_pb2.Entry] = []
    batch_bytes = 0

    def flush():
        nonlocal batch, batch_bytes
        if batch:
            store.put(layout.log_key(batch[0].index, batch[-1].index, batch[0].ts, batch[-1].ts), layout.encode_log(batch))
        batch, batch_bytes = [], 0

    if base_at == 0:
        store.put(layout.base_key(0, 0), b"".join(checkpoint.encode(checkpoint.CheckpointHeader(0, 0, 0, 0), [], 1 << 20)))
    for index in range(1, entries + 1):
        entry = common_pb2.Entry(index=index, ts=T0 + index * 1000, kind=common_pb2.ENTRY_TXN,
                                 writes=[common_pb2.Write(key=b"key%08d" % ((index * writes + w) % (entries * writes // 2 + 1)),
                                                          value=value) for w in range(writes)])
        if index > base_at:
            batch.append(entry)
            batch_bytes += entry.ByteSize()
            if batch_bytes >= backup_core.LOG_OBJECT_BYTES_MAX:
                flush()
        segment.apply([to_record(entry)])
        if index == base_at:
            view = segment.checkpoint_view()
            header = checkpoint.CheckpointHeader(index, view.last_applied_ts, view.closed_ts, 0)
            store.put(layout.base_key(index, view.last_applied_ts),
                      b"".join(checkpoint.encode(header, segment.checkpoint_records(view), 1 << 20)))
    flush()
    last_ts = T0 + entries * 1000
    store.put(layout.manifest_key(entries, last_ts),
              layout.encode_manifest(layout.Manifest(entries, last_ts, base_at, "bench", time.time_ns())))
    return last_ts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=20_000)
    parser.add_argument("--writes", type=int, default=5, help="keys written per entry")
    parser.add_argument("--value-bytes", type=int, default=100)
    parser.add_argument("--base-at", type=int, default=0, help="index of a checkpoint base (0: genesis only)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = pathlib.Path(scratch)
        started = time.monotonic()
        last_ts = build(root / "backup", args.entries, args.writes, args.value_bytes, args.base_at)
        backup_bytes = sum(info.size for info in LocalStore(root / "backup").list(""))
        print(f"backup: {args.entries} entries x {args.writes} writes x {args.value_bytes} B, base at {args.base_at}: "
              f"{backup_bytes} bytes, built in {time.monotonic() - started:.1f}s")
        for name, to_ts in (("latest", None), ("middle", T0 + (args.entries // 2 + max(args.base_at, 0) // 2) * 1000)):
            started = time.monotonic()
            result = restore_mod.restore(str(root / "backup"), root / f"new-{name}", to_ts=to_ts, base_port=30000)
            total = time.monotonic() - started
            phases = " ".join(f"{k} {result.seconds.get(k, 0):.2f}s" for k in ("plan", "download", "replay", "write"))
            print(f"restore {name}: index {result.index}, {result.entries_replayed} entries replayed, {result.keys} keys, "
                  f"{result.bytes_read} bytes read, {result.objects} objects; {phases}; total {total:.2f}s")
        del last_ts


if __name__ == "__main__":
    main()
