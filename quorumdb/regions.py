"""Regions: the global cluster file, and the global control state.

A Global Database (docs/REGIONS.md) is several regions, each a whole cluster of its own
(`<data>/regions/<name>/cluster.toml`, its own 60-port block, its own journal, adjudicators,
storage and compute), named in one *global cluster file*, `<data>/global.toml`:

    [global]
    wan_ms = 30            # one-way delay between regions, on every message (quorumdb/wan.py)
    wan_jitter_ms = 5
    wan_loss = 0.0         # probability a cross-region message is lost
    [[regions]]
    name = "us-east"
    role = "primary"       # the role the region starts with
    base_port = 7100
    [[regions]]
    name = "eu-west"
    role = "secondary"
    base_port = 7160

Each region's cluster file carries `region = "<name>"` and `global_file = "<path of
global.toml>"`, so a node knows its region and finds the others.

Who is primary *now* is not in the global cluster file: it is in the journal (ENTRY_GLOBAL
entries: a switchover's marker, a failover's promotion) and, for a failover, in the global
control state `<data>/global/state.json`, which only the `quorumdb global` commands write
(atomically, under a lock), and which every adjudicator polls: a failover must fence an old
primary that cannot hear about it through any log (it is dead or cut off), as Aurora's control
plane does. The decision which of the two wins is pure (adjudicator/region_core.py).
"""
from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import tomllib

from quorumdb import config as config_mod
from quorumdb import durable

GLOBAL_FILE = "global.toml"
REGIONS_DIR = "regions"
STATE_DIR = "global"
STATE_FILE = "state.json"
RECOVERY_DIR = "recovery"
ROLES = ("primary", "secondary")
# An active-active cluster (docs/ACTIVE_ACTIVE.md): two peer regions and a witness.
ACTIVE_ROLES = ("peer", "witness")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
WAN_MS_MAX = 2_000
STATE_BYTES_MAX = 64 * 1024


class RegionsError(ValueError):
    """A --regions or --wan-ms argument, or a global file, that is not valid (the message says why)."""


@dataclasses.dataclass(frozen=True)
class RegionConfig:
    name: str
    role: str           # the role it started with (primary | secondary)
    base_port: int
    data_dir: pathlib.Path

    @property
    def cluster_file(self) -> pathlib.Path:
        return self.data_dir / config_mod.CONFIG_FILE

    def cluster(self) -> config_mod.ClusterConfig:
        return config_mod.load(self.cluster_file)


@dataclasses.dataclass(frozen=True)
class GlobalConfig:
    data_dir: pathlib.Path
    regions: tuple[RegionConfig, ...]
    wan_ms: float = 0.0
    wan_jitter_ms: float = 0.0
    wan_loss: float = 0.0

    @property
    def path(self) -> pathlib.Path:
        return self.data_dir / GLOBAL_FILE

    def region(self, name: str) -> RegionConfig:
        for region in self.regions:
            if region.name == name:
                return region
        raise KeyError(f"no region named {name!r} (regions: {', '.join(r.name for r in self.regions)})")

    @property
    def names(self) -> list[str]:
        return [region.name for region in self.regions]

    @property
    def initial_primary(self) -> str:
        """The region that started as the primary; "" in an active-active cluster, which has none
        (not a StopIteration, which a coroutine would turn into a RuntimeError far from here)."""
        return next((region.name for region in self.regions if region.role == "primary"), "")

    @property
    def active_active(self) -> bool:
        """Two peers and a witness sharing one journal (not a Global Database)."""
        return any(region.role in ACTIVE_ROLES for region in self.regions)

    @property
    def peers(self) -> list[str]:
        return [region.name for region in self.regions if region.role == "peer"]

    @property
    def witness(self) -> str:
        return next((region.name for region in self.regions if region.role == "witness"), "")

    def to_toml(self) -> str:
        lines = ["# QuorumDB global cluster file: the regions of a Global Database (docs/REGIONS.md) or of an "
                 "active-active cluster (docs/ACTIVE_ACTIVE.md).",
                 "[global]", f"wan_ms = {float(self.wan_ms)!r}", f"wan_jitter_ms = {float(self.wan_jitter_ms)!r}",
                 f"wan_loss = {float(self.wan_loss)!r}", ""]
        for region in self.regions:
            lines += ["[[regions]]", f'name = "{region.name}"', f'role = "{region.role}"',
                      f"base_port = {region.base_port}", ""]
        return "\n".join(lines)

    def write(self) -> pathlib.Path:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(self.to_toml())
        os.replace(tmp, self.path)
        return self.path


def region_dir(data_dir: pathlib.Path, name: str) -> pathlib.Path:
    return data_dir / REGIONS_DIR / name


def parse_regions(text: str) -> list[tuple[str, str]]:
    """`us-east:primary,eu-west:secondary` -> [(name, role)]; exactly one primary, at least two regions."""
    pairs = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, role = item.partition(":")
        role = role or ("primary" if not pairs else "secondary")
        if not NAME_RE.match(name):
            raise RegionsError(f"region name {name!r}: lowercase letters, digits and '-', starting with a letter")
        if role not in ROLES:
            raise RegionsError(f"region {name}: role must be primary or secondary, not {role!r}")
        pairs.append((name, role))
    names = [name for name, _ in pairs]
    if len(pairs) < 2:
        raise RegionsError("a Global Database needs at least two regions (NAME:primary,NAME:secondary)")
    if len(set(names)) != len(names):
        raise RegionsError(f"region names must be unique: {text!r}")
    if sum(role == "primary" for _, role in pairs) != 1:
        raise RegionsError("exactly one region must be the primary")
    return pairs


def parse_active_active(regions_text: str, witness: str) -> list[tuple[str, str]]:
    """`--regions us-east-1,us-east-2 --witness us-west-2` -> [(name, "peer"), (name, "peer"),
    (witness, "witness")]: exactly two peers (a role suffix, if given, must be `peer`)."""
    pairs = []
    for item in (part.strip() for part in regions_text.split(",")):
        if not item:
            continue
        name, _, role = item.partition(":")
        if role not in ("", "peer"):
            raise RegionsError(f"region {name}: with --witness every region is a peer, not {role!r}")
        pairs.append((name, "peer"))
    pairs.append((witness.strip(), "witness"))
    for name, _ in pairs:
        if not NAME_RE.match(name):
            raise RegionsError(f"region name {name!r}: lowercase letters, digits and '-', starting with a letter")
    names = [name for name, _ in pairs]
    if len(pairs) != 3:
        raise RegionsError("an active-active cluster has exactly two peer regions and a witness "
                           "(--regions A,B --witness W)")
    if len(set(names)) != len(names):
        raise RegionsError(f"region names must be unique: {', '.join(names)}")
    return pairs


def parse_wan(text: str) -> tuple[float, float, float]:
    """`--wan-ms DELAY[,JITTER[,LOSS]]` -> (delay_ms, jitter_ms, loss); loss is a fraction 0..0.5."""
    parts = [part.strip() for part in text.split(",")]
    if not 1 <= len(parts) <= 3 or not all(parts):
        raise RegionsError(f"--wan-ms {text!r}: DELAY_MS[,JITTER_MS[,LOSS]] (for example 30 or 30,5,0.01)")
    try:
        values = [float(part) for part in parts] + [0.0] * (3 - len(parts))
    except ValueError:
        raise RegionsError(f"--wan-ms {text!r}: numbers expected") from None
    delay, jitter, loss = values
    if not 0 <= delay <= WAN_MS_MAX or not 0 <= jitter <= WAN_MS_MAX:
        raise RegionsError(f"--wan-ms {text!r}: delay and jitter must be 0..{WAN_MS_MAX} ms")
    if not 0 <= loss <= 0.5:
        raise RegionsError(f"--wan-ms {text!r}: loss is a fraction of messages, 0..0.5")
    return delay, jitter, loss


def layout(data_dir: pathlib.Path | str, pairs: list[tuple[str, str]], base_port: int,
           wan: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> GlobalConfig:
    """The global config of a new Global Database: region i on base_port + i x PORT_BLOCK."""
    data_dir = pathlib.Path(data_dir).resolve()
    regions = tuple(RegionConfig(name, role, base_port + i * config_mod.PORT_BLOCK, region_dir(data_dir, name))
                    for i, (name, role) in enumerate(pairs))
    return GlobalConfig(data_dir, regions, *wan)


def load(data_dir_or_file: pathlib.Path | str) -> GlobalConfig:
    path = pathlib.Path(data_dir_or_file).resolve()
    if path.is_dir():
        path = path / GLOBAL_FILE
    with path.open("rb") as f:
        raw = tomllib.load(f)
    settings = raw.get("global", {})
    data_dir = path.parent
    regions = []
    for item in raw.get("regions", []):
        name, role = item["name"], item.get("role", "secondary")
        if not NAME_RE.match(name) or role not in ROLES + ACTIVE_ROLES:
            raise RegionsError(f"{path}: bad region {item!r}")
        regions.append(RegionConfig(name, role, int(item["base_port"]), region_dir(data_dir, name)))
    roles = [r.role for r in regions]
    if any(role in ACTIVE_ROLES for role in roles):
        if sorted(roles) != ["peer", "peer", "witness"]:
            raise RegionsError(f"{path}: an active-active cluster has two peers and a witness, not {roles}")
    elif roles.count("primary") != 1:
        raise RegionsError(f"{path}: exactly one region must start as the primary")
    return GlobalConfig(data_dir, tuple(regions), float(settings.get("wan_ms", 0.0)),
                        float(settings.get("wan_jitter_ms", 0.0)), float(settings.get("wan_loss", 0.0)))


def of_cluster(cluster: config_mod.ClusterConfig) -> GlobalConfig | None:
    """The global config of a region's cluster; None for a cluster without regions."""
    if not cluster.global_file:
        return None
    return load(cluster.global_file)


def is_global(data_dir: pathlib.Path | str) -> bool:
    return (pathlib.Path(data_dir) / GLOBAL_FILE).exists()


# --- the replication lag as users read it -------------------------------------------------------------
def reported_lag_ms(reply) -> int | None:
    """A RegionPoint reply's lag_ms; None when the adjudicator left it out because nobody knows it
    (a standby answering, a leader still reading its point)."""
    return int(reply.lag_ms) if reply.HasField("lag_ms") else None


def lag_text(lag_ms: int | None) -> str:
    """A lag as `global status` and `SHOW quorumdb.replica_lag` show it: unknown is never 0 ms."""
    return "unknown" if lag_ms is None else f"{lag_ms} ms"


# --- the global control state ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ControlState:
    """What the `quorumdb global` commands decided (see the module docstring).

    global_epoch/primary: the newest switchover's or failover's (0/"": none yet: the journal
    alone decides). marker_index: a switchover's marker in the old primary's log (the new primary
    replicates up to it before it leads); 0 for a failover (promote where it stands).
    fenced: old primaries a failover left behind, with the promotion index they must rewind to.
    detached: regions that left the Global Database. rpo_s: the RPO limit (0: none)."""
    version: int = 0
    global_epoch: int = 0
    primary: str = ""
    marker_index: int = 0
    fenced: tuple[tuple[str, int], ...] = ()
    detached: tuple[str, ...] = ()
    rpo_s: float = 0.0

    def fenced_index(self, region: str) -> int | None:
        for name, index in self.fenced:
            if name == region:
                return index
        return None

    def to_json(self) -> str:
        return json.dumps({"version": self.version, "global_epoch": self.global_epoch, "primary": self.primary,
                           "marker_index": self.marker_index,
                           "fenced": {name: index for name, index in self.fenced},
                           "detached": list(self.detached), "rpo_s": self.rpo_s}, indent=1) + "\n"


def parse_state(text: str) -> ControlState:
    if not text.strip():
        return ControlState()
    raw = json.loads(text)
    fenced = raw.get("fenced", {})
    return ControlState(
        version=int(raw.get("version", 0)), global_epoch=int(raw.get("global_epoch", 0)),
        primary=str(raw.get("primary", "")), marker_index=int(raw.get("marker_index", 0)),
        fenced=tuple(sorted((str(k), int(v)) for k, v in fenced.items())),
        detached=tuple(sorted(str(name) for name in raw.get("detached", []))),
        rpo_s=float(raw.get("rpo_s", 0.0)))


def state_path(data_dir: pathlib.Path) -> pathlib.Path:
    return pathlib.Path(data_dir) / STATE_DIR / STATE_FILE


def read_state(data_dir: pathlib.Path) -> ControlState:
    try:
        with open(state_path(data_dir), "rb") as f:
            data = f.read(STATE_BYTES_MAX + 1)
    except FileNotFoundError:
        return ControlState()
    if len(data) > STATE_BYTES_MAX:
        raise RegionsError(f"{state_path(data_dir)} is larger than {STATE_BYTES_MAX} bytes")
    return parse_state(data.decode())


def update_state(data_dir: pathlib.Path, change) -> ControlState:
    """Apply `change(state) -> state` under the lock; written atomically and fsynced."""
    with durable.locked(state_path(data_dir).parent / "state.lock"):
        state = change(read_state(data_dir))
        state = dataclasses.replace(state, version=state.version + 1)
        durable.replace_atomically(state_path(data_dir), state.to_json().encode())
    return state
