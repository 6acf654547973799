"""gRPC plumbing shared by every service and client: options, servers, channels.

Every call made through QuorumDB code passes `timeout=`; the constants live in
`quorumdb.limits`. Channels are cached per address and closed together.

Network partitions (`quorumdb.netfault`). A node process calls `set_identity`
before it serves; from then on:

* `Channels()` gives, for every other node of the cluster, a channel whose calls check the
  link before anything is sent: on a cut link a call fails at once with UNAVAILABLE "network
  partition: link A-B is cut" (the call object it returns raises when awaited, read or
  written, as a failed RPC does); otherwise the call goes out with `x-quorumdb-node: <name>`
  added to its metadata. One set test and one wrapper call per RPC, and no gRPC interceptor:
  grpc.aio's interceptor machinery costs a task per call (docs/BENCHMARKS.md, "Partition rules
  without interceptors").
* `new_server()` gives a server that wraps each method handler once, when it is registered
  (registered methods, which grpc.aio looks up first, and generic handlers alike). A unary
  handler reads the caller's name only while some peer is cut, and refuses a cut peer. A
  response-streaming handler of a node peer runs as one task beside `cut_signal(peer)`; the
  cut ends it at once (the handler is cancelled, also while it waits on its request
  iterator, and the call ends UNAVAILABLE). Nothing is done per streamed message.

With metrics on (`set_server_histograms`, called by tools.node), the wrapper of a unary
handler also observes each call's duration in a per-method histogram (quorumdb/metrics.py): two
clock reads and a bisect per call, in the wrapper that exists anyway; streams are timed per
message by the services that know what a message is.

The WAN between regions (`quorumdb.wan`). A node of a region of a Global Database also calls
`set_region_identity`; its channels to nodes of other regions (`region_channel`,
`Channels.get_remote`) then delay every message of every call and stream by a one-way delay
(plus jitter), lose messages with the configured probability, and refuse calls and end streams
across a region partition (UNAVAILABLE "region partition: A - B is cut"). It is all done on the
caller's side, which sees both directions, again without interceptors: wrapped multicallables
and call objects (see "the WAN between regions" below). While the rules delay and lose nothing,
a unary call is grpc's own and a stream is grpc's own behind a thin wrapper that a partition
cancels. `watch_wan` keeps the rules current, as `watch_rules` does the cuts (a node runs one
watcher for both: `watch_rules(..., wan_state=)`).

`watch_rules` keeps the in-memory cuts current (one stat every NETFAULT_POLL_MS; calls never
touch the disk). The stat runs on the event loop: it costs microseconds, while a hop to a worker
thread and back, 20 times a second in every node, was about a fifth of an idle cluster's CPU;
the rare re-read of a changed file still goes to a thread. A process without an identity (qsql,
the client, tools) gets plain channels and servers, and its calls, which carry no node name, are
never cut.

Simulated distance between AZs. A node process whose environment has
`QUORUMDB_CROSS_AZ_DELAY_MS=N` (0 to CROSS_AZ_DELAY_MS_MAX) waits 2N ms, one round trip
of N ms each way, before every call it makes to a node in another AZ (a stream waits once,
when it opens; the commit and append streams also wait before each message they send). Same-AZ
calls and tools' calls are not delayed. It is done here, in the process, rather than with
`tc netem`, so that it needs no kernel module and no privilege and delays exactly the cross-AZ
links, whichever Docker network a peer's address resolves to (docs/DOCKER.md shows its effect
on commit latency). The deadline of a delayed call starts after the wait. Only these delayed
channels use client interceptors (`client_interceptors`): the wait has to happen inside the
call, and the setting is for experiments, never the default.

Security (quorumdb/certs.py, quorumdb/authz.py, quorumdb/tokens.py). Unless the cluster file says
`insecure = true`, `set_identity` also loads the node's TLS material: the cluster CA, the node's
key and certificate, who is which service. Then:

* `add_node_port` serves with gRPC's dynamic server credentials: the journal, adjudicator and
  storage nodes require a client certificate of the cluster's CA (mutual TLS; the handshake
  refuses anyone else), compute nodes serve TLS to token callers. The credentials' fetcher
  stats the node's certificate file at each handshake and reloads the pair when it changed, so
  `quorumdb certs rotate` takes effect without a restart.
* every handler is wrapped (the same once-per-method wrapper as for partitions) with the
  method's authorization: on a certificate service the caller's role is its certificate's CN
  (a node's service, or the tools' quorumdb-admin); on a token service (authz.TOKEN_SERVICES)
  the call must carry `authorization: Bearer <token>` (tokens.py; a verified token is cached
  until it expires). `authz.allowed(role, method)` then decides; a stream is checked once, when
  it opens. The refusal is UNAUTHENTICATED (no identity) or PERMISSION_DENIED (not this role's
  call).
* channels to other nodes are TLS with the node's own certificate, verifying the peer as the
  node meant (ssl_target_name_override = its certificate name); each new channel reads the
  current files. The partition and WAN wrappers sit on top, unchanged.

Tools and clients pass a `quorumdb.credentials.ClientCredentials` to `client_channel` (or
`Channels(credentials=)`); `admin_credentials(cluster)` is the tools' identity from a data
directory (the CA, the admin certificate and a token minted from the cluster's secret).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import inspect
import logging
import os
import time
from typing import Any, Mapping

import grpc

from quorumdb import aio, authz, certs, limits, netfault, runtime, tokens, wan
from quorumdb.config import ClusterConfig
from quorumdb import credentials as credentials_mod
from quorumdb.credentials import ClientCredentials

log = logging.getLogger("quorumdb.rpc")

OPTIONS = [
    ("grpc.max_send_message_length", limits.GRPC_MESSAGE_BYTES_MAX),
    ("grpc.max_receive_message_length", limits.GRPC_MESSAGE_BYTES_MAX),
    # Notice a dead peer on an idle connection within seconds, not minutes.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # Reconnect quickly after a peer restarts (the default backoff reaches 120 s).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1_000),
    # gRPC's "min reconnect backoff" is the time one connection attempt may take (TCP, the TLS
    # handshake, HTTP/2 settings), not a backoff: at 100 ms a handshake with a busy node was cut
    # off ("handshaker shutdown") and the call failed UNAVAILABLE. A call's own deadline still
    # bounds every wait.
    ("grpc.min_reconnect_backoff_ms", limits.CONNECT_ATTEMPT_TIMEOUT_MS),
]

# A server must accept those keepalive pings on an idle connection: by default it allows one
# every 5 minutes without data, counts faster ones as strikes and after two sends GOAWAY
# "too_many_pings", which fails any call caught on that connection with UNAVAILABLE.
KEEPALIVE_PING_ALLOWED_MS = 5_000
assert KEEPALIVE_PING_ALLOWED_MS < dict(OPTIONS)["grpc.keepalive_time_ms"]
SERVER_OPTIONS = [
    *OPTIONS,
    ("grpc.http2.min_ping_interval_without_data_ms", KEEPALIVE_PING_ALLOWED_MS),
]

# Status codes that mean "the peer did not answer"; the request may or may not have
# been processed (for a commit that makes the outcome unknown).
UNREACHABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})

# This process's place in the cluster's partitions; None outside a node process.
_identity: netfault.PartitionState | None = None
# The wait before each call to another AZ (set_identity reads it from CROSS_AZ_DELAY_ENV).
CROSS_AZ_DELAY_ENV = "QUORUMDB_CROSS_AZ_DELAY_MS"
_cross_az_wait_s: float = 0.0
# The rules file's stat when the identity last read it (the watcher re-reads on change).
_identity_signature: tuple[int, int, int] | None = None
# Per-method latency histograms of the unary calls this node serves (quorumdb/metrics.py):
# set by tools.node when the cluster has metrics on; None: nothing is timed.
_server_histograms = None
# This process's region of a Global Database and the WAN rules it obeys (quorumdb/wan.py);
# None outside a node process, and for a cluster without regions.
_region_identity: wan.WanState | None = None
# The WAN rules file's stat when the region identity last read it.
_region_signature: tuple[int, int, int] | None = None


def unary_rpc() -> bool:
    """QUORUMDB_UNARY_RPC=1: commits and journal appends as unary calls, not streams (limits.py)."""
    return os.environ.get(limits.UNARY_RPC_ENV, "") == "1"


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency, but stay runnable without it
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# --- identity and the rules watcher ------------------------------------------------------------
def cross_az_delay_ms(environ: Mapping[str, str] = os.environ) -> int:
    """The configured one-way cross-AZ delay in ms (0 when unset); ValueError when out of range."""
    text = environ.get(CROSS_AZ_DELAY_ENV, "").strip() or "0"
    try:
        delay_ms = int(text)
    except ValueError:
        raise ValueError(f"{CROSS_AZ_DELAY_ENV}={text!r}: not a whole number of milliseconds") from None
    if not 0 <= delay_ms <= limits.CROSS_AZ_DELAY_MS_MAX:
        raise ValueError(f"{CROSS_AZ_DELAY_ENV}={delay_ms}: must be 0..{limits.CROSS_AZ_DELAY_MS_MAX}")
    return delay_ms


def set_identity(cluster: ClusterConfig, name: str) -> netfault.PartitionState:
    """Say which node this process is; reads the current rules (blocking: call before serving).

    Also reads the simulated cross-AZ delay from the environment (see the module docstring).
    """
    global _identity, _identity_signature, _cross_az_wait_s
    delay_ms = cross_az_delay_ms()
    _cross_az_wait_s = 2 * delay_ms / 1000
    if delay_ms:
        log.info("simulated cross-AZ latency: %d ms each way (%s)", delay_ms, CROSS_AZ_DELAY_ENV)
    path = netfault.rules_path(cluster)
    _identity_signature = netfault.stat_signature(path)  # taken before the read: no missed change
    state = netfault.PartitionState(cluster, name)
    try:
        state.apply(netfault.read_rules_file(path))
    except netfault.RulesError as error:
        log.warning("ignoring the network rules in %s: %s", path, error)
    if state.cut_peers:
        log.info("network rules v%d: cut from %s", state.rules.version, ", ".join(sorted(state.cut_peers)))
    _identity = state
    set_tls_identity(cluster, name)
    return state


def set_server_histograms(histograms) -> None:
    """Time every unary call the node's servers made after this serve: `histograms.child(service,
    method)` gives an object with `observe(seconds)` (a quorumdb.metrics.HistogramSet); None: stop."""
    global _server_histograms
    _server_histograms = histograms


def clear_identity() -> None:
    global _identity, _identity_signature, _cross_az_wait_s
    _identity, _identity_signature, _cross_az_wait_s = None, None, 0.0
    clear_tls_identity()


def identity() -> netfault.PartitionState | None:
    return _identity


async def watch_rules(stop: asyncio.Event, state: netfault.PartitionState | None = None,
                      signature: Any = ..., wan_state: wan.WanState | None = None) -> None:
    """Keep `state` (default: this process's identity) in step with the rules file until `stop`.

    With `wan_state` (a node of a region: tools.node passes its region identity), the same
    wake-up also polls the WAN rules (`watch_wan`): one timer per node instead of two, which is
    most of what following the files costs an idle node.
    """
    state = state if state is not None else _identity
    assert state is not None, "watch_rules needs an identity (set_identity first)"
    if signature is ...:
        signature = _identity_signature if state is _identity else None
    wan_signature = _region_signature if wan_state is not None and wan_state is _region_identity else None
    path = netfault.rules_path(state.cluster)
    interval_s = limits.NETFAULT_POLL_MS / 1000
    while not stop.is_set():
        await aio.wait_event(stop, interval_s)
        if wan_state is not None:
            wan_signature = await _poll_wan(wan_state, wan_signature)
        try:
            current = netfault.stat_signature(path)
        except OSError as error:
            log.warning("cannot stat the network rules %s: %s", path, error)
            continue
        if current == signature:
            continue
        signature = current
        try:
            rules = await asyncio.to_thread(netfault.read_rules_file, path)
        except (netfault.RulesError, OSError) as error:
            log.warning("ignoring the network rules in %s: %s", path, error)
            continue
        if state.apply(rules):
            peers = ", ".join(sorted(state.cut_peers)) or "nobody"
            log.info("network rules v%d: %s is cut from %s", rules.version, state.name, peers)


def set_region_identity(global_cfg, region: str) -> wan.WanState:
    """Say which region of a Global Database this node process is in (`global_cfg`: its
    regions.GlobalConfig); reads the current WAN rules (blocking: call before serving).

    From then on `region_channel` (and `Channels.get_remote`) gives channels that cross the WAN.
    """
    global _region_identity, _region_signature
    path = wan.rules_path(global_cfg)
    _region_signature = wan.stat_signature(path)  # taken before the read: no missed change
    state = wan.WanState(global_cfg, region)
    try:
        state.apply(wan.read_rules_file(path, global_cfg))
    except wan.RulesError as error:
        log.warning("ignoring the WAN rules: %s", error)
    rules = state.rules
    log.info("region %s: WAN %.1f ms + %.1f ms jitter, loss %.3f, partitioned: %s", region, rules.delay_ms,
             rules.jitter_ms, rules.loss, ", ".join(sorted(rules.partitioned)) or "none")
    _region_identity = state
    return state


def region_identity() -> wan.WanState | None:
    return _region_identity


def clear_region_identity() -> None:
    global _region_identity, _region_signature
    _region_identity, _region_signature = None, None


async def watch_wan(stop: asyncio.Event, state: wan.WanState | None = None, signature: Any = ...) -> None:
    """Keep `state` (default: this process's region identity) in step with the WAN rules until `stop`.

    The stat is made on the loop's thread, not in a worker thread as for the partition rules: a
    stat of a local file takes microseconds, and a thread hop every poll of every node of every
    region is most of an idle Global Database's CPU. Only a changed file is read in a thread.
    """
    state = state if state is not None else _region_identity
    assert state is not None, "watch_wan needs a region identity (set_region_identity first)"
    if signature is ...:
        signature = _region_signature if state is _region_identity else None
    interval_s = limits.NETFAULT_POLL_MS / 1000
    while not stop.is_set():
        await aio.wait_event(stop, interval_s)
        signature = await _poll_wan(state, signature)


async def _poll_wan(state: wan.WanState, signature: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
    """One look at the WAN rules file: re-read and applied if its stat changed; the stat now."""
    path = wan.rules_path(state.global_cfg)
    try:
        current = wan.stat_signature(path)
    except OSError as error:
        log.warning("cannot stat the WAN rules %s: %s", path, error)
        return signature
    if current == signature:
        return signature
    try:
        rules = await asyncio.to_thread(wan.read_rules_file, path, state.global_cfg)
    except (wan.RulesError, OSError) as error:
        log.warning("ignoring the WAN rules: %s", error)
        return current
    if state.apply(rules):
        log.info("WAN rules v%d: %.1f ms + %.1f ms jitter, loss %.3f, partitioned: %s", rules.version,
                 rules.delay_ms, rules.jitter_ms, rules.loss, ", ".join(sorted(rules.partitioned)) or "none")
    return current


# --- TLS and authorization -----------------------------------------------------------------------
INSECURE_WARNING = ("INSECURE: plaintext gRPC, no authentication (quorumdb up --insecure); "
                    "never use this outside development")
INSECURE_WARNING_INTERVAL_S = 60.0
AUTHORIZATION_KEY = "authorization"
# The user a gRPC token is checked for: the tools and clients mint tokens for it unless the call
# names another one in this metadata key (a token is bound to one user: tokens.py).
TOKEN_USER_KEY = "x-quorumdb-user"
TOKEN_USER = "admin"
# The supervisor has no node certificate: it serves with the tools' (quorumdb-admin) pair, whose
# names (localhost, 127.0.0.1) are where it listens; it is part of `quorumdb up`, which owns the
# data directory and with it that key anyway.
SUPERVISOR_CERT = certs.ADMIN
# Verified tokens kept (token -> expiry): beyond this the cache starts over.
TOKEN_CACHE_MAX = 10_000


class TokenCheck:
    """Token callers' verification: a token once verified is accepted until its expiry (a dict
    lookup and a comparison per call); `secret` is read lazily by `load_secret` (None: none yet)."""

    def __init__(self, load_secret) -> None:
        self._load_secret = load_secret
        self._secret: bytes | None = None
        self._verified: dict[tuple[str, str], int] = {}

    def check(self, token: str | None, user: str, now_s: float) -> str | None:
        """None when the token is valid now, else the refusal's text."""
        if not token:
            return "no token: send `authorization: Bearer <token>` (quorumdb token --user admin)"
        key = (user, token)
        expiry_s = self._verified.get(key)
        if expiry_s is not None:
            if expiry_s > now_s:
                return None
            del self._verified[key]
            return "token expired"
        if self._secret is None:
            self._secret = self._load_secret()
            if self._secret is None:
                return "invalid token (this cluster has no token secret yet)"
        verdict = tokens.verify(self._secret, user, token, now_s)
        if not verdict.ok:
            return "token expired" if verdict.reason.startswith("token expired") else f"invalid token: {verdict.reason}"
        if len(self._verified) >= TOKEN_CACHE_MAX:
            self._verified.clear()
        self._verified[key] = verdict.expiry_s
        return None


def bearer_token(metadata) -> tuple[str | None, str]:
    """(token, user) from a call's metadata: `authorization: Bearer <token>` and the optional user."""
    token, user = None, TOKEN_USER
    for key, value in metadata or ():
        if key == AUTHORIZATION_KEY:
            if isinstance(value, bytes):
                value = value.decode("latin-1")
            scheme, _, rest = value.partition(" ")
            if scheme.lower() == "bearer":
                token = rest.strip()
        elif key == TOKEN_USER_KEY:
            user = value.decode("latin-1") if isinstance(value, bytes) else value
    return token, user


def common_name(auth_context: Mapping[str, Any] | None) -> str | None:
    """The verified peer certificate's CN from a call's auth context, or None."""
    values = (auth_context or {}).get("x509_common_name")
    if not values:
        return None
    value = values[0]
    return value.decode() if isinstance(value, bytes) else value


def cert_role(cn: str | None, services: Mapping[str, str]) -> str | None:
    """The role of a certificate CN: "<region>/<node>" and "<node>" alike (the regions of a
    Global Database share a CA and have the same node layout)."""
    if cn is None:
        return None
    if "/" in cn:
        cn = cn.rpartition("/")[2]
    return authz.role_of(cn, services)


class Authorizer:
    """Who may call a node's methods (see the module docstring); one per server.

    `services`: node name -> service of the cluster; `token_check`: the TokenCheck of the token
    services (None: this server accepts no tokens, as on a node port with mutual TLS)."""

    def __init__(self, services: Mapping[str, str], token_check: TokenCheck | None, clock=time.time) -> None:
        self.services = dict(services)
        self.token_check = token_check
        self.clock = clock
        self._roles: dict[str, str | None] = {}

    def for_method(self, full_method: str) -> "MethodAuth":
        service = full_method.lstrip("/").partition("/")[0]
        return MethodAuth(self, full_method, service in authz.TOKEN_SERVICES)

    def role_of_cn(self, cn: str | None) -> str | None:
        if cn is None:
            return None
        try:
            return self._roles[cn]
        except KeyError:
            role = self._roles[cn] = cert_role(cn, self.services)
            return role


class MethodAuth:
    """The authorization of one method of one server, made once when its handler is wrapped."""

    __slots__ = ("authorizer", "method", "by_token", "roles")

    def __init__(self, authorizer: Authorizer, method: str, by_token: bool) -> None:
        self.authorizer = authorizer
        self.method = method
        self.by_token = by_token
        self.roles = frozenset(role for role, calls in authz.CALLS.items() if method in calls)

    def decide(self, auth_context, metadata, now_s: float) -> tuple[grpc.StatusCode, str] | None:
        """None: the call may go on; else the status and text to refuse it with (pure)."""
        if self.by_token:
            # A client certificate is not verified on these ports (no client authentication
            # required): only the token counts.
            check = self.authorizer.token_check
            if check is None:
                return grpc.StatusCode.UNAUTHENTICATED, authz.denial(None, self.method)
            token, user = bearer_token(metadata)
            problem = check.check(token, user, now_s)
            if problem is not None:
                return grpc.StatusCode.UNAUTHENTICATED, f"{self.method}: {problem}"
            role = authz.CLIENT
        else:
            role = self.authorizer.role_of_cn(common_name(auth_context))
            if role is None:
                return grpc.StatusCode.UNAUTHENTICATED, authz.denial(None, self.method)
        if role in self.roles:
            return None
        return grpc.StatusCode.PERMISSION_DENIED, authz.denial(role, self.method)

    def check(self, context) -> tuple[grpc.StatusCode, str] | None:
        """`decide` for a call's server context (reads only what its kind of port needs)."""
        if self.by_token:
            return self.decide(None, context.invocation_metadata(), self.authorizer.clock())
        return self.decide(context.auth_context(), None, 0.0)


class _Tls:
    """A node process's TLS material (paths: each new channel and handshake reads the current files)."""

    def __init__(self, cluster: ClusterConfig, cert_name: str, authorizer: Authorizer) -> None:
        self.cluster = cluster
        self.certs_dir = cluster.certs_path
        self.cert_name = cert_name
        self.authorizer = authorizer

    def channel_credentials(self) -> grpc.ChannelCredentials:
        key, cert = certs.read_pair(self.certs_dir, self.cert_name)
        return grpc.ssl_channel_credentials(root_certificates=certs.read_ca(self.certs_dir), private_key=key,
                                            certificate_chain=cert)


_tls: _Tls | None = None


def services_of(cluster: ClusterConfig) -> dict[str, str]:
    """Node name -> service, for the roles of callers: this cluster's nodes and, in a region of a
    Global Database or an active-active cluster, every region's (a witness region has journal
    replicas only, and the adjudicators that append to them are other regions' nodes)."""
    services = {node.name: node.service for node in cluster.nodes}
    if cluster.global_file:
        from quorumdb import regions

        try:
            for region in regions.load(cluster.global_file).regions:
                for node in region.cluster().nodes:
                    services.setdefault(node.name, node.service)
        except (OSError, ValueError) as error:
            log.warning("cannot read the other regions' cluster files (%s): only this region's roles are known",
                        error)
    return services


def authorizer_for(cluster: ClusterConfig) -> Authorizer:
    """The authorizer of a cluster's servers: its node roles, and its token secret (read when the
    first token arrives: a compute node may create it as it starts)."""
    secret_dir = tokens.secret_dir(cluster.data_dir)
    return Authorizer(services_of(cluster), TokenCheck(lambda: tokens.load_secret(secret_dir)))


def set_tls_identity(cluster: ClusterConfig, name: str) -> None:
    """Load this node's TLS identity (raises certs.CertError when its files are missing); nothing
    for an insecure cluster."""
    global _tls
    if cluster.insecure:
        _tls = None
        log.warning(INSECURE_WARNING)
        return
    tls = _Tls(cluster, cluster.cert_name(name), authorizer_for(cluster))
    certs.read_ca(tls.certs_dir)
    certs.read_pair(tls.certs_dir, tls.cert_name)  # fail now, not at the first handshake
    _tls = tls


def clear_tls_identity() -> None:
    global _tls
    _tls = None


def tls_identity() -> _Tls | None:
    return _tls


def server_credentials(cluster: ClusterConfig, cert_name: str, require_client_auth: bool) -> grpc.ServerCredentials:
    """Dynamic TLS server credentials with `cert_name`'s pair, reloaded when its certificate file
    changes (one stat per handshake; gRPC calls the fetcher for each new connection)."""
    certs_dir = cluster.certs_path
    cert_path, _ = certs.pair_paths(certs_dir, cert_name)

    def signature() -> tuple[int, int, int] | None:
        try:
            stat = os.stat(cert_path)
        except OSError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def configuration():
        key, cert = certs.read_pair(certs_dir, cert_name)
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=certs.read_ca(certs_dir))

    loaded = [signature()]
    initial = configuration()

    def fetch():
        current = signature()
        if current is None or current == loaded[0]:
            return None  # keep serving with the pair loaded
        try:
            fresh = configuration()
        except Exception as error:  # a half-written pair: keep the old one, try at the next handshake
            log.warning("cannot reload the certificate %s: %s", cert_path, error)
            return None
        loaded[0] = current
        log.info("serving with the new certificate %s", cert_path)
        return fresh

    return grpc.dynamic_ssl_server_credentials(initial, fetch, require_client_authentication=require_client_auth)


def add_node_port(server, cluster: ClusterConfig, node) -> int:
    """Listen on the node's address: plaintext for an insecure cluster; else TLS with the node's
    certificate, with client certificates required except on compute nodes (token callers).

    TLS goes with the process's TLS identity (`set_identity`, which every node process takes in
    tools/node.py): a role run in-process without one (the unit tests' harnesses, the
    simulation) serves plaintext, as its channels and unwrapped handlers are."""
    address = cluster.listen_address(node)
    if cluster.insecure or _tls is None or runtime.simulated():
        return server.add_insecure_port(address)
    require = node.service != "compute"
    return server.add_secure_port(address, server_credentials(cluster, cluster.cert_name(node.name), require))


def admin_credentials(cluster: ClusterConfig, user: str = TOKEN_USER, lifetime_s: int = 3_600,
                      now_s: float | None = None) -> ClientCredentials:
    """The tools' credentials from a cluster's data directory (credentials.for_cluster): the CA,
    the admin certificate, and a token minted from the cluster's secret; INSECURE for an insecure
    cluster."""
    return credentials_mod.for_cluster(cluster, user, lifetime_s, now_s)


# Tools that start clusters (the launcher: `quorumdb up`, the tests) remember them here, so that
# their own channels to those nodes (`Channels()`, the launcher's Status polls) use the cluster's
# admin credentials without passing them everywhere: address -> cluster.
_known_clusters: dict[str, ClusterConfig] = {}
# (certs dir, data dir) -> (credentials, when minted): a token is minted for an hour and renewed
# after half of it, so a long-running `quorumdb up` never presents an expired one.
_admin_cache: dict[tuple[str, str], tuple[ClientCredentials, float]] = {}
# address -> data dir of an --insecure cluster this process started.
_known_insecure: dict[str, object] = {}
ADMIN_TOKEN_LIFETIME_S = 3_600


def remember_cluster(cluster: ClusterConfig) -> None:
    """Use `cluster`'s admin credentials by default for channels this process opens to its nodes
    (an --insecure cluster's addresses are remembered as plaintext ones: `known_insecure`)."""
    for node in cluster.nodes:
        if cluster.insecure:
            _known_clusters.pop(node.address, None)
            _known_insecure[node.address] = cluster.data_dir
        else:
            _known_clusters[node.address] = cluster
            _known_insecure.pop(node.address, None)


def forget_cluster(cluster: ClusterConfig) -> None:
    """Stop using `cluster`'s credentials for its addresses (its nodes stopped: another cluster,
    perhaps a plaintext one, may listen there next)."""
    for node in cluster.nodes:
        known = _known_clusters.get(node.address)
        if known is not None and known.data_dir == cluster.data_dir:
            del _known_clusters[node.address]
        if _known_insecure.get(node.address) == cluster.data_dir:
            del _known_insecure[node.address]


def known_insecure(address: str) -> bool:
    """Whether `address` is a node of an --insecure cluster this process started."""
    return address in _known_insecure


def known_credentials(address: str) -> ClientCredentials | None:
    """The admin credentials of the remembered cluster that has a node at `address` (None: unknown)."""
    cluster = _known_clusters.get(address)
    return None if cluster is None else cached_admin_credentials(cluster)


def cached_admin_credentials(cluster: ClusterConfig) -> ClientCredentials:
    """admin_credentials, minted again once half the token's lifetime has passed."""
    key = (str(cluster.certs_path), str(cluster.data_dir))
    now_s = time.time()
    cached = _admin_cache.get(key)
    if cached is not None and now_s - cached[1] < ADMIN_TOKEN_LIFETIME_S / 2:
        return cached[0]
    credentials = admin_credentials(cluster, lifetime_s=ADMIN_TOKEN_LIFETIME_S, now_s=now_s)
    _admin_cache[key] = (credentials, now_s)
    return credentials


def node_credentials(cluster: ClusterConfig, name: str, now_s: float | None = None) -> ClientCredentials:
    """Credentials presenting node `name`'s own certificate (and a token when the cluster has a
    secret: a compute node's port wants one), as a container's health check calls its own node;
    INSECURE for an insecure cluster."""
    if cluster.insecure:
        return ClientCredentials()
    key, cert = certs.read_pair(cluster.certs_path, cluster.cert_name(name))
    secret = tokens.load_secret(tokens.secret_dir(cluster.data_dir))
    token = None
    if secret is not None:
        token, _ = tokens.issue(secret, TOKEN_USER, 300, time.time() if now_s is None else now_s)
    return ClientCredentials(ca_pem=certs.read_ca(cluster.certs_path), token=token, key_pem=key, cert_pem=cert)


def channel_credentials(credentials: ClientCredentials | None) -> grpc.ChannelCredentials | None:
    """gRPC channel credentials for `credentials` (None: plaintext): TLS verifying the cluster CA,
    with the client certificate if any, and the token on every call if any."""
    if credentials is None or credentials.ca_pem is None:
        return None
    ssl = grpc.ssl_channel_credentials(root_certificates=credentials.ca_pem, private_key=credentials.key_pem,
                                       certificate_chain=credentials.cert_pem)
    if credentials.token:
        return grpc.composite_channel_credentials(ssl, grpc.access_token_call_credentials(credentials.token))
    return ssl


def _client_options(server_name: str | None) -> list:
    return OPTIONS if not server_name else [*OPTIONS, ("grpc.ssl_target_name_override", server_name)]


def sync_client_channel(address: str, credentials: ClientCredentials | None = None,
                        server_name: str | None = None) -> grpc.Channel:
    """`client_channel` for synchronous code (the launcher, the supervisor's callers, tools)."""
    secure = channel_credentials(credentials)
    if secure is None:
        return grpc.insecure_channel(address, options=OPTIONS)
    return grpc.secure_channel(address, secure, options=_client_options(server_name))


async def insecure_announcer(stop: asyncio.Event, interval_s: float = INSECURE_WARNING_INTERVAL_S) -> None:
    """Repeat the INSECURE warning every `interval_s` until `stop` (a node of an insecure cluster)."""
    while not stop.is_set():
        await aio.wait_event(stop, interval_s)
        if not stop.is_set():
            log.warning(INSECURE_WARNING)


# --- client side ---------------------------------------------------------------------------------
def partition_error(own: str, peer: str) -> grpc.aio.AioRpcError:
    return unavailable_error(netfault.partition_message(own, peer))


def unavailable_error(details: str) -> grpc.aio.AioRpcError:
    return status_error(grpc.StatusCode.UNAVAILABLE, details)


def status_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    """A failed call's error as grpc.aio raises it, made here (a refused or WAN-dropped call)."""
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def _peer_at(state: netfault.PartitionState | None, address: str) -> str | None:
    """The other cluster node listening at `address`, or None (tools, foreign addresses, itself)."""
    if state is None:
        return None
    target = state.node_by_address.get(address)
    return None if target is None or target == state.name else target


class _Link:
    """One channel's link (own node -> target node): checked before every call, named in its metadata."""

    def __init__(self, state: netfault.PartitionState, target: str) -> None:
        self.state = state
        self.target = target
        self.metadata_item = (netfault.NODE_METADATA_KEY, state.name)
        # Shared by every call that brings no metadata of its own: grpc copies it into a tuple
        # per call and never changes it, so the common case builds nothing.
        self.node_metadata = grpc.aio.Metadata(self.metadata_item)

    def tagged(self, metadata) -> grpc.aio.Metadata:
        return grpc.aio.Metadata(*metadata, self.metadata_item) if metadata else self.node_metadata


class _RefusedCall:
    """What a call on a cut link returns instead of sending anything: a call that already failed.

    Awaiting, reading and iterating raise the partition error (UNAVAILABLE), as on an RPC that
    failed; cancel() is a no-op. Writing raises it too, where grpc would raise InvalidStateError
    for a finished call: the writers (journal/writer.py, compute_node/cluster/commit_stream.py) handle
    both, and this one says why. It is returned rather than raised from `stub.X(...)` because
    callers create a call first and handle its errors where they use it (journal/follower.py,
    storage_node/main.py's checkpoint fetch and gathered reports).
    """

    def __init__(self, details: str) -> None:
        self._details = details  # why it was refused: a network or a region partition

    def _error(self) -> grpc.aio.AioRpcError:
        return unavailable_error(self._details)  # a fresh one each time: no shared traceback

    def __await__(self):
        raise self._error()
        yield  # never reached: the yield makes this a generator, as __await__ must return an iterator

    def __aiter__(self):
        return self._responses()

    async def _responses(self):
        raise self._error()
        yield  # never reached: the yield makes this an async generator

    async def read(self):
        raise self._error()

    async def write(self, request) -> None:
        raise self._error()

    async def done_writing(self) -> None:
        return None  # like a finished call: nothing left to close

    async def wait_for_connection(self) -> None:
        raise self._error()

    def cancel(self) -> bool:
        return False

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return True

    def time_remaining(self) -> float | None:
        return None

    def add_done_callback(self, callback) -> None:
        callback(self)  # already done

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata()

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata()

    async def code(self) -> grpc.StatusCode:
        return grpc.StatusCode.UNAVAILABLE

    async def details(self) -> str:
        return self._details

    async def debug_error_string(self) -> str:
        return ""


class _RefusedUnaryUnaryCall(_RefusedCall, grpc.aio.UnaryUnaryCall):
    pass


class _RefusedUnaryStreamCall(_RefusedCall, grpc.aio.UnaryStreamCall):
    pass


class _RefusedStreamUnaryCall(_RefusedCall, grpc.aio.StreamUnaryCall):
    pass


class _RefusedStreamStreamCall(_RefusedCall, grpc.aio.StreamStreamCall):
    pass


class _GuardedRequest:
    """A multicallable of a node channel taking one request: link check, node metadata, grpc's call."""

    _refused = _RefusedCall

    def __init__(self, multicallable, link: _Link) -> None:
        self._multicallable = multicallable
        self._link = link

    def __call__(self, request, *, timeout=None, metadata=None, credentials=None, wait_for_ready=None,
                 compression=None):
        link = self._link
        if link.target in link.state.cut_peers:
            return self._refused(netfault.partition_message(link.state.name, link.target))
        return self._multicallable(request, timeout=timeout, metadata=link.tagged(metadata), credentials=credentials,
                                   wait_for_ready=wait_for_ready, compression=compression)


class _GuardedRequestStream:
    """A multicallable of a node channel taking a request stream (same signature as grpc's)."""

    _refused = _RefusedCall

    def __init__(self, multicallable, link: _Link) -> None:
        self._multicallable = multicallable
        self._link = link

    def __call__(self, request_iterator=None, timeout=None, metadata=None, credentials=None, wait_for_ready=None,
                 compression=None):
        link = self._link
        if link.target in link.state.cut_peers:
            return self._refused(netfault.partition_message(link.state.name, link.target))
        return self._multicallable(request_iterator, timeout=timeout, metadata=link.tagged(metadata),
                                   credentials=credentials, wait_for_ready=wait_for_ready, compression=compression)


class _GuardedUnaryUnary(_GuardedRequest, grpc.aio.UnaryUnaryMultiCallable):
    _refused = _RefusedUnaryUnaryCall


class _GuardedUnaryStream(_GuardedRequest, grpc.aio.UnaryStreamMultiCallable):
    _refused = _RefusedUnaryStreamCall


class _GuardedStreamUnary(_GuardedRequestStream, grpc.aio.StreamUnaryMultiCallable):
    _refused = _RefusedStreamUnaryCall


class _GuardedStreamStream(_GuardedRequestStream, grpc.aio.StreamStreamMultiCallable):
    _refused = _RefusedStreamStreamCall


class _WrappedChannel(grpc.aio.Channel):
    """An aio channel that hands everything but its multicallables to the channel it wraps."""

    _channel: grpc.aio.Channel

    async def __aexit__(self, exc_type, exc_val, exc_tb) -> None:
        await self._channel.__aexit__(exc_type, exc_val, exc_tb)

    async def close(self, grace: float | None = None) -> None:
        await self._channel.close(grace)

    def get_state(self, try_to_connect: bool = False) -> grpc.ChannelConnectivity:
        return self._channel.get_state(try_to_connect)

    async def wait_for_state_change(self, last_observed_state: grpc.ChannelConnectivity) -> None:
        await self._channel.wait_for_state_change(last_observed_state)

    async def channel_ready(self) -> None:
        await self._channel.channel_ready()


class _PartitionedChannel(_WrappedChannel):
    """A plain aio channel to another node whose multicallables obey the partition rules.

    The generated stubs create their multicallables once, so the wrapping is paid once per
    stub method; a call pays a set test and one extra Python call.
    """

    def __init__(self, channel: grpc.aio.Channel, link: _Link) -> None:
        self._channel = channel
        self._link = link

    async def __aenter__(self) -> _PartitionedChannel:
        return self


    def unary_unary(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return _GuardedUnaryUnary(self._channel.unary_unary(
            method, request_serializer, response_deserializer, _registered_method), self._link)

    def unary_stream(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return _GuardedUnaryStream(self._channel.unary_stream(
            method, request_serializer, response_deserializer, _registered_method), self._link)

    def stream_unary(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return _GuardedStreamUnary(self._channel.stream_unary(
            method, request_serializer, response_deserializer, _registered_method), self._link)

    def stream_stream(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return _GuardedStreamStream(self._channel.stream_stream(
            method, request_serializer, response_deserializer, _registered_method), self._link)


class _LinkGuard:
    """The shared part of the four client interceptors of one delayed channel (own node -> target node)."""

    def __init__(self, state: netfault.PartitionState, target: str, wait_s: float = 0.0) -> None:
        self.state = state
        self.target = target
        self.metadata_item = (netfault.NODE_METADATA_KEY, state.name)
        self.wait_s = wait_s  # simulated cross-AZ round trip, 0 within an AZ

    async def prepare(self, call_details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        """The call's details, tagged; raises at once on a cut link, waits out the simulated distance."""
        tagged = self.details(call_details)
        if self.wait_s:
            await asyncio.sleep(self.wait_s)
            if self.target in self.state.cut_peers:  # cut while this call waited
                raise partition_error(self.state.name, self.target)
        return tagged

    def details(self, call_details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        if self.target in self.state.cut_peers:
            raise partition_error(self.state.name, self.target)
        metadata = call_details.metadata
        tagged = grpc.aio.Metadata(*metadata, self.metadata_item) if metadata else grpc.aio.Metadata(self.metadata_item)
        return call_details._replace(metadata=tagged)


class _GuardInterceptor:
    """A client interceptor that checks the link (`_LinkGuard.prepare`) before grpc's call; the
    four call kinds differ only in the name grpc calls it by."""

    def __init__(self, guard: _LinkGuard) -> None:
        self.guard = guard

    async def _intercept(self, continuation, client_call_details, request_or_iterator):
        return await continuation(await self.guard.prepare(client_call_details), request_or_iterator)


class _UnaryUnaryGuard(_GuardInterceptor, grpc.aio.UnaryUnaryClientInterceptor):
    intercept_unary_unary = _GuardInterceptor._intercept


class _UnaryStreamGuard(_GuardInterceptor, grpc.aio.UnaryStreamClientInterceptor):
    intercept_unary_stream = _GuardInterceptor._intercept


class _StreamUnaryGuard(_GuardInterceptor, grpc.aio.StreamUnaryClientInterceptor):
    intercept_stream_unary = _GuardInterceptor._intercept


class _StreamStreamGuard(_GuardInterceptor, grpc.aio.StreamStreamClientInterceptor):
    intercept_stream_stream = _GuardInterceptor._intercept


def cross_az_wait_s(target: str, state: netfault.PartitionState | None = None) -> float:
    """The simulated round trip to node `target` (0 within an AZ, for tools, or when not set).

    `state`: whose distance (default this process's identity). The interceptors wait it once
    per call, so once per stream; the commit and append streams (compute_node/cluster/commit_stream.py,
    journal/writer.py) also wait it before each message they send.
    """
    state = state if state is not None else _identity
    if not _cross_az_wait_s or state is None or target == state.name:
        return 0.0
    try:
        same_az = state.cluster.node(target).az == state.cluster.node(state.name).az
    except KeyError:
        return 0.0
    return 0.0 if same_az else _cross_az_wait_s


def client_interceptors(state: netfault.PartitionState | None, address: str) -> list[grpc.aio.ClientInterceptor]:
    """The partition interceptors for a channel to `address` (none for tools or non-cluster addresses).

    `Channels` uses them only for a channel with a simulated cross-AZ delay; every other node
    channel is a `_PartitionedChannel`, which does the same checks without interceptors.
    """
    target = _peer_at(state, address)
    if target is None:
        return []
    guard = _LinkGuard(state, target, cross_az_wait_s(target, state))
    return [_UnaryUnaryGuard(guard), _UnaryStreamGuard(guard), _StreamUnaryGuard(guard), _StreamStreamGuard(guard)]


def node_channel(state: netfault.PartitionState | None, address: str,
                 credentials: ClientCredentials | None = None) -> grpc.aio.Channel:
    """A new channel to `address` that obeys `state`'s partitions (a plain one for tools and foreign addresses).

    A node of a secure cluster (TLS identity) calls its peers with mutual TLS; a tool's channel is
    TLS when `credentials` has a CA.

    Inside the deterministic simulation the current runtime gives its own channel instead."""
    simulated = runtime.current().channel(address)
    if simulated is not None:
        return simulated
    target = _peer_at(state, address)
    if target is None:
        return _aio_channel(address, credentials if credentials is not None else known_credentials(address))
    tls = _tls if _tls is not None and state is _identity else None
    if cross_az_wait_s(target, state):
        return _node_aio_channel(address, tls, target, interceptors=client_interceptors(state, address))
    return _PartitionedChannel(_node_aio_channel(address, tls, target), _Link(state, target))


def _aio_channel(address: str, credentials: ClientCredentials | None, server_name: str | None = None,
                 interceptors=None) -> grpc.aio.Channel:
    """A plain aio channel, or a TLS one with `credentials` (a tool's or client's)."""
    secure = channel_credentials(credentials)
    if secure is None:
        return grpc.aio.insecure_channel(address, options=OPTIONS, interceptors=interceptors)
    return grpc.aio.secure_channel(address, secure, options=_client_options(server_name), interceptors=interceptors)


def _node_aio_channel(address: str, tls: _Tls | None, peer_cert_name: str, interceptors=None) -> grpc.aio.Channel:
    """A node's channel to another node: mutual TLS with this node's current certificate, the peer
    verified as `peer_cert_name` (its certificate's DNS name), or plaintext without TLS identity."""
    if tls is None:
        return grpc.aio.insecure_channel(address, options=OPTIONS, interceptors=interceptors)
    return grpc.aio.secure_channel(address, tls.channel_credentials(), options=_client_options(peer_cert_name),
                                   interceptors=interceptors)


def _region_cert_name(state: wan.WanState | None, peer_region: str, address: str) -> str:
    """The certificate name of the node of `peer_region` at `address` ("<region>/<node>"), or
    "localhost" (every node certificate names it) when that region's file does not say."""
    if state is None:
        return "localhost"
    key = (peer_region, address)
    name = _region_cert_names.get(key)
    if name is None:
        try:
            region_cluster = state.global_cfg.region(peer_region).cluster()
            node = next(n for n in region_cluster.nodes if n.address == address)
            name = region_cluster.cert_name(node.name)
        except (KeyError, OSError, StopIteration, ValueError):
            name = "localhost"
        _region_cert_names[key] = name
    return name


_region_cert_names: dict[tuple[str, str], str] = {}


def region_channel(address: str, peer_region: str, state: wan.WanState | None = None,
                   credentials: ClientCredentials | None = None) -> grpc.aio.Channel:
    """A node's channel to a node of region `peer_region`, obeying the WAN rules (quorumdb/wan.py).

    `state`: whose WAN (default this process's region identity). A process without one (tools,
    clients) and a channel within its own region get a plain channel: only node-to-node traffic
    between regions crosses the simulated WAN. Inside the deterministic simulation the current
    runtime gives its own channel instead.
    """
    simulated = runtime.current().channel(address)
    if simulated is not None:
        return simulated
    state = state if state is not None else _region_identity
    if _tls is None:
        channel = _aio_channel(address, credentials if credentials is not None else known_credentials(address))
    else:
        channel = _node_aio_channel(address, _tls, _region_cert_name(state, peer_region, address))
    if state is None or peer_region == state.region:
        return channel
    state.global_cfg.region(peer_region)  # KeyError for a region that is not in the Global Database
    return _WanChannel(channel, state, peer_region)


# --- the WAN between regions ------------------------------------------------------------------------
# How a call crosses it (rules in quorumdb/wan.py; the module docstring says why no interceptors):
#
# * a unary call (`_WanUnaryUnaryCall`) is one task: wait a one-way delay, maybe lose the request,
#   send it with the remaining deadline, wait a one-way delay for the reply (or its error status),
#   maybe lose the reply;
# * a stream (`_WanStreamCall`) has a delay line per direction (`_DelayLine`): a pump task reads
#   the replies as they arrive and queues each with its delivery time, the caller's read() waits
#   for it; a caller's write() queues the request with its delivery time (it blocks only while
#   the line is full) and a sender task writes it to the real call when due. A partition (the
#   state's cut signal) or the deadline ends it at once, whatever it waits on.
#
# While the rules delay nothing and lose nothing, a unary call goes straight to grpc's
# multicallable (one attribute test), and a stream gets `_CuttableCall`: grpc's own call, which a
# partition cancels; rules changed later apply to the streams opened after them.
_END_WRITING = object()  # a request line's item: the caller is done writing
_LOST = object()         # a request line's item: the request sent at that point was lost


class _End:
    """The last item of a reply line: the status the call ended with (OK: the caller reads EOF)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code = code
        self.details = details


class _LineClosed(Exception):
    """A delay line was closed under a waiting reader or writer: the call's status says why."""


class _DelayLine:
    """One direction of a WAN stream: items in FIFO order, each handed out at its delivery time.

    One reader; writers wait while `capacity` items are in flight (the bound on what the WAN
    holds per direction). `close()` wakes everyone: they raise _LineClosed.
    """

    def __init__(self, capacity: int) -> None:
        self._loop = asyncio.get_running_loop()
        self._items: collections.deque = collections.deque()  # (deliver_at, item), deliver_at ascending
        self._capacity = capacity
        self._reader: asyncio.Future | None = None
        self._writers: collections.deque[asyncio.Future] = collections.deque()
        self._closed = False
        self.last_delivery = 0.0  # loop time of the newest item's delivery (a stream keeps its order)

    async def put(self, deliver_at: float, item) -> None:
        while len(self._items) >= self._capacity and not self._closed:
            waiter = self._loop.create_future()
            self._writers.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._writers:
                    self._writers.remove(waiter)
        if self._closed:
            raise _LineClosed()
        self._items.append((deliver_at, item))
        if len(self._items) == 1 and self._reader is not None:
            _set_done(self._reader)  # it waited for an item: now it waits for this one's time

    async def get(self):
        while True:
            if self._closed:
                raise _LineClosed()
            handle = None
            if self._items:
                deliver_at, item = self._items[0]
                if deliver_at <= self._loop.time():
                    self._items.popleft()
                    if self._writers:
                        _set_done(self._writers.popleft())
                    return item
                self._reader = self._loop.create_future()
                handle = self._loop.call_at(deliver_at, _set_done, self._reader)
            else:
                self._reader = self._loop.create_future()
            try:
                await self._reader
            finally:
                self._reader = None
                if handle is not None:
                    handle.cancel()

    def cut(self, now: float, item) -> None:
        """The connection broke at `now`: what was still on its way is gone, `item` comes last."""
        while self._items and self._items[-1][0] > now:
            self._items.pop()
        self._items.append((now, item))
        if self._reader is not None:
            _set_done(self._reader)  # it may wait for an item that is gone

    def close(self) -> None:
        self._closed = True
        self._items.clear()
        if self._reader is not None:
            _set_done(self._reader)
        while self._writers:
            _set_done(self._writers.popleft())


def _set_done(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class _WanChannel(_WrappedChannel):
    """A plain aio channel to a node of another region whose multicallables cross the WAN."""

    def __init__(self, channel: grpc.aio.Channel, state: wan.WanState, peer_region: str) -> None:
        self._channel = channel
        self._state = state
        self._peer = peer_region

    async def __aenter__(self) -> _WanChannel:
        return self


    def unary_unary(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return _WanUnaryUnary(self._channel.unary_unary(
            method, request_serializer, response_deserializer, _registered_method), self._state, self._peer)

    def unary_stream(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return _WanUnaryStream(self._channel.unary_stream(
            method, request_serializer, response_deserializer, _registered_method), self._state, self._peer)

    def stream_unary(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return _WanStreamUnary(self._channel.stream_unary(
            method, request_serializer, response_deserializer, _registered_method), self._state, self._peer)

    def stream_stream(self, method, request_serializer=None, response_deserializer=None, _registered_method=False):
        return _WanStreamStream(self._channel.stream_stream(
            method, request_serializer, response_deserializer, _registered_method), self._state, self._peer)


class _WanMultiCallable:
    def __init__(self, multicallable, state: wan.WanState, peer_region: str) -> None:
        self._multicallable = multicallable
        self._state = state
        self._peer = peer_region

    def _refusal(self) -> str | None:
        state = self._state
        return wan.partition_message(state.region, self._peer) if state.is_cut_from(self._peer) else None


class _WanUnaryUnary(_WanMultiCallable, grpc.aio.UnaryUnaryMultiCallable):
    def __call__(self, request, *, timeout=None, metadata=None, credentials=None, wait_for_ready=None,
                 compression=None):
        refusal = self._refusal()
        if refusal is not None:
            return _RefusedUnaryUnaryCall(refusal)
        if not self._state.rules.delayed:
            return self._multicallable(request, timeout=timeout, metadata=metadata, credentials=credentials,
                                       wait_for_ready=wait_for_ready, compression=compression)
        send = functools.partial(self._multicallable, request, metadata=metadata, credentials=credentials,
                                 wait_for_ready=wait_for_ready, compression=compression)
        return _WanUnaryUnaryCall(send, self._state, self._peer, timeout)


class _WanUnaryStream(_WanMultiCallable, grpc.aio.UnaryStreamMultiCallable):
    def __call__(self, request, *, timeout=None, metadata=None, credentials=None, wait_for_ready=None,
                 compression=None):
        refusal = self._refusal()
        if refusal is not None:
            return _RefusedUnaryStreamCall(refusal)
        open_call = functools.partial(self._multicallable, request, metadata=metadata, credentials=credentials,
                                      wait_for_ready=wait_for_ready, compression=compression)
        if not self._state.rules.delayed:
            return _CuttableUnaryStreamCall(open_call(timeout=timeout), self._state, self._peer)
        return _WanUnaryStreamCall(open_call, self._state, self._peer, timeout, request_streaming=False,
                                   response_streaming=True)


class _WanRequestStream(_WanMultiCallable):
    """A multicallable whose requests stream (stream-unary, stream-stream): the two differ only in
    their call classes (`_call_kinds`) and whether replies stream."""

    _response_streaming: bool

    def _call_kinds(self) -> tuple[type, type, type]:
        """The refused, the partition-cut and the WAN-delayed call class of this kind."""
        raise NotImplementedError

    def __call__(self, request_iterator=None, timeout=None, metadata=None, credentials=None, wait_for_ready=None,
                 compression=None):
        refused, cuttable, delayed = self._call_kinds()
        refusal = self._refusal()
        if refusal is not None:
            return refused(refusal)
        if not self._state.rules.delayed:
            return cuttable(self._multicallable(
                request_iterator, timeout=timeout, metadata=metadata, credentials=credentials,
                wait_for_ready=wait_for_ready, compression=compression), self._state, self._peer)
        open_call = functools.partial(self._multicallable, None, metadata=metadata, credentials=credentials,
                                      wait_for_ready=wait_for_ready, compression=compression)
        return delayed(open_call, self._state, self._peer, timeout, request_streaming=True,
                       response_streaming=self._response_streaming, request_iterator=request_iterator)


class _WanStreamUnary(_WanRequestStream, grpc.aio.StreamUnaryMultiCallable):
    _response_streaming = False

    def _call_kinds(self) -> tuple[type, type, type]:
        return _RefusedStreamUnaryCall, _CuttableStreamUnaryCall, _WanStreamUnaryCall


class _WanStreamStream(_WanRequestStream, grpc.aio.StreamStreamMultiCallable):
    _response_streaming = True

    def _call_kinds(self) -> tuple[type, type, type]:
        return _RefusedStreamStreamCall, _CuttableStreamStreamCall, _WanStreamStreamCall


def _deadline_error() -> grpc.aio.AioRpcError:
    return status_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")


class _WanClock:
    """What both WAN call kinds keep from their start: the link (its state and peer region) and
    the call's deadline on the event loop's clock."""

    def __init__(self, state: wan.WanState, peer_region: str, timeout: float | None) -> None:
        self._loop = asyncio.get_running_loop()
        self._state = state
        self._peer = peer_region
        self._deadline = None if timeout is None else self._loop.time() + timeout

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - self._loop.time())


class _WanUnaryUnaryCall(_WanClock, grpc.aio.UnaryUnaryCall):
    """A unary call across the WAN: one task, started at once as grpc starts its own calls."""

    def __init__(self, send, state: wan.WanState, peer_region: str, timeout: float | None) -> None:
        _WanClock.__init__(self, state, peer_region, timeout)
        self._call: grpc.aio.UnaryUnaryCall | None = None
        self._task = asyncio.ensure_future(self._run(send))
        self._task.add_done_callback(_retrieve)  # a caller may drop a call it does not need

    async def _cross(self) -> None:
        """One message's trip: its delay (the deadline fails the call first), then the partition check."""
        delay_s = self._state.draw_delay_s()
        if self._deadline is not None and self._loop.time() + delay_s >= self._deadline:
            await asyncio.sleep(max(0.0, self._deadline - self._loop.time()))
            raise _deadline_error()
        await asyncio.sleep(delay_s)
        if self._state.is_cut_from(self._peer):  # partitioned while the message was on its way
            raise unavailable_error(wan.partition_message(self._state.region, self._peer))
        if self._state.draw_lost():
            raise unavailable_error(wan.LOST_MESSAGE)

    async def _run(self, send):
        await self._cross()
        remaining = None if self._deadline is None else self._deadline - self._loop.time()
        self._call = send(timeout=remaining)
        try:
            reply = await self._call
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise  # the caller's own deadline: nothing crosses back
            await self._cross()  # the error status is the reply, and crosses the WAN as one
            raise
        await self._cross()  # a lost reply: the server did run the call
        return reply

    def __await__(self):
        return self._task.__await__()

    def cancel(self) -> bool:
        if self._call is not None:
            self._call.cancel()
        return self._task.cancel()

    def cancelled(self) -> bool:
        return self._task.cancelled()

    def done(self) -> bool:
        return self._task.done()

    def add_done_callback(self, callback) -> None:
        self._task.add_done_callback(lambda _: callback(self))

    async def _finished(self) -> None:
        await asyncio.wait((self._task,))

    async def code(self) -> grpc.StatusCode:
        await self._finished()
        if self._task.cancelled():
            return grpc.StatusCode.CANCELLED
        error = self._task.exception()
        return error.code() if isinstance(error, grpc.aio.AioRpcError) else (
            grpc.StatusCode.OK if error is None else grpc.StatusCode.UNKNOWN)

    async def details(self) -> str:
        await self._finished()
        if self._task.cancelled():
            return _LOCALLY_CANCELLED
        error = self._task.exception()
        return error.details() if isinstance(error, grpc.aio.AioRpcError) else ("" if error is None else repr(error))

    async def initial_metadata(self) -> grpc.aio.Metadata:
        await self._finished()
        return await self._call.initial_metadata() if self._call is not None else grpc.aio.Metadata()

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        await self._finished()
        return await self._call.trailing_metadata() if self._call is not None else grpc.aio.Metadata()

    async def wait_for_connection(self) -> None:
        await self._finished()


class _RepliesByRead:
    """`async for` over a streaming call wrapper: its own read() until EOF (shared by the WAN's
    and the partition-cut stream calls, whose read() does the work)."""

    def __aiter__(self):
        return self._replies_iterator()

    async def _replies_iterator(self):
        while True:
            reply = await self.read()
            if reply is grpc.aio.EOF:
                return
            yield reply


class _WanStreamCall(_WanClock, _RepliesByRead):
    """A streaming call across the WAN (see the section comment); the four call kinds share it.

    Its outcome (what code(), done() and the done callbacks see) is decided once
    (`_end_arrived`): when the call's end reaches this side (its status, or a lost message that
    broke it) the reader still gets the replies delivered before it, then the status (`_finish`);
    a partition, the deadline or the caller's cancel() end it at once (`_finish`), dropping what
    is still queued, as on a broken connection.
    """

    def __init__(self, open_call, state: wan.WanState, peer_region: str, timeout: float | None, *,
                 request_streaming: bool, response_streaming: bool, request_iterator=None) -> None:
        _WanClock.__init__(self, state, peer_region, timeout)
        self._response_streaming = response_streaming
        self._replies = _DelayLine(limits.WAN_STREAM_MESSAGES_MAX)
        self._requests = _DelayLine(limits.WAN_STREAM_MESSAGES_MAX) if request_streaming else None
        self._status: tuple[grpc.StatusCode, str] | None = None   # what the reader gets now
        self._outcome: tuple[grpc.StatusCode, str] | None = None  # how the call ended
        self._finished = self._loop.create_future()
        self._callbacks: list = []
        self._writing_done = False
        self._call = None
        self._opened = self._loop.create_future()  # done once the real call exists (or never will)
        self._tasks: list[asyncio.Task] = []
        self._cut = state.cut_signal(peer_region)  # no await since the caller's partition check
        self._cut.add_done_callback(self._on_cut)
        self._deadline_handle = (None if self._deadline is None else
                                 self._loop.call_at(self._deadline, self._on_deadline))
        if request_streaming:  # the stream opens at once; each request crosses on its own
            self._call = open_call(timeout=timeout)
            _set_done(self._opened)
            self._pump = self._spawn(self._pump_replies())
            self._spawn(self._send_requests())
            if request_iterator is not None:
                self._spawn(self._feed(request_iterator))
        else:  # the one request crosses first, then the stream opens
            self._pump = self._spawn(self._open_then_pump(open_call))

    def _spawn(self, coroutine) -> asyncio.Task:
        task = asyncio.ensure_future(coroutine)
        task.add_done_callback(_retrieve)
        self._tasks.append(task)
        return task

    # -- the end of the call
    def _finish(self, code: grpc.StatusCode, details: str) -> None:
        if self._status is not None:
            return
        self._status = (code, details)
        self._replies.close()
        if self._requests is not None:
            self._requests.close()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
        if self._call is not None and code != grpc.StatusCode.OK:
            self._call.cancel()
        _set_done(self._opened)
        self._end_arrived(code, details)

    def _end_arrived(self, code: grpc.StatusCode, details: str) -> None:
        if self._outcome is not None:
            return
        self._outcome = (code, details)
        self._cut.remove_done_callback(self._on_cut)
        if self._deadline_handle is not None:
            self._deadline_handle.cancel()
        _set_done(self._finished)
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(self)

    def _ended_at(self, deliver_at: float, code: grpc.StatusCode, details: str) -> None:
        """The call's end is on its way: queued for the reader, and the outcome when it arrives."""
        self._loop.call_at(deliver_at, self._end_arrived, code, details)

    def _on_cut(self, _signal) -> None:
        if self._outcome is None:
            self._finish(grpc.StatusCode.UNAVAILABLE, wan.partition_message(self._state.region, self._peer))

    def _on_deadline(self) -> None:
        if self._outcome is None:
            self._finish(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

    def _break(self, code: grpc.StatusCode, details: str) -> None:
        """A request was lost: the stream breaks now; replies still on their way are lost with it."""
        if self._outcome is not None:
            return
        self._pump.cancel()
        if self._call is not None:
            self._call.cancel()
        self._replies.cut(self._loop.time(), _End(code, details))
        self._end_arrived(code, details)

    def _raise_status(self, status: tuple[grpc.StatusCode, str] | None = None):
        code, details = status or self._status
        if code == grpc.StatusCode.OK:
            raise asyncio.InvalidStateError("the call has already ended")  # what grpc.aio raises
        if code == grpc.StatusCode.CANCELLED and details == _LOCALLY_CANCELLED:
            raise asyncio.CancelledError()  # as grpc.aio does for a call its caller cancelled
        raise status_error(code, details)

    # -- the reply direction
    def _deliver_at(self, line: _DelayLine) -> float:
        line.last_delivery = wan.deliver_at(line.last_delivery, self._loop.time(), self._state.draw_delay_s())
        return line.last_delivery

    async def _open_then_pump(self, open_call) -> None:
        delay_s = self._state.draw_delay_s()
        await asyncio.sleep(delay_s)  # the deadline and a partition end the call meanwhile (_finish)
        if self._state.draw_lost():
            self._finish(grpc.StatusCode.UNAVAILABLE, wan.LOST_MESSAGE)  # nothing was delivered yet
            return
        remaining = None if self._deadline is None else max(0.0, self._deadline - self._loop.time())
        self._call = open_call(timeout=remaining)
        _set_done(self._opened)
        await self._pump_replies()

    async def _pump_replies(self) -> None:
        """Queue each reply (and the final status) with its delivery time, as it arrives."""
        call, line = self._call, self._replies
        try:
            while True:
                if self._response_streaming:
                    reply = await call.read()
                else:
                    reply = await call
                if reply is grpc.aio.EOF:
                    await self._put_end(self._deliver_at(line), grpc.StatusCode.OK, "")
                    return
                if self._state.draw_lost():  # the connection breaks there: nothing after it arrives
                    call.cancel()
                    await self._put_end(self._deliver_at(line), grpc.StatusCode.UNAVAILABLE, wan.LOST_MESSAGE)
                    return
                await line.put(self._deliver_at(line), reply)
                if not self._response_streaming:
                    await self._put_end(line.last_delivery, grpc.StatusCode.OK, "")
                    return
        except grpc.aio.AioRpcError as error:
            await self._put_end(self._deliver_at(line), error.code(), error.details() or "")
        except _LineClosed:
            return

    async def _put_end(self, deliver_at: float, code: grpc.StatusCode, details: str) -> None:
        await self._replies.put(deliver_at, _End(code, details))
        self._ended_at(deliver_at, code, details)

    async def read(self):
        if self._status is not None:
            return self._end_of_replies()
        try:
            item = await self._replies.get()
        except _LineClosed:
            return self._end_of_replies()
        if isinstance(item, _End):
            self._finish(item.code, item.details)
            return self._end_of_replies()
        return item

    def _end_of_replies(self):
        if self._status[0] == grpc.StatusCode.OK:
            return grpc.aio.EOF
        self._raise_status()

    # -- the request direction
    async def write(self, request) -> None:
        if self._outcome is not None:
            self._raise_status(self._outcome)
        if self._writing_done:
            raise asyncio.InvalidStateError("done_writing was called before this write")
        lost = self._state.draw_lost()
        try:
            await self._requests.put(self._deliver_at(self._requests), _LOST if lost else request)
        except _LineClosed:
            self._raise_status()

    async def done_writing(self) -> None:
        if self._outcome is not None or self._writing_done:
            return
        self._writing_done = True
        with contextlib.suppress(_LineClosed):
            await self._requests.put(self._deliver_at(self._requests), _END_WRITING)

    async def _send_requests(self) -> None:
        """Write each queued request to the real call when it is due."""
        call, line = self._call, self._requests
        try:
            while True:
                item = await line.get()
                if item is _LOST:
                    self._break(grpc.StatusCode.UNAVAILABLE, wan.LOST_MESSAGE)
                    return
                if item is _END_WRITING:
                    await call.done_writing()
                    return
                await call.write(item)
        except (_LineClosed, grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return  # the call ended: the reply line delivers why

    async def _feed(self, request_iterator) -> None:
        """A request iterator given to the call: its requests cross the WAN as written ones do."""
        try:
            if hasattr(request_iterator, "__aiter__"):
                async for request in request_iterator:
                    await self.write(request)
            else:
                for request in request_iterator:
                    await self.write(request)
            await self.done_writing()
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError, asyncio.CancelledError):
            return  # the call ended

    # -- the rest of grpc.aio's call interface
    def cancel(self) -> bool:
        if self._outcome is not None:
            return False
        self._finish(grpc.StatusCode.CANCELLED, _LOCALLY_CANCELLED)
        return True

    def cancelled(self) -> bool:
        return self._outcome is not None and self._outcome[0] == grpc.StatusCode.CANCELLED

    def done(self) -> bool:
        return self._outcome is not None

    def add_done_callback(self, callback) -> None:
        if self._outcome is not None:
            callback(self)
        else:
            self._callbacks.append(callback)

    async def code(self) -> grpc.StatusCode:
        await asyncio.shield(self._finished)
        return self._outcome[0]

    async def details(self) -> str:
        await asyncio.shield(self._finished)
        return self._outcome[1]

    async def initial_metadata(self) -> grpc.aio.Metadata:
        await asyncio.shield(self._opened)  # the request may still be on its way
        return await self._call.initial_metadata() if self._call is not None else grpc.aio.Metadata()

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        await asyncio.shield(self._finished)
        return await self._call.trailing_metadata() if self._call is not None else grpc.aio.Metadata()

    async def wait_for_connection(self) -> None:
        if self._outcome is not None and self._outcome[0] != grpc.StatusCode.OK:
            self._raise_status(self._outcome)


_LOCALLY_CANCELLED = "Locally cancelled by application!"


class _WanUnaryStreamCall(_WanStreamCall, grpc.aio.UnaryStreamCall):
    pass


class _WanStreamStreamCall(_WanStreamCall, grpc.aio.StreamStreamCall):
    pass


class _WanStreamUnaryCall(_WanStreamCall, grpc.aio.StreamUnaryCall):
    def __await__(self):
        return self._reply().__await__()

    async def _reply(self):
        reply = await self.read()
        assert reply is not grpc.aio.EOF, "a unary reply line ends with its reply"
        return reply


class _CuttableCall(_RepliesByRead):
    """grpc's own streaming call to another region, ended by a partition (rules that delay nothing).

    The partition cancels grpc's call; what the caller then gets (grpc.aio's CancelledError, or
    InvalidStateError on a write) becomes the partition error, unless the caller's own task is
    being cancelled. One extra Python call per read or write.
    """

    def __init__(self, call, state: wan.WanState, peer_region: str) -> None:
        self._call = call
        self._message = wan.partition_message(state.region, peer_region)
        self._was_cut = False
        self._cut = state.cut_signal(peer_region)  # no await since the caller's partition check
        self._cut.add_done_callback(self._on_cut)
        call.add_done_callback(lambda _: self._cut.remove_done_callback(self._on_cut))

    def _on_cut(self, _signal) -> None:
        self._was_cut = True
        self._call.cancel()

    def _translate(self, error: BaseException):
        task = asyncio.current_task()
        if self._was_cut and not (task is not None and task.cancelling()):
            raise unavailable_error(self._message) from None
        raise error

    async def read(self):
        try:
            return await self._call.read()
        except (asyncio.CancelledError, asyncio.InvalidStateError) as error:
            self._translate(error)

    async def write(self, request) -> None:
        try:
            await self._call.write(request)
        except (asyncio.CancelledError, asyncio.InvalidStateError) as error:
            self._translate(error)

    async def done_writing(self) -> None:
        await self._call.done_writing()

    def cancel(self) -> bool:
        return self._call.cancel()

    def cancelled(self) -> bool:
        return self._call.cancelled()

    def done(self) -> bool:
        return self._call.done()

    def time_remaining(self) -> float | None:
        return self._call.time_remaining()

    def add_done_callback(self, callback) -> None:
        self._call.add_done_callback(lambda _: callback(self))

    async def code(self) -> grpc.StatusCode:
        code = await self._call.code()
        return grpc.StatusCode.UNAVAILABLE if self._was_cut and code == grpc.StatusCode.CANCELLED else code

    async def details(self) -> str:
        details = await self._call.details()
        return self._message if self._was_cut and await self._call.code() == grpc.StatusCode.CANCELLED else details

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return await self._call.initial_metadata()

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        return await self._call.trailing_metadata()

    async def wait_for_connection(self) -> None:
        await self._call.wait_for_connection()


class _CuttableUnaryStreamCall(_CuttableCall, grpc.aio.UnaryStreamCall):
    pass


class _CuttableStreamStreamCall(_CuttableCall, grpc.aio.StreamStreamCall):
    pass


class _CuttableStreamUnaryCall(_CuttableCall, grpc.aio.StreamUnaryCall):
    def __await__(self):
        return self._reply().__await__()

    async def _reply(self):
        try:
            return await self._call
        except asyncio.CancelledError as error:
            self._translate(error)


class Channels:
    """One aio channel per address, created lazily, closed together.

    In a node process (after `set_identity`) each channel to another node obeys the
    partition rules (`node_channel`); `state` overrides the process identity (tests).
    """

    def __init__(self, state: netfault.PartitionState | None = None, wan_state: wan.WanState | None = None,
                 credentials: ClientCredentials | None = None) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._state = state if state is not None else _identity
        self._wan_state = wan_state if wan_state is not None else _region_identity
        self._credentials = credentials  # a tool's (no node identity): TLS to a secure cluster

    def get(self, address: str) -> grpc.aio.Channel:
        channel = self._channels.get(address)
        if channel is None:
            channel = node_channel(self._state, address, self._credentials)
            self._channels[address] = channel
        return channel

    def get_remote(self, address: str, region: str) -> grpc.aio.Channel:
        """A channel to a node of another region (Global Database): every message crosses the WAN
        and obeys its rules (delay, jitter, loss, region partitions: `region_channel`)."""
        key = f"{region}/{address}"
        channel = self._channels.get(key)
        if channel is None:
            channel = region_channel(address, region, self._wan_state, self._credentials)
            self._channels[key] = channel
        return channel

    def member(self, member) -> grpc.aio.Channel:
        """A channel to a journal replica or adjudicator (quorumdb.members.Member): across the WAN
        when it is in another region than this process, else a node channel."""
        own = self._wan_state.region if self._wan_state is not None else ""
        if member.region and member.region != own:
            return self.get_remote(member.address, member.region)
        return self.get(member.address)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(grace=None)


# --- server side -----------------------------------------------------------------------------------
def caller_node(invocation_metadata) -> str | None:
    """The calling node's name from its metadata; None for tools and clients."""
    for key, value in invocation_metadata or ():
        if key == netfault.NODE_METADATA_KEY:
            return value
    return None


def client_channel(address: str, credentials: ClientCredentials | None = None,
                   server_name: str | None = None) -> grpc.aio.Channel:
    """A client's or tool's channel to a node (the simulation's own inside a simulation).

    Plaintext when `credentials` is None or has no CA (an --insecure cluster); else TLS verifying
    the cluster CA (the server's name checked is `server_name` when given, else the address's host:
    node certificates name localhost and 127.0.0.1 too), presenting the certificate if any, with
    `authorization: Bearer <token>` on every call if a token is set."""
    simulated = runtime.current().channel(address)
    return simulated if simulated is not None else _aio_channel(address, credentials, server_name)


def new_server(state: netfault.PartitionState | None = None) -> grpc.aio.Server:
    """An aio server; in a node process (or given `state`) it obeys the cluster's partitions.

    Inside the deterministic simulation the current runtime gives its own server instead."""
    simulated = runtime.current().server()
    if simulated is not None:
        return simulated
    state = state if state is not None else _identity
    server = grpc.aio.server(options=SERVER_OPTIONS)
    authorizer = _tls.authorizer if _tls is not None and state is _identity else None
    if state is None and authorizer is None:
        return server
    return _PartitionedServer(server, state, _server_histograms, authorizer)


def new_supervisor_server(server: grpc.Server, cluster: ClusterConfig):
    """The supervisor's synchronous `server`, its handlers authorized as a token service unless
    the cluster is insecure (then `server` itself). Listen with `add_supervisor_port`."""
    if cluster.insecure:
        return server
    return _PartitionedServer(server, None, None, authorizer_for(cluster))


def add_supervisor_port(server, cluster: ClusterConfig, listen: str) -> int:
    """The supervisor's port: plaintext for an insecure cluster, else TLS with SUPERVISOR_CERT's
    pair (reloaded on rotation), callers authenticated by token."""
    if cluster.insecure:
        return server.add_insecure_port(listen)
    return server.add_secure_port(listen, server_credentials(cluster, SUPERVISOR_CERT, False))


class _PartitionedServer(grpc.aio.Server):
    """An aio server whose method handlers are guarded (`guard_handler`) once, as they are registered.

    With `histograms` (metrics on), each unary handler also times its calls (`_timed_unary`)."""

    def __init__(self, server: grpc.aio.Server, state: netfault.PartitionState | None, histograms=None,
                 authorizer: Authorizer | None = None) -> None:
        self._server = server
        self._state = state if state is not None else _NO_PARTITIONS
        self._histograms = histograms
        self._authorizer = authorizer

    def add_generic_rpc_handlers(self, generic_rpc_handlers) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_GuardedGenericHandler(handlers, self._state, self._histograms, self._authorizer)
                  for handlers in generic_rpc_handlers))

    def add_registered_method_handlers(self, service_name: str, method_handlers) -> None:
        # grpc.aio resolves these before any generic handler: the generated add_*_to_server
        # registers both, and only this copy is ever consulted for its methods.
        self._server.add_registered_method_handlers(service_name, {
            method: guard_handler(handler, self._state, _timer(self._histograms, service_name, method),
                                  _method_auth(self._authorizer, service_name, method))
            for method, handler in method_handlers.items()})

    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self._server.add_secure_port(address, server_credentials)

    def start(self):  # a coroutine for grpc.aio's server, a plain call for a synchronous one
        return self._server.start()

    def stop(self, grace: float | None):
        return self._server.stop(grace)

    def wait_for_termination(self, timeout: float | None = None):
        return self._server.wait_for_termination(timeout)


class _GuardedGenericHandler(grpc.GenericRpcHandler):
    """A generic handler whose method handlers come out guarded, each wrapped once and kept."""

    def __init__(self, handlers: grpc.GenericRpcHandler, state: netfault.PartitionState, histograms=None,
                 authorizer: Authorizer | None = None) -> None:
        self._handlers = handlers
        self._state = state
        self._histograms = histograms
        self._authorizer = authorizer
        self._guarded: dict[int, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(self, handler_call_details):
        handler = self._handlers.service(handler_call_details)
        if handler is None:
            return None
        known = self._guarded.get(id(handler))
        if known is not None and known[0] is handler:  # the original is kept: its id cannot be reused
            return known[1]
        service_name, _, method = handler_call_details.method.lstrip("/").partition("/")
        guarded = guard_handler(handler, self._state, _timer(self._histograms, service_name, method),
                                _method_auth(self._authorizer, service_name, method))
        if len(self._guarded) < limits.GUARDED_HANDLERS_MAX:
            self._guarded[id(handler)] = (handler, guarded)
        return guarded


def _timer(histograms, service_name: str, method: str):
    """The histogram a unary method's calls are observed in, or None (metrics off)."""
    return None if histograms is None else histograms.child(service_name, method)


class _NoPartitions:
    """The partition state of a server that only authorizes (the supervisor): nobody is ever cut."""

    name = ""
    cut_peers: frozenset[str] = frozenset()

    @staticmethod
    def cut_signal(peer: str) -> None:
        return None


_NO_PARTITIONS = _NoPartitions()


def _method_auth(authorizer: Authorizer | None, service_name: str, method: str) -> MethodAuth | None:
    return None if authorizer is None else authorizer.for_method(f"/{service_name}/{method}")


def guard_handler(handler: grpc.RpcMethodHandler, state: netfault.PartitionState,
                  timer=None, auth: MethodAuth | None = None) -> grpc.RpcMethodHandler:
    """`handler` obeying `state`'s cuts (see the module docstring); the same kind of handler.

    grpc.aio picks how to run a handler from its function's kind (coroutine, async generator,
    plain function), so each wrapper keeps a kind grpc runs the same way. With `timer` (an object
    with `observe(seconds)`), a unary coroutine handler's calls are timed, the guard included;
    streams are timed per message by the services themselves (a stream's lifetime says nothing).
    """
    field = {
        (False, False): "unary_unary", (False, True): "unary_stream",
        (True, False): "stream_unary", (True, True): "stream_stream",
    }[(handler.request_streaming, handler.response_streaming)]
    behavior = getattr(handler, field)
    if handler.response_streaming:
        if inspect.iscoroutinefunction(behavior) or inspect.isasyncgenfunction(behavior):
            return _lenient(handler)._replace(**{field: _guarded_stream(behavior, state, auth)})
        return handler  # a synchronous generator: no QuorumDB service has one
    if inspect.iscoroutinefunction(behavior):
        if timer is not None:
            return _lenient(handler)._replace(**{field: _timed_unary(behavior, state, timer, auth)})
        return _lenient(handler)._replace(**{field: _guarded_unary(behavior, state, auth)})
    return _lenient(handler)._replace(**{field: _guarded_sync_unary(behavior, state, auth)})


class _Unparseable:
    """A unary request that did not parse, handed to the guard instead of an exception.

    When a request deserializer raises, gRPC answers UNKNOWN (aio) or INTERNAL (sync) and logs an
    ERROR with a traceback, before any guard ran: anyone who reaches the port, with no credential
    at all on a token port, could fill a node's log with one garbage request after another. The
    guard instead refuses it after the authorization, with INVALID_ARGUMENT and no log line."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _lenient(handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """`handler` whose unary request deserializer returns _Unparseable instead of raising (a
    streamed request's messages are read by the service itself: its deserializer stays)."""
    deserializer = handler.request_deserializer
    if handler.request_streaming or deserializer is None:
        return handler

    def deserialize(data: bytes):
        try:
            return deserializer(data)
        except Exception as error:  # DecodeError, or a RecursionError on deeply nested input
            return _Unparseable(f"{type(error).__name__}: {error}")

    return handler._replace(request_deserializer=deserialize)


def _unparseable(request, auth: MethodAuth | None) -> tuple[grpc.StatusCode, str] | None:
    if type(request) is not _Unparseable:
        return None
    method = auth.method if auth is not None else "the request"
    return grpc.StatusCode.INVALID_ARGUMENT, f"{method}: the request does not parse ({request.reason})"


def _unary_refusal(context, state: netfault.PartitionState, auth: MethodAuth | None,
                   request=None) -> tuple[grpc.StatusCode, str] | None:
    """Why a unary call is not served (the caller may not call the method, its request does not
    parse, or it is cut from this node), as context.abort's arguments; None to serve it."""
    if auth is not None:
        refusal = auth.check(context)
        if refusal is not None:
            return refusal
    if type(request) is _Unparseable:
        return _unparseable(request, auth)
    # Almost always nobody is cut: then a call costs this test, not a read of its metadata.
    if state.cut_peers:
        peer = caller_node(context.invocation_metadata())
        if peer is not None and peer in state.cut_peers:
            return grpc.StatusCode.UNAVAILABLE, netfault.partition_message(state.name, peer)
    return None


def _guarded_unary(behavior, state: netfault.PartitionState, auth: MethodAuth | None = None):
    async def guarded(request_or_iterator, context):
        refusal = _unary_refusal(context, state, auth, request_or_iterator)
        if refusal is not None:
            await context.abort(*refusal)
        return await behavior(request_or_iterator, context)

    return guarded


def _timed_unary(behavior, state: netfault.PartitionState, timer, auth: MethodAuth | None = None):
    """_guarded_unary that also observes each call's duration (a failed or refused call too)."""
    clock = time.perf_counter

    async def timed(request_or_iterator, context):
        started = clock()
        try:
            refusal = _unary_refusal(context, state, auth, request_or_iterator)
            if refusal is not None:
                await context.abort(*refusal)
            return await behavior(request_or_iterator, context)
        finally:
            timer.observe(clock() - started)

    return timed


def _guarded_sync_unary(behavior, state: netfault.PartitionState, auth: MethodAuth | None = None):
    def guarded(request_or_iterator, context):  # runs in grpc's thread pool; context.abort raises
        refusal = _unary_refusal(context, state, auth, request_or_iterator)
        if refusal is not None:
            context.abort(*refusal)
        return behavior(request_or_iterator, context)

    return guarded


def _guarded_stream(behavior, state: netfault.PartitionState, auth: MethodAuth | None = None):
    # An async-generator handler runs in the reader/writer style (_write_all), so that the guard
    # can run it as one task and stop it: one task per stream instead of one per message.
    run = behavior if inspect.iscoroutinefunction(behavior) else functools.partial(_write_all, behavior)

    async def guarded(request_or_iterator, context) -> None:
        if auth is not None:  # once, as the stream opens
            refusal = auth.check(context)
            if refusal is not None:
                await context.abort(*refusal)
        if type(request_or_iterator) is _Unparseable:
            await context.abort(*_unparseable(request_or_iterator, auth))
        peer = caller_node(context.invocation_metadata())
        if peer is None or peer == state.name:  # a tool, or this node itself: never cut
            await run(request_or_iterator, context)
            return
        message = netfault.partition_message(state.name, peer)
        if peer in state.cut_peers:
            await context.abort(grpc.StatusCode.UNAVAILABLE, message)
        cut = state.cut_signal(peer)  # no await since the test above: no cut can slip between
        if cut is None:  # not a node of this cluster: nobody can cut it later
            await run(request_or_iterator, context)
            return
        await _serve_until_cut(run(request_or_iterator, context), cut, context, message)

    return guarded


async def _write_all(behavior, request, context) -> None:
    """What grpc.aio does with an async-generator handler: write each response as it comes."""
    responses = behavior(request, context)
    try:
        async for response in responses:
            await context.write(response)
    finally:
        await responses.aclose()  # its finally blocks run now, also when it was stopped between messages


async def _serve_until_cut(handling, cut: asyncio.Future, context, message: str) -> None:
    """Run a stream handler until it ends, or end the call UNAVAILABLE when `cut` completes first."""
    worker = asyncio.ensure_future(handling)
    worker.add_done_callback(_retrieve)
    try:
        await asyncio.wait((worker, cut), return_when=asyncio.FIRST_COMPLETED)
    except BaseException:  # this call was cancelled (the caller went away, the server stops)
        worker.cancel()
        raise
    if worker.done():  # ended by itself (if both at once, its own outcome stands)
        worker.result()
        return
    # Cancelling stops it wherever it waits: its next response, a context.write, or the
    # caller's next request (`async for request in request_iterator`).
    worker.cancel()
    # Give its finally blocks a moment (counters, open files), bounded: the call ends regardless.
    await asyncio.wait((worker,), timeout=limits.NETFAULT_STREAM_CHECK_MS / 1000)
    if not context.done():  # it may have ended the call itself (abort) while stopping
        await context.abort(grpc.StatusCode.UNAVAILABLE, message)


def _retrieve(task: asyncio.Task) -> None:
    """Mark a stream handler's outcome as seen: its call may have ended before the handler did."""
    if not task.cancelled():
        task.exception()
