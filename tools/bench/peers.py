"""Starting and stopping the systems `tools/bench/compare` measures: etcd, PostgreSQL, QuorumDB.

Every process started here is remembered by PID and stopped with SIGTERM (then SIGKILL after a
bounded wait) by the caller's `finally`; every wait has a deadline; everything listens on
127.0.0.1 only, on ports found free just before.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Callable, Sequence

ETCD_READY_TIMEOUT_S = 30.0  # three members elect a leader in ~1-2 s; 30 s means something is wrong
POSTGRES_START_TIMEOUT_S = 60  # pg_ctl -w -t: first start after initdb takes a few seconds
QUORUMDB_READY_TIMEOUT_S = 120.0  # `quorumdb up` of 15 processes is ready in ~10-20 s on 2 cores
STOP_TIMEOUT_S = 30.0  # SIGTERM then this long before SIGKILL
APT_TIMEOUT_S = 900  # apt-get update + install of postgresql or etcd on a slow mirror
COMMAND_TIMEOUT_S = 120  # small commands: initdb, version queries, pgbench -i -s 1
POLL_INTERVAL_S = 0.2

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


def say(text: str) -> None:
    print(f"[compare] {text}", flush=True)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run(command: Sequence[str], timeout_s: float = COMMAND_TIMEOUT_S, check: bool = True,
        **kwargs) -> subprocess.CompletedProcess:
    completed = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout_s, **kwargs)
    if check and completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {completed.returncode}:\n{completed.stdout[-2000:]}"
                           f"\n{completed.stderr[-2000:]}")
    return completed


def stop_process(process: subprocess.Popen, name: str, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM by PID, wait, SIGKILL if it is still there."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        say(f"{name} (pid {process.pid}) did not stop within {timeout_s:.0f} s: SIGKILL")
        process.kill()
        process.wait(timeout=timeout_s)


# --- installing -----------------------------------------------------------------------------------
def apt_install(packages: Sequence[str]) -> None:
    """apt-get install, said out loud: this changes the machine."""
    say(f"INSTALLING with apt-get (missing on this machine): {' '.join(packages)}")
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = prefix + ["apt-get", "install", "-y", "-q", *packages]
    if subprocess.run(install, env=env, timeout=APT_TIMEOUT_S).returncode != 0:
        subprocess.run(prefix + ["apt-get", "update", "-q"], env=env, timeout=APT_TIMEOUT_S, check=True)
        subprocess.run(install, env=env, timeout=APT_TIMEOUT_S, check=True)
    say(f"installed {' '.join(packages)}")


def postgres_bin_dir() -> pathlib.Path | None:
    """Debian keeps initdb/pg_ctl in /usr/lib/postgresql/<major>/bin; the newest one is used."""
    found = shutil.which("pg_ctl")
    if found:
        return pathlib.Path(found).resolve().parent
    candidates = sorted(pathlib.Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0)
    return candidates[-1].parent if candidates else None


def ensure_etcd() -> None:
    if not (shutil.which("etcd") and shutil.which("etcdctl")):
        apt_install(["etcd-server", "etcd-client"])


def ensure_postgres() -> pathlib.Path:
    if postgres_bin_dir() is None or shutil.which("pgbench") is None:
        apt_install(["postgresql", "postgresql-contrib"])
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise RuntimeError("pg_ctl not found after installing postgresql")
    return bin_dir


# --- etcd -----------------------------------------------------------------------------------------
class EtcdCluster:
    """Three etcd members on 127.0.0.1, each with its own data dir, client and peer port."""

    def __init__(self, work_dir: pathlib.Path, members: int = 3):
        self.work_dir = work_dir
        self.names = [f"etcd{i + 1}" for i in range(members)]
        self.client_ports = [free_port() for _ in self.names]
        self.peer_ports = [free_port() for _ in self.names]
        self.processes: list[subprocess.Popen] = []
        self.commands: list[list[str]] = []

    @property
    def endpoints(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", port) for port in self.client_ports]

    def start(self) -> None:
        initial = ",".join(f"{name}=http://127.0.0.1:{port}" for name, port in zip(self.names, self.peer_ports))
        for name, client_port, peer_port in zip(self.names, self.client_ports, self.peer_ports):
            data_dir = self.work_dir / name
            command = ["etcd", "--name", name, "--data-dir", str(data_dir),
                       "--listen-client-urls", f"http://127.0.0.1:{client_port}",
                       "--advertise-client-urls", f"http://127.0.0.1:{client_port}",
                       "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                       "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                       "--initial-cluster", initial, "--initial-cluster-state", "new",
                       "--initial-cluster-token", "quorumdb-compare", "--log-level", "warn"]
            self.commands.append(command)
            log = open(self.work_dir / f"{name}.log", "wb")
            self.processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                                   stdin=subprocess.DEVNULL))
            log.close()
        self._wait_healthy()

    def _healthy(self, port: int) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1.0) as reply:
                return json.loads(reply.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + ETCD_READY_TIMEOUT_S
        while time.monotonic() < deadline:
            for name, process in zip(self.names, self.processes):
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited {process.returncode}; see {self.work_dir / name}.log")
            if all(self._healthy(port) for port in self.client_ports):
                return
            time.sleep(POLL_INTERVAL_S)
        raise RuntimeError(f"etcd cluster not healthy within {ETCD_READY_TIMEOUT_S:.0f} s; logs in {self.work_dir}")

    @property
    def pids(self) -> dict[int, str]:
        return {process.pid: name for name, process in zip(self.names, self.processes) if process.poll() is None}

    def stop(self) -> None:
        for name, process in zip(self.names, self.processes):
            stop_process(process, name)


# --- PostgreSQL -----------------------------------------------------------------------------------
class Postgres:
    """A throwaway PostgreSQL: initdb into a temp dir, pg_ctl start on a free port, 127.0.0.1 only.

    As root, initdb/pg_ctl/pgbench run as the `postgres` user (initdb refuses root). Settings are
    the package defaults (fsync on, synchronous_commit on, shared_buffers 128MB): durable commits,
    like QuorumDB's, on one node with no replication."""

    def __init__(self, work_dir: pathlib.Path, bin_dir: pathlib.Path):
        self.work_dir = work_dir
        self.bin_dir = bin_dir
        self.data_dir = work_dir / "pgdata"
        self.socket_dir = work_dir / "pgsocket"
        self.port = free_port()
        self.started = False
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []

    def start(self) -> None:
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        if self.as_user:
            shutil.chown(self.work_dir, user="postgres")
            shutil.chown(self.socket_dir, user="postgres")
        run(self.as_user + [str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", "postgres",
                            "--auth=trust", "-E", "UTF8", "--locale=C"])
        options = f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 -c max_connections=120"
        self.started = True  # from here on, stop() runs pg_ctl stop
        run(self.as_user + [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-o", options,
                            "-l", str(self.work_dir / "postgres.log"), "-w", "-t", str(POSTGRES_START_TIMEOUT_S),
                            "start"], timeout_s=POSTGRES_START_TIMEOUT_S + 10)

    @property
    def pgbench(self) -> str:
        return shutil.which("pgbench") or str(self.bin_dir / "pgbench")

    def pgbench_command(self, arguments: Sequence[str]) -> list[str]:
        return self.as_user + [self.pgbench, "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", *arguments,
                               "postgres"]

    def owned_dir(self, path: pathlib.Path) -> pathlib.Path:
        """A directory the server's user can write (pgbench's per-transaction logs, as `postgres`)."""
        path.mkdir(parents=True, exist_ok=True)
        if self.as_user:
            shutil.chown(path, user="postgres")
        return path

    def postmaster_pid(self) -> int | None:
        """The postmaster's PID (first line of postmaster.pid): its backends are its children."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        if not self.started:
            return
        completed = run(self.as_user + [str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast",
                                        "-w", "-t", str(int(STOP_TIMEOUT_S)), "stop"],
                        timeout_s=STOP_TIMEOUT_S + 10, check=False)
        if completed.returncode != 0:
            pid_file = self.data_dir / "postmaster.pid"
            if pid_file.exists():
                pid = int(pid_file.read_text().split()[0])
                say(f"pg_ctl stop failed; SIGTERM to postmaster pid {pid}")
                os.kill(pid, signal.SIGTERM)

    def version(self) -> str:
        return run([str(self.bin_dir / "pg_ctl"), "--version"]).stdout.strip()


# --- QuorumDB -------------------------------------------------------------------------------------
def quorumdb_command() -> list[str]:
    found = shutil.which("quorumdb")
    return [found] if found else [sys.executable, "-c", "import sys; from tools.cli import main; sys.exit(main())"]


# Until `quorumdb bench` is wired into the CLI, its module is run directly with the same arguments.
_BENCH_SHIM = ("import argparse, sys; from tools.bench import command as c; p = argparse.ArgumentParser(); "
               "c.add_arguments(p); sys.exit(c.command(p.parse_args()))")


def quorumdb_bench_prefix() -> tuple[list[str] | None, str | None]:
    """The command that runs `quorumdb bench` here, or (None, why not)."""
    try:
        found = run(quorumdb_command() + ["bench", "--help"], timeout_s=60, check=False, cwd=REPO_ROOT)
        if found.returncode == 0:
            return quorumdb_command() + ["bench"], None
        shim = [sys.executable, "-c", _BENCH_SHIM]
        if run(shim + ["--help"], timeout_s=60, check=False, cwd=REPO_ROOT).returncode == 0:
            return shim, None
    except subprocess.TimeoutExpired:
        return None, "`quorumdb bench --help` did not answer within 60 s"
    return None, f"`quorumdb bench --help` exited {found.returncode}: {found.stderr.strip()[-600:]}"


def parse_pg_endpoints(lines: Sequence[str]) -> list[tuple[str, int]]:
    """The PostgreSQL endpoints `quorumdb up` prints after "PostgreSQL endpoints":
    `  compute-az1    127.0.0.1:7703         psql -h ...`, in order, until the next blank line."""
    endpoints: list[tuple[str, int]] = []
    inside = False
    for line in lines:
        if line.startswith("PostgreSQL endpoints"):
            inside = True
            continue
        if not inside:
            continue
        fields = line.split()
        if not fields:
            if endpoints:
                break
            continue
        if len(fields) >= 2 and fields[0].startswith("compute") and ":" in fields[1]:
            host, _, port = fields[1].rpartition(":")
            endpoints.append((host, int(port)))
    return endpoints


class QuorumDBCluster:
    """`quorumdb up --data-dir <tmp> --base-port <free> [--read-mode M]` in a subprocess; ready
    when it prints `ready`. Its node processes are found by their `--config <data dir>/cluster.toml`."""

    def __init__(self, work_dir: pathlib.Path, base_port: int, read_mode: str | None = None, name: str = "qdb"):
        self.work_dir = work_dir
        self.base_port = base_port
        self.read_mode = read_mode
        self.data_dir = work_dir / name
        self.command = quorumdb_command() + ["up", "--data-dir", str(self.data_dir), "--base-port", str(base_port)]
        if read_mode is not None:
            self.command += ["--read-mode", read_mode]
        self.process: subprocess.Popen | None = None
        self.lines: list[str] = []
        self._ready = threading.Event()

    def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            if len(self.lines) < 10_000:  # bounded: `up` prints a line per event, a few dozen in a run
                self.lines.append(line.rstrip("\n"))
            if "ready" in line:
                self._ready.set()

    def start(self, on_line: Callable[[str], None] | None = None) -> None:
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, text=True, cwd=REPO_ROOT)
        threading.Thread(target=self._pump, daemon=True).start()
        deadline = time.monotonic() + QUORUMDB_READY_TIMEOUT_S
        while not self._ready.wait(timeout=POLL_INTERVAL_S):
            if self.process.poll() is not None:
                raise RuntimeError(f"quorumdb up exited {self.process.returncode}:\n" + "\n".join(self.lines[-30:]))
            if time.monotonic() > deadline:
                raise RuntimeError(f"quorumdb up not ready within {QUORUMDB_READY_TIMEOUT_S:.0f} s:\n"
                                   + "\n".join(self.lines[-30:]))

    @property
    def config_path(self) -> pathlib.Path:
        return self.data_dir / "cluster.toml"

    def pg_endpoints(self) -> list[tuple[str, int]]:
        """Compute nodes' PostgreSQL endpoints, as `up` printed them (docs/POSTGRES.md)."""
        endpoints = parse_pg_endpoints(self.lines)
        if not endpoints:
            raise RuntimeError("`quorumdb up` printed no PostgreSQL endpoints")
        return endpoints

    def token(self, expires: str = "6h") -> str:
        """A PostgreSQL password for user admin (a run of the comparison lasts well under 6 h)."""
        completed = run(quorumdb_command() + ["token", "--user", "admin", "--expires", expires,
                                              "--data-dir", str(self.data_dir)], cwd=REPO_ROOT)
        return completed.stdout.strip()

    def status_json(self) -> str | None:
        """`quorumdb status --json` (the compute nodes' read counters), or None if it failed."""
        try:
            completed = run(quorumdb_command() + ["status", "--base-port", str(self.base_port), "--json"],
                            timeout_s=60, check=False, cwd=REPO_ROOT)
        except subprocess.TimeoutExpired:
            return None
        return completed.stdout

    def bench_command(self, prefix: list[str], workload: str, clients: int, duration_s: float,
                      warmup_s: float | None = None, read_mode: str | None = None, rows: int | None = None,
                      scale: int | None = None, setup: bool = True) -> list[str]:
        command = prefix + ["--workload", workload, "--clients", str(clients),
                            "--duration", f"{duration_s:g}", "--base-port", str(self.base_port), "--json"]
        if warmup_s is not None:
            command += ["--warmup", f"{warmup_s:g}"]
        if read_mode is not None:
            command += ["--read-mode", read_mode]
        if rows is not None:
            command += ["--rows", str(rows)]
        if scale is not None:
            command += ["--scale", str(scale)]
        if not setup:
            command.append("--no-setup")
        return command

    def stop(self) -> None:
        if self.process is not None:
            # `up` stops its 15 nodes on SIGTERM (up to its own stop timeout), so wait longer here.
            stop_process(self.process, "quorumdb up", timeout_s=STOP_TIMEOUT_S * 3)
        # Should `up` have died without stopping its nodes, they are still ours: stop them by PID.
        from tools.bench import procstat  # noqa: PLC0415
        for pid, name in procstat.cluster_node_pids(self.config_path).items():
            say(f"{name} (pid {pid}) outlived `quorumdb up`: SIGTERM")
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + STOP_TIMEOUT_S
            while time.monotonic() < deadline and procstat.is_running(pid):
                time.sleep(POLL_INTERVAL_S)
            if procstat.is_running(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
