"""Which sets of journal replicas make a quorum: one region's majority, or a majority of regions.

A cluster of one region has 3 journal replicas and a quorum is any 2 of them. An
active-active cluster (docs/ACTIVE_ACTIVE.md) has journal replicas in three regions, two peers
and a witness, 3 in each; a quorum is a majority of the regions, each counted by a majority of
its own replicas ("durable in 2 of the 3 regions, each by its own AZ quorum").

Why every protocol that used "2 of 3" stays correct with this rule: any two quorums share at
least one replica (two majorities of 3 regions share a region, and two majorities of that
region's replicas share a replica). Commit (an entry on a quorum), fencing (a promise from a
quorum), the lease (grants held by a quorum) and closed-timestamp confirmation (acks from a
quorum) all rely on that intersection and on nothing else.

`match` answers the question every one of them asks: given a number per replica (its match
index, its lease end, its acked heartbeat), the highest value that a quorum of replicas has
reached. In a group of n replicas that is the (n//2 + 1)-th highest; across regions it is the
(g//2 + 1)-th highest of the regions' values.

Pure: no I/O, no clock.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Mapping, Sequence


@dataclasses.dataclass(frozen=True)
class Quorum:
    """Replicas grouped by region (one group named "" for a cluster of one region)."""

    groups: tuple[tuple[str, tuple[str, ...]], ...]

    def __post_init__(self) -> None:
        assert self.groups, "a quorum needs at least one group"
        seen: set[str] = set()
        for region, replicas in self.groups:
            assert replicas, f"region {region!r} has no replicas"
            for name in replicas:
                assert name not in seen, f"replica {name} is in two groups"
                seen.add(name)

    @classmethod
    def single(cls, replicas: Sequence[str]) -> Quorum:
        return cls((("", tuple(replicas)),))

    @classmethod
    def of_regions(cls, groups: Mapping[str, Sequence[str]]) -> Quorum:
        return cls(tuple((region, tuple(replicas)) for region, replicas in groups.items()))

    # --- views ---------------------------------------------------------------------
    @property
    def replicas(self) -> list[str]:
        return [name for _, replicas in self.groups for name in replicas]

    @property
    def regions(self) -> list[str]:
        return [region for region, _ in self.groups]

    @property
    def multi_region(self) -> bool:
        return len(self.groups) > 1

    def region_of(self, replica: str) -> str:
        for region, replicas in self.groups:
            if replica in replicas:
                return region
        raise KeyError(replica)

    def replicas_of(self, region: str) -> tuple[str, ...]:
        for name, replicas in self.groups:
            if name == region:
                return replicas
        raise KeyError(region)

    @property
    def regions_needed(self) -> int:
        return len(self.groups) // 2 + 1

    @staticmethod
    def needed_in(replicas: Sequence[str]) -> int:
        return len(replicas) // 2 + 1

    def describe(self) -> str:
        if not self.multi_region:
            replicas = self.groups[0][1]
            return f"{self.needed_in(replicas)} of {len(replicas)} journal replicas"
        return (f"{self.regions_needed} of {len(self.groups)} regions, each by a majority of its "
                f"journal replicas")

    # --- the questions --------------------------------------------------------------
    def region_match(self, values: Mapping[str, int]) -> dict[str, int]:
        """Per region: the highest value a majority of its replicas reached (a missing replica
        counts as 0)."""
        result = {}
        for region, replicas in self.groups:
            ordered = sorted((values.get(name, 0) for name in replicas), reverse=True)
            result[region] = ordered[self.needed_in(replicas) - 1]
        return result

    def match(self, values: Mapping[str, int]) -> int:
        """The highest value reached by a quorum of replicas (0 if none)."""
        ordered = sorted(self.region_match(values).values(), reverse=True)
        return ordered[self.regions_needed - 1]

    def region_reached(self, region: str, names: Iterable[str]) -> bool:
        """Whether `names` hold a majority of the region's replicas."""
        replicas = self.replicas_of(region)
        present = set(names)
        return sum(name in present for name in replicas) >= self.needed_in(replicas)

    def regions_reached(self, names: Iterable[str]) -> list[str]:
        present = set(names)
        return [region for region, _ in self.groups if self.region_reached(region, present)]

    def is_quorum(self, names: Iterable[str]) -> bool:
        """Whether `names` include a quorum."""
        return len(self.regions_reached(names)) >= self.regions_needed

    def can_reach(self, missing: Iterable[str]) -> bool:
        """Whether the replicas other than `missing` still include a quorum."""
        gone = set(missing)
        return self.is_quorum(name for name in self.replicas if name not in gone)
