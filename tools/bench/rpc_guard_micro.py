"""CPU per gRPC call and per streamed message of the partition guard: old (interceptors) vs new.

    python tools/bench/rpc_guard_micro.py [--rounds 20] [--calls 1000] [--messages 2500] [--old-ref 4409e3f]

Three builds of `quorumdb/rpc.py`, each serving the Storage service (the generated stubs and
`add_StorageServicer_to_server`, so the registered-method path real nodes use) from its own
server process on 127.0.0.1, called from this process, both on uvloop as node processes are:

* old:   rpc.py as of --old-ref (read with `git show`, nothing checked out): client
         interceptors on the node channel, a server interceptor, a task per streamed message;
* new:   the working tree's rpc.py;
* plain: the same without an identity (no guard at all): the floor both are measured against.

The server process plays storage-az1-a and the client compute-az2, each with a partition state
and no link cut. Per variant and round: `--calls` sequential unary Status calls, then one
ReadCheckpoint stream of `--messages` small messages (an async-generator handler, like the
journal's Subscribe). CPU is this process's `time.process_time()` plus the server's CPU time
(the sum over its threads of /proc/PID/task/TID/schedstat, in ns), before and after each
measurement. The variants
alternate in short rounds (old, new, plain; then new, plain, old; ...: each round starts with
the next one) so that a change in machine load hits them alike: on a shared machine compare ratios within one run, never absolute figures
across runs. The defaults (20,000 calls and 50,000 messages per variant) take about 40 s.
Every call has a deadline; every server process is stopped by its PID.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import types

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO_ROOT))

from quorumdb import config as config_mod
from quorumdb import netfault
from tools.launcher import free_base_port, stop_process
from quorumdb.pb import common_pb2, storage_pb2, storage_pb2_grpc

SERVER = "storage-az1-a"
CLIENT = "compute-az2"
VARIANTS = ("old", "new", "plain")
DEFAULT_OLD_REF = "4409e3f"  # the commit before rpc.py dropped its interceptors
CALL_TIMEOUT_S = 5.0
STREAM_TIMEOUT_S = 120.0
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0
WARMUP_CALLS = 500
WORK_COUNT_OPS = 500  # calls, and messages, per count_work measurement
CHUNK = b"x" * 64  # a small message, like a Subscribe reply carrying a heartbeat


def load_rpc(variant: str, old_ref: str) -> types.ModuleType:
    """The rpc module of a variant: the working tree's, or the source at `old_ref` as its own module."""
    if variant != "old":
        from quorumdb import rpc
        return rpc
    source = subprocess.run(["git", "-C", str(REPO_ROOT), "show", f"{old_ref}:quorumdb/rpc.py"],
                            check=True, capture_output=True, text=True, timeout=30).stdout
    spec = importlib.util.spec_from_loader("quorumdb_rpc_old", loader=None)
    module = importlib.util.module_from_spec(spec)
    exec(compile(source, f"{old_ref}:quorumdb/rpc.py", "exec"), module.__dict__)
    return module


def install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - a dependency of quorumdb
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# --- the server process ----------------------------------------------------------------------------
class BenchStorage(storage_pb2_grpc.StorageServicer):
    async def Status(self, request, context):
        return common_pb2.NodeStatus(name=SERVER)

    async def ReadCheckpoint(self, request, context):
        for offset in range(request.min_index):  # min_index: how many messages to send
            yield storage_pb2.CheckpointChunk(index=1, total_bytes=request.min_index, offset=offset, data=CHUNK)


async def serve(variant: str, base_port: int, data_dir: str, old_ref: str) -> None:
    rpc = load_rpc(variant, old_ref)
    cluster = config_mod.default_cluster(data_dir, base_port=base_port)
    state = None if variant == "plain" else netfault.PartitionState(cluster, SERVER)
    server = rpc.new_server(state)
    storage_pb2_grpc.add_StorageServicer_to_server(BenchStorage(), server)
    server.add_insecure_port(cluster.node(SERVER).address)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()  # the parent stops this process by PID (SIGTERM, then SIGKILL)
    await server.stop(None)


# --- the measuring process ----------------------------------------------------------------------------
def process_cpu_s(pid: int) -> float:
    """CPU seconds of every thread of `pid` so far: schedstat's nanoseconds (utime + stime ticks
    of 10 ms are too coarse for one round), else /proc/PID/stat."""
    try:
        return sum(int((task / "schedstat").read_text().split()[0])
                   for task in pathlib.Path(f"/proc/{pid}/task").iterdir()) / 1e9
    except (OSError, ValueError, IndexError):
        fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Variant:
    def __init__(self, name: str, rpc: types.ModuleType, base_port: int, data_dir: str,
                 process: subprocess.Popen, in_flight: int) -> None:
        self.name = name
        self.in_flight = in_flight
        self.cluster = config_mod.default_cluster(data_dir, base_port=base_port)
        self.process = process
        state = None if name == "plain" else netfault.PartitionState(self.cluster, CLIENT)
        self.channels = rpc.Channels(state)
        self.stub = storage_pb2_grpc.StorageStub(self.channels.get(self.cluster.node(SERVER).address))

    async def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                await self.stub.Status(common_pb2.StatusRequest(), timeout=1.0)
                return
            except Exception:  # noqa: BLE001 - not listening yet; bounded by the deadline
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the {self.name} server did not answer within {READY_TIMEOUT_S} s")
                await asyncio.sleep(0.1)

    async def unary(self, calls: int) -> tuple[float, float]:
        request = common_pb2.StatusRequest()
        status = self.stub.Status
        return await self._measure(lambda: _calls(status, request, calls, self.in_flight), calls)

    async def stream(self, messages: int) -> tuple[float, float]:
        async def run():
            call = self.stub.ReadCheckpoint(storage_pb2.ReadCheckpointRequest(min_index=messages),
                                            timeout=STREAM_TIMEOUT_S)
            received = 0
            async for _ in call:
                received += 1
            assert received == messages, f"{self.name}: {received} of {messages} messages"
        return await self._measure(run, messages)

    async def _measure(self, work, count: int) -> tuple[float, float]:
        """(client, server) CPU microseconds per operation."""
        client0, server0 = time.process_time(), process_cpu_s(self.process.pid)
        await work()
        client1, server1 = time.process_time(), process_cpu_s(self.process.pid)
        return (client1 - client0) / count * 1e6, (server1 - server0) / count * 1e6


async def _calls(status, request, calls: int, in_flight: int) -> None:
    async def caller(count: int) -> None:
        for _ in range(count):
            await status(request, timeout=CALL_TIMEOUT_S)

    share, extra = divmod(calls, in_flight)
    await asyncio.gather(*(caller(share + (i < extra)) for i in range(in_flight)))


async def measure(args, servers: dict[str, tuple[int, subprocess.Popen]], data_dir: str) -> dict:
    variants = [Variant(name, load_rpc(name, args.old_ref), port, data_dir, process, args.in_flight)
                for name, (port, process) in servers.items()]
    results: dict[str, dict[str, list[tuple[float, float]]]] = {v.name: {"unary": [], "stream": []} for v in variants}
    try:
        for variant in variants:
            await variant.wait_ready()
            await variant.unary(WARMUP_CALLS)
            await variant.stream(WARMUP_CALLS)
        for round_number in range(1, args.rounds + 1):
            shift = (round_number - 1) % len(variants)
            for variant in variants[shift:] + variants[:shift]:
                unary = await variant.unary(args.calls)
                stream = await variant.stream(args.messages)
                results[variant.name]["unary"].append(unary)
                results[variant.name]["stream"].append(stream)
                print(f"round {round_number:2} {variant.name:5}: unary call {unary[0]:6.1f} + {unary[1]:6.1f} = "
                      f"{sum(unary):6.1f} us CPU (client + server); stream message {stream[0]:5.1f} + "
                      f"{stream[1]:5.1f} = {sum(stream):5.1f} us", flush=True)
    finally:
        for variant in variants:
            await variant.channels.close()
    return results


async def count_work(rpc: types.ModuleType, variant: str, data_dir: str, count: int) -> dict[str, float]:
    """asyncio tasks created and Python frames entered (sys.setprofile "call" events, which
    include each resumption of a coroutine) per unary call and per streamed message, client and
    server in this one process. Deterministic, unlike CPU time on a shared machine: the Python
    work each variant does per operation. Each figure is the difference between 2N and N
    operations, so that the fixed work of a measurement (and of opening a stream) cancels out.
    """
    cluster = config_mod.default_cluster(data_dir, base_port=free_base_port())
    server_state = None if variant == "plain" else netfault.PartitionState(cluster, SERVER)
    client_state = None if variant == "plain" else netfault.PartitionState(cluster, CLIENT)
    server = rpc.new_server(server_state)
    storage_pb2_grpc.add_StorageServicer_to_server(BenchStorage(), server)
    server.add_insecure_port(cluster.node(SERVER).address)
    await server.start()
    channels = rpc.Channels(client_state)
    stub = storage_pb2_grpc.StorageStub(channels.get(cluster.node(SERVER).address))
    loop = asyncio.get_running_loop()
    tasks = frames = 0

    def counting_factory(loop, coro, **kwargs):
        nonlocal tasks
        tasks += 1
        return asyncio.Task(coro, loop=loop, **kwargs)

    def profiler(frame, event, arg) -> None:
        nonlocal frames
        if event == "call":
            frames += 1

    async def counted(work) -> tuple[int, int]:
        nonlocal tasks, frames
        tasks = frames = 0
        loop.set_task_factory(counting_factory)
        sys.setprofile(profiler)
        try:
            await work()
        finally:
            sys.setprofile(None)
            loop.set_task_factory(None)
        return tasks, frames

    async def stream(messages: int) -> None:
        call = stub.ReadCheckpoint(storage_pb2.ReadCheckpointRequest(min_index=messages), timeout=STREAM_TIMEOUT_S)
        async for _ in call:
            pass

    def per_operation(more: tuple[int, int], fewer: tuple[int, int]) -> tuple[float, float]:
        return (more[0] - fewer[0]) / count, (more[1] - fewer[1]) / count

    request = common_pb2.StatusRequest()
    try:
        await _calls(stub.Status, request, 10, 1)  # connected before counting
        tasks_call, frames_call = per_operation(await counted(lambda: _calls(stub.Status, request, 2 * count, 1)),
                                                await counted(lambda: _calls(stub.Status, request, count, 1)))
        tasks_message, frames_message = per_operation(await counted(lambda: stream(2 * count)),
                                                      await counted(lambda: stream(count)))
    finally:
        await channels.close()
        await server.stop(None)
    return {"tasks_call": tasks_call, "frames_call": frames_call,
            "tasks_message": tasks_message, "frames_message": frames_message}


def report(results: dict, rounds: int) -> None:
    print()
    print("CPU microseconds, client + server = total: the median over the rounds; then the median and")
    print("the range of the per-round ratio to old (each round's variants ran back to back)")
    for kind, unit in (("unary", "per unary call"), ("stream", "per streamed message")):
        print(f"{unit}:")
        for name in VARIANTS:
            samples = results[name][kind]
            client = statistics.median(s[0] for s in samples)
            server = statistics.median(s[1] for s in samples)
            total = statistics.median(sum(s) for s in samples)
            ratios = [sum(samples[i]) / sum(results["old"][kind][i]) for i in range(rounds)]
            print(f"  {name:5} {client:6.1f} + {server:6.1f} = {total:6.1f}   vs old: median "
                  f"{statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})")


def start_server(variant: str, base_port: int, data_dir: str, old_ref: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(pathlib.Path(__file__).resolve()), "--serve", variant,
                             "--base-port", str(base_port), "--data-dir", data_dir, "--old-ref", old_ref],
                            cwd=REPO_ROOT)


def stop_server(process: subprocess.Popen) -> None:
    stop_process(process, STOP_TIMEOUT_S)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--calls", type=int, default=1_000, help="unary calls per variant and round")
    parser.add_argument("--messages", type=int, default=2_500, help="streamed messages per variant and round")
    parser.add_argument("--in-flight", type=int, default=1, help="unary calls in flight at once")
    parser.add_argument("--old-ref", default=DEFAULT_OLD_REF, help="git revision of the old rpc.py")
    parser.add_argument("--serve", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--base-port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    install_uvloop()
    if args.serve:
        asyncio.run(serve(args.serve, args.base_port, args.data_dir, args.old_ref))
        return
    load_rpc("old", args.old_ref)  # fail early on a bad revision
    servers: dict[str, tuple[int, subprocess.Popen]] = {}
    with tempfile.TemporaryDirectory(prefix="rpc-guard-micro-") as data_dir:
        try:
            for name in VARIANTS:
                port = free_base_port()
                while port in {used for used, _ in servers.values()}:  # each server its own address
                    port = free_base_port()
                servers[name] = (port, start_server(name, port, data_dir, args.old_ref))
            started = time.monotonic()
            results = asyncio.run(measure(args, servers, data_dir))
            report(results, args.rounds)
            print("\nPython work, client + server in one process: asyncio tasks created and Python frames entered")
            for name in VARIANTS:
                work = asyncio.run(count_work(load_rpc(name, args.old_ref), name, data_dir, WORK_COUNT_OPS))
                print(f"  {name:5} per unary call {work['tasks_call']:.2f} tasks, {work['frames_call']:5.1f} frames; "
                      f"per streamed message {work['tasks_message']:.2f} tasks, {work['frames_message']:5.1f} frames")
            print(f"\n{args.rounds} rounds of {args.calls} calls and {args.messages} messages per variant "
                  f"in {time.monotonic() - started:.0f} s; load average {os.getloadavg()[0]:.1f}")
        finally:
            for _, process in servers.values():
                stop_server(process)


if __name__ == "__main__":
    main()
