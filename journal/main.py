"""Run a journal replica: open the store, build the core, serve gRPC until `stop` is set."""
from __future__ import annotations

import asyncio
import logging

from journal import metrics as journal_metrics
from journal.core import ReplicaCore
from journal.service import JournalService
from journal.store import JournalStore
from quorumdb import members, rpc, runtime
from quorumdb.config import ClusterConfig, NodeConfig
from quorumdb.pb import journal_pb2_grpc

log = logging.getLogger("journal.main")

# Seconds in-flight RPCs get to finish at shutdown.
SHUTDOWN_GRACE_S = 1.0


async def serve(cluster: ClusterConfig, node: NodeConfig, stop: asyncio.Event) -> None:
    store = JournalStore(cluster.node_data_dir(node.name) / "journal", segment_entries=cluster.journal_segment_entries)
    meta, entries = await runtime.offload(store.open)
    clock = runtime.clock(cluster.clock_error_ns)
    # A witness region of an active-active cluster has no storage: its replicas drop entries by
    # the writer's hold alone (journal/core.py).
    active_active = members.active_active(cluster) is not None
    core = ReplicaCore([n.name for n in cluster.storages], meta, entries, segment_entries=cluster.journal_segment_entries,
                       hold_required=bool(cluster.region), witness=active_active and not cluster.storages,
                       active_active=active_active)
    core.started(clock.now().latest)  # lease grants made before a restart are forgotten: honour them anyway
    log.info(
        "journal log: first_index %d last_index %d commit_index %d promised epoch %d",
        core.first_index, core.last_index, core.commit_index, core.promised_epoch,
    )
    service = JournalService(node.name, node.az, core, store, clock, region=cluster.region)
    journal_metrics.attach(service)  # /metrics, when the cluster serves them
    server = rpc.new_server()
    journal_pb2_grpc.add_JournalServicer_to_server(service, server)
    rpc.add_node_port(server, cluster, node)
    await server.start()
    try:
        await stop.wait()
    finally:
        service.close()
        await server.stop(SHUTDOWN_GRACE_S)
