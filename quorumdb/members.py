"""The journal replicas and adjudicators a node works with, in its own region and beyond.

A cluster of one region (and each region of a Global Database) works with its own 3 journal
replicas and 3 adjudicators, named as in its cluster file. An active-active cluster
(docs/ACTIVE_ACTIVE.md) is one database across three regions, each with its own cluster file
(`<data>/regions/<name>/cluster.toml`): its journal is the 9 replicas of all three regions and
its adjudicators are the 6 of the two peers. Members of such a cluster are named
`<region>/<node>` (`us-east-2/journal-az1`), since every region has a `journal-az1`.

Storage and compute stay regional: a region's storage copies follow its own journal replicas,
and its compute nodes read its own storage, so they are not members here.
"""
from __future__ import annotations

import dataclasses
import functools
import pathlib

from quorumdb import config as config_mod
from quorumdb import regions
from quorumdb.quorum import Quorum


@dataclasses.dataclass(frozen=True)
class Member:
    name: str          # "<region>/<node>" in an active-active cluster, else the node's name
    node: config_mod.NodeConfig
    region: str = ""   # "" in a cluster of one region

    @property
    def address(self) -> str:
        return self.node.address

    @property
    def service(self) -> str:
        return self.node.service


def qualify(region: str, name: str) -> str:
    return f"{region}/{name}" if region else name


def split(name: str) -> tuple[str, str]:
    """`us-east-1/journal-az1` -> ("us-east-1", "journal-az1"); a plain name -> ("", name)."""
    region, sep, node = name.rpartition("/")
    return (region, node) if sep else ("", name)


def active_active(cluster: config_mod.ClusterConfig) -> regions.GlobalConfig | None:
    """The global config when `cluster` is a region of an active-active cluster, else None."""
    if not cluster.global_file:
        return None
    global_cfg = _global(cluster.global_file)
    return global_cfg if global_cfg.active_active else None


@functools.lru_cache(maxsize=8)
def _global(path: str) -> regions.GlobalConfig:
    return regions.load(path)


@functools.lru_cache(maxsize=32)
def _region_cluster(cluster_file: pathlib.Path) -> config_mod.ClusterConfig:
    # Cluster files of a running cluster do not change: `quorumdb up` writes them once.
    return config_mod.load(cluster_file)


def region_clusters(global_cfg: regions.GlobalConfig) -> list[tuple[str, config_mod.ClusterConfig]]:
    return [(region.name, _region_cluster(region.cluster_file)) for region in global_cfg.regions]


def _members(cluster: config_mod.ClusterConfig, service: str) -> list[Member]:
    global_cfg = active_active(cluster)
    if global_cfg is None:
        return [Member(node.name, node) for node in cluster.by_service(service)]
    return [Member(qualify(name, node.name), node, name)
            for name, region_cluster in region_clusters(global_cfg)
            for node in region_cluster.by_service(service)]


def journal_members(cluster: config_mod.ClusterConfig) -> list[Member]:
    """Every journal replica of the database, own region first in the cluster file's order."""
    return _own_first(cluster, _members(cluster, "journal"))


def adjudicator_members(cluster: config_mod.ClusterConfig) -> list[Member]:
    """Every adjudicator of the database (the peers' in an active-active cluster), own region first."""
    return _own_first(cluster, _members(cluster, "adjudicator"))


def _own_first(cluster: config_mod.ClusterConfig, members: list[Member]) -> list[Member]:
    return sorted(members, key=lambda member: member.region != cluster.region if member.region else False)


def journal_quorum(cluster: config_mod.ClusterConfig) -> Quorum:
    members = _members(cluster, "journal")
    if active_active(cluster) is None:
        return Quorum.single([member.name for member in members])
    groups: dict[str, list[str]] = {}
    for member in members:
        groups.setdefault(member.region, []).append(member.name)
    return Quorum.of_regions(groups)


def own_name(cluster: config_mod.ClusterConfig, node_name: str) -> str:
    """This node's member name (qualified in an active-active cluster)."""
    return qualify(cluster.region, node_name) if active_active(cluster) is not None else node_name
