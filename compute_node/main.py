"""Run a compute node (query processor): `serve(cluster, node, stop)`.

Wires the Backend (quorum storage reads + adjudicator client), the session
servicer, the readiness probe behind Status health and the idle-session reaper.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

from compute_node import metrics as compute_node_metrics
from compute_node.cluster.backend import QuorumBackend, Readiness
from compute_node.cluster.region_view import RegionView
from compute_node.service import ComputeService
from quorumdb import config as config_mod
from quorumdb import aio, limits, rpc, runtime
from quorumdb.pb import compute_pb2_grpc

log = logging.getLogger("compute_node.main")


async def serve(cluster: config_mod.ClusterConfig, node: config_mod.NodeConfig, stop: asyncio.Event) -> None:
    from compute_node.sessions.session import Session  # the SQL layer, imported only where it runs
    from compute_node.sql.engine import Engine

    channels = rpc.Channels()
    backend = QuorumBackend(cluster, node, channels)
    backend.region_view = RegionView(cluster, channels)  # a Global Database's region role (docs/REGIONS.md)
    backend.region_view.start()
    readiness = Readiness(limits.READINESS_FRESH_S)
    engine = Engine()  # one schema cache for every session of this node, gRPC and PostgreSQL alike
    session_factory = functools.partial(Session, engine=engine)
    service = ComputeService(node, backend, session_factory=session_factory, health=lambda: readiness.health,
                             engine_detail=engine.status_detail, region=cluster.region)
    compute_metrics = compute_node_metrics.attach(backend, service, engine, readiness)  # None: no /metrics
    server = rpc.new_server()
    compute_pb2_grpc.add_ComputeServicer_to_server(service, server)
    rpc.add_node_port(server, cluster, node)
    await server.start()
    log.info("compute %s serving on %s", node.name, node.address)
    pg_server = None
    if not runtime.simulated():  # the simulation drives the gRPC client API only: no sockets there
        from compute_node.pgwire.server import start_for_node  # the PostgreSQL endpoint beside gRPC
        pg_server = await start_for_node(cluster, node, backend, session_factory)
    if compute_metrics is not None:
        compute_metrics.pg_server = pg_server
    tasks = [
        asyncio.create_task(_probe_loop(backend, readiness, stop), name="readiness-probe"),
        asyncio.create_task(_reap_loop(service, stop), name="session-reaper"),
    ]
    try:
        await stop.wait()
    finally:
        if pg_server is not None:
            await pg_server.close()
        await server.stop(grace=1.0)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await service.close_all()
        await backend.region_view.close()
        await backend.adjudicators.close()
        await backend.storage.close()
        await channels.close()
        log.info("compute %s stopped", node.name)


async def _probe_loop(backend: QuorumBackend, readiness: Readiness, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            async with asyncio.timeout(limits.READ_QUORUM_TIMEOUT_S + limits.STATUS_TIMEOUT_S):
                problem = await backend.probe()
        except TimeoutError:
            problem = "readiness probe timed out"
        except Exception as error:  # keep probing; report why
            log.exception("readiness probe failed")
            problem = f"readiness probe failed: {error!r}"
        previous = readiness.health
        readiness.record(problem)
        if readiness.health != previous:
            log.info("health: %s", readiness.health)
        await aio.wait_event(stop, limits.READINESS_PROBE_INTERVAL_S)


async def _reap_loop(service: ComputeService, stop: asyncio.Event) -> None:
    while not stop.is_set():
        await aio.wait_event(stop, limits.SESSION_REAP_INTERVAL_S)
        await service.reap_idle()
