"""The data directory of a new cluster made from another one's data (restore, clone).

A restored or cloned cluster is a cluster of its own: its own cluster.toml (ports from its base
port, its own backup location, its own token secret, created by `quorumdb up`), a fresh journal,
and storage copies that already hold the data. The journal must continue the numbering the
storage state has reached, so every journal replica starts empty with `first_index = K + 1`
(K: the last entry the storage state holds, committed): the first adjudicator leader fences
them, finds the tail at K, and appends its leader entry at K + 1; a storage copy that later
loses its data repairs from its peers' checkpoints exactly as in the source cluster, because
the journal says it holds nothing below K + 1.
"""
from __future__ import annotations

import dataclasses
import os
import pathlib
import shutil

from journal.core import Meta
from journal.store import JournalStore
from quorumdb import config as config_mod


class NewClusterError(Exception):
    """The new cluster cannot be laid out (the message says why); nothing was written."""


def default_base_port(source: config_mod.ClusterConfig) -> int:
    """The block right after the source's: the new cluster runs beside it."""
    return source.base_port + config_mod.PORT_BLOCK


def check_empty(data_dir: pathlib.Path) -> None:
    if data_dir.exists() and any(data_dir.iterdir()):
        raise NewClusterError(f"{data_dir} is not empty: a restore or clone needs a new data directory")


def create(source: config_mod.ClusterConfig, data_dir: pathlib.Path | str,
           base_port: int | None) -> config_mod.ClusterConfig:
    """Write the new cluster's cluster.toml: the source's settings, its own ports and backup."""
    data_dir = pathlib.Path(data_dir).resolve()
    check_empty(data_dir)
    if data_dir == source.data_dir or source.data_dir in data_dir.parents:
        raise NewClusterError(f"{data_dir} is inside the source cluster's data directory {source.data_dir}")
    port = default_base_port(source) if base_port is None else base_port
    if port == source.base_port:
        raise NewClusterError(f"--base-port {port} is the source cluster's: pick another block")
    host = source.nodes[0].host
    cluster = dataclasses.replace(
        source, data_dir=data_dir, nodes=config_mod.default_nodes(port, host=host),
        pg_base_port=0, metrics_base_port=0,
        # Never the source's backup: two clusters writing one history would corrupt both.
        backup_dir="",
    )
    cluster.write()
    return cluster


def seed_journals(cluster: config_mod.ClusterConfig, last_index: int) -> None:
    """Every journal replica empty, its log continuing after last_index (committed)."""
    for node in cluster.journals:
        store = JournalStore(cluster.node_data_dir(node.name) / "journal",
                             segment_entries=cluster.journal_segment_entries)
        store.directory.mkdir(parents=True, exist_ok=True)
        store.write_meta(Meta(promised_epoch=0, first_index=last_index + 1, base_epoch=0, commit_index=last_index))


def link_or_copy(source: pathlib.Path, target: pathlib.Path) -> int:
    """Hard-link an immutable file (0 bytes added); copy it across file systems. Returns bytes copied."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
        return 0
    except OSError:
        shutil.copyfile(source, target)
        with open(target, "rb+") as f:
            os.fsync(f.fileno())
        return target.stat().st_size


def directory_bytes(path: pathlib.Path) -> int:
    """Bytes of the files under path, counting each hard-linked inode once per directory tree."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            info = os.lstat(os.path.join(dirpath, name))
            identity = (info.st_dev, info.st_ino)
            if identity in seen:
                continue
            seen.add(identity)
            total += info.st_size
    return total


def discard(data_dir: pathlib.Path, existed: bool) -> None:
    """Undo a failed restore or clone: remove data_dir if it was created, else empty it (it was empty)."""
    if not data_dir.exists():
        return
    if not existed:
        shutil.rmtree(data_dir, ignore_errors=True)
        return
    for child in data_dir.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
