"""The supervisor inside `quorumdb up`: a small gRPC control service over the node processes.

`quorumdb up` holds the launcher's `Cluster` (every node process, by PID). The
supervisor serves `proto/supervisor.proto` on 127.0.0.1:<base port + 39> with a
synchronous gRPC server (a few threads: `up` itself is not an asyncio program) so that
`quorumdb chaos` can kill, restart, pause, resume and stop nodes, whole AZs or every node (a
region of a Global Database: `chaos region-kill`), cut an AZ
off the network (`quorumdb.netfault`) and heal it, and kill whichever adjudicator leads.

What it guarantees:
* Every action is serialized (one lock) and reported through `say` (a line in `up`'s
  output). A process the supervisor signals is recorded *before* the signal, so `up`'s
  monitor can tell an exit it asked for (`expected_exit`) from an unexpected death.
* After `close()`, no action starts a process: `up` can then stop every node it knows.
* A restart waits (bounded) until the new process answers Status, and says how long
  that took; errors are gRPC statuses with a message for a person.

The state of a node, as `Nodes` reports it, is a pure function of whether its process
is alive and what the supervisor last did to it (`node_state`).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
import time
from typing import Callable

import grpc

from quorumdb import limits, netfault
from quorumdb.config import ClusterConfig, NodeConfig
from quorumdb.pb import supervisor_pb2, supervisor_pb2_grpc

# The supervisor listens on base port + this (the last port of the original 40-port block; the
# metrics, console and Prometheus ports follow it: quorumdb/config.py).
PORT_OFFSET = 39
HOST = "127.0.0.1"

# What the supervisor last did to a node (None: nothing, or it resumed/restarted it).
KILLED, STOPPED, PAUSED = "killed", "stopped", "paused"
RUNNING, EXITED = "running", "exited"


def address(base_port: int, host: str = HOST) -> str:
    return f"{host}:{base_port + PORT_OFFSET}"


def node_state(started: bool, alive: bool, intent: str | None) -> str:
    """running | paused | stopped | killed | exited (died without being asked to)."""
    if alive:
        return PAUSED if intent == PAUSED else RUNNING
    if not started:
        return STOPPED
    if intent in (KILLED, STOPPED):
        return intent
    return EXITED


class SupervisorError(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True)
class ActionResult:
    message: str
    names: tuple[str, ...]


class Supervisor:
    """Actions on the processes of one launcher `Cluster`, safe to call from several threads."""

    def __init__(self, launched, say: Callable[[str], None], status=None) -> None:
        from tools.launcher import node_status

        self.launched = launched
        self.config: ClusterConfig = launched.config
        self.say = say
        self.status = status or node_status
        self._lock = threading.Lock()
        self._intent: dict[str, str | None] = {}
        self._expected_exit_pids: set[int] = set()
        self._closing = False

    # --- queries ---------------------------------------------------------------------------------
    def expected_exit(self, pid: int) -> bool:
        """True if the supervisor signalled this process (its exit is not a surprise)."""
        return pid in self._expected_exit_pids

    def node_info(self, name: str) -> supervisor_pb2.SupervisedNode:
        node = self.config.node(name)
        process = self.launched.processes.get(name)
        alive = process is not None and process.poll() is None
        state = node_state(process is not None, alive, self._intent.get(name))
        return supervisor_pb2.SupervisedNode(
            name=node.name, az=node.az, service=node.service, address=node.address,
            pid=process.pid if process is not None else 0, state=state,
            exit_code=process.returncode if process is not None and not alive else 0,
        )

    def nodes(self) -> list[supervisor_pb2.SupervisedNode]:
        return [self.node_info(node.name) for node in self.config.nodes]

    # --- one node ---------------------------------------------------------------------------------
    def _node(self, name: str) -> NodeConfig:
        try:
            return self.config.node(name)
        except KeyError:
            names = ", ".join(node.name for node in self.config.nodes)
            raise SupervisorError(grpc.StatusCode.NOT_FOUND, f"no node named {name!r} (nodes: {names})") from None

    def _az_nodes(self, az: str) -> list[str]:
        names = [name for name in self.launched.names() if self.config.node(name).az == az]
        if not names:
            azs = ", ".join(sorted({node.az for node in self.config.nodes}))
            raise SupervisorError(grpc.StatusCode.NOT_FOUND, f"no AZ named {az!r} (AZs: {azs})")
        return names

    def _running_pid(self, name: str) -> int | None:
        process = self.launched.processes.get(name)
        return process.pid if process is not None and process.poll() is None else None

    def _running_pid_locked(self, name: str) -> int:
        """The pid of node `name`, which an action needs running (under the lock, `up` not closing)."""
        self._check_open()
        pid = self._running_pid(name)
        if pid is None:
            raise SupervisorError(grpc.StatusCode.FAILED_PRECONDITION, f"{name} is not running")
        return pid

    def _check_open(self) -> None:
        if self._closing:
            raise SupervisorError(grpc.StatusCode.UNAVAILABLE, "quorumdb up is shutting down")

    def _kill_locked(self, name: str) -> int | None:
        pid = self._running_pid(name)
        if pid is not None:
            self._expected_exit_pids.add(pid)
            self._intent[name] = KILLED
            self.launched.kill(name)
        return pid

    def kill(self, name: str, reason: str = "") -> ActionResult:
        self._node(name)
        with self._lock:
            self._check_open()
            pid = self._kill_locked(name)
        if pid is None:
            raise SupervisorError(grpc.StatusCode.FAILED_PRECONDITION, f"{name} is not running")
        return self._done(f"killed {name} (pid {pid}{reason})", [name])

    def stop(self, name: str) -> ActionResult:
        self._node(name)
        with self._lock:
            pid = self._running_pid_locked(name)
            self._expected_exit_pids.add(pid)
            self._intent[name] = STOPPED
            self.launched.stop_node(name, timeout_s=limits.UP_STOP_TIMEOUT_S)
        code = self.launched.processes[name].returncode
        return self._done(f"stopped {name} (pid {pid}, exit code {code})", [name])

    def pause(self, name: str) -> ActionResult:
        self._node(name)
        with self._lock:
            pid = self._running_pid_locked(name)
            if self._intent.get(name) == PAUSED:
                raise SupervisorError(grpc.StatusCode.FAILED_PRECONDITION, f"{name} is already paused")
            self._intent[name] = PAUSED
            self.launched.pause(name)
        return self._done(f"paused {name} (pid {pid}, SIGSTOP)", [name])

    def resume(self, name: str) -> ActionResult:
        self._node(name)
        with self._lock:
            pid = self._running_pid_locked(name)
            if self._intent.get(name) != PAUSED:
                raise SupervisorError(grpc.StatusCode.FAILED_PRECONDITION, f"{name} is not paused")
            self.launched.resume(name)
            self._intent[name] = None
        return self._done(f"resumed {name} (pid {pid}, SIGCONT)", [name])

    def restart(self, name: str) -> ActionResult:
        self._node(name)
        return self._restart([name], f"{name}")

    # --- AZs and the network --------------------------------------------------------------------
    def kill_az(self, az: str) -> ActionResult:
        names = self._az_nodes(az)
        with self._lock:
            self._check_open()
            killed = [(name, self._kill_locked(name)) for name in reversed(names)]
        done = [f"{name} (pid {pid})" for name, pid in killed if pid is not None]
        if not done:
            raise SupervisorError(grpc.StatusCode.FAILED_PRECONDITION, f"no node of {az} is running")
        return self._done(f"killed {len(done)} nodes of {az}: {', '.join(done)}", names)

    def restart_az(self, az: str) -> ActionResult:
        return self._restart(self._az_nodes(az), f"{az}")

    def partition(self, az: str) -> ActionResult:
        self._az_nodes(az)
        with self._lock:
            self._check_open()
            netfault.isolate_az(self.config, az)
            rules = netfault.read_rules(self.config)
        others = sorted({node.az for node in self.config.nodes} - {az})
        inside = len(netfault.pairs_isolating_az(self.config, az))
        return self._done(f"partitioned {az} from {', '.join(others)}: {inside} links cut "
                          f"({len(rules.cuts)} cut in all, rules v{rules.version})", [])

    def heal(self) -> ActionResult:
        with self._lock:
            self._check_open()
            before = netfault.current_cuts(self.config)
            netfault.heal(self.config)
            rules = netfault.read_rules(self.config)
        return self._done(f"healed the network: removed {len(before)} cut links (rules v{rules.version})", [])

    def kill_leader(self) -> ActionResult:
        adjudicators = self.config.adjudicators
        if not adjudicators:
            raise SupervisorError(grpc.StatusCode.FAILED_PRECONDITION,
                                  "this region has no adjudicators (a witness holds journal replicas only)")
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(adjudicators)) as pool:
            statuses = list(pool.map(lambda node: self.status(node, limits.STATUS_TIMEOUT_S), adjudicators))
        leaders = [(status.epoch, node.name) for node, status in zip(adjudicators, statuses)
                   if status is not None and status.role == "leader"]
        if not leaders:
            raise SupervisorError(grpc.StatusCode.FAILED_PRECONDITION,
                                  "no adjudicator says it leads (a failover may be under way); try again")
        epoch, name = max(leaders)
        return self.kill(name, reason=f", was leader, epoch {epoch}")

    # --- the whole cluster (a region of a Global Database) ----------------------------------------
    def kill_all(self) -> ActionResult:
        """SIGKILL every running node, compute first and the journal last, under one lock hold: the
        region disappears at once, as a region outage would take it, with no chaos action between."""
        names = self.launched.names()
        with self._lock:
            self._check_open()
            killed = [(name, self._kill_locked(name)) for name in reversed(names)]
        done = [f"{name} (pid {pid})" for name, pid in killed if pid is not None]
        if not done:
            raise SupervisorError(grpc.StatusCode.FAILED_PRECONDITION, "no node is running")
        return self._done(f"killed all {len(done)} running nodes: {', '.join(done)}", names)

    def restart_all(self) -> ActionResult:
        return self._restart(self.launched.names(), f"all {len(self.launched.names())} nodes")

    # --- shared -----------------------------------------------------------------------------------
    def _restart(self, names: list[str], what: str) -> ActionResult:
        with self._lock:
            self._check_open()
            old = {name: self._kill_locked(name) for name in names}
            for name in names:
                self.launched.start([name])
                self._intent[name] = None
            new = {name: self.launched.processes[name].pid for name in names}
        started = time.monotonic()
        from tools.launcher import LaunchError

        try:
            self.launched.wait_ready(names, timeout_s=limits.SUPERVISOR_RESTART_READY_TIMEOUT_S)
        except LaunchError as error:
            self.say(f"chaos: restarted {what}, but: {error}")
            raise SupervisorError(grpc.StatusCode.DEADLINE_EXCEEDED, f"restarted {what}, but {error}") from None
        pids = ", ".join(
            f"{name} (pid {old[name]} -> {new[name]})" if old[name] else f"{name} (was down, pid {new[name]})"
            for name in names
        )
        return self._done(f"restarted {pids}; answering after {time.monotonic() - started:.1f} s", names)

    def _done(self, message: str, names: list[str]) -> ActionResult:
        self.say(f"chaos: {message}")
        return ActionResult(message, tuple(names))

    def close(self) -> None:
        """No action starts a process after this returns."""
        self._closing = True
        with self._lock:
            pass


def _action(method: str, target_field: str | None = None):
    """A SupervisorService handler: Supervisor.<method>(request.<target_field>) as an ActionReply."""

    def handler(self, request, context):
        args = () if target_field is None else (getattr(request, target_field),)
        return self._act(context, getattr(self.supervisor, method), *args)

    handler.__name__ = method
    return handler


class SupervisorService(supervisor_pb2_grpc.SupervisorServicer):
    """The gRPC shell: request -> Supervisor method -> ActionReply, SupervisorError -> status."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def _act(self, context, action, *args) -> supervisor_pb2.ActionReply:
        try:
            result = action(*args)
        except SupervisorError as error:
            context.abort(error.code, error.message)
        return supervisor_pb2.ActionReply(
            message=result.message, nodes=[self.supervisor.node_info(name) for name in result.names]
        )

    def Nodes(self, request, context):
        rules = netfault.read_rules(self.supervisor.config)
        return supervisor_pb2.NodesReply(
            nodes=self.supervisor.nodes(),
            cut_links=sorted("-".join(sorted(pair)) for pair in rules.cuts),
            rules_version=rules.version,
            data_dir=str(self.supervisor.config.data_dir),
            backup_location=self.supervisor.config.backup_location,
        )

    # Each action RPC calls one Supervisor method with the request field that names its target.
    Kill = _action("kill", "name")
    Restart = _action("restart", "name")
    Pause = _action("pause", "name")
    Resume = _action("resume", "name")
    Stop = _action("stop", "name")
    KillAz = _action("kill_az", "az")
    RestartAz = _action("restart_az", "az")
    Partition = _action("partition", "az")
    Heal = _action("heal")
    KillLeader = _action("kill_leader")
    KillAll = _action("kill_all")
    RestartAll = _action("restart_all")


def serve(supervisor: Supervisor, listen: str) -> grpc.Server:
    """Start the control service on `listen` (host:port); the caller stops it."""
    from quorumdb import rpc

    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=limits.SUPERVISOR_WORKERS, thread_name_prefix="supervisor"),
        options=rpc.SERVER_OPTIONS,
        maximum_concurrent_rpcs=4 * limits.SUPERVISOR_WORKERS,
    )
    # TLS with the tools' certificate and a token on every call, unless the cluster is insecure:
    # the chaos actions kill nodes (quorumdb/rpc.py, authz.py).
    guarded = rpc.new_supervisor_server(server, supervisor.config)
    supervisor_pb2_grpc.add_SupervisorServicer_to_server(SupervisorService(supervisor), guarded)
    port = rpc.add_supervisor_port(server, supervisor.config, listen)
    if port == 0:
        raise OSError(f"cannot listen on {listen}")
    server.start()
    return server
