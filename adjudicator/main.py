"""Wires an adjudicator node: clock, channels, the AdjudicatorNode and its gRPC server."""
from __future__ import annotations

import asyncio
import functools
import logging

from adjudicator import metrics as adjudicator_metrics
from adjudicator.metrics import CommitTimeline, TimedJournalWriter
from adjudicator.service import AdjudicatorNode, AdjudicatorService
from quorumdb import metrics, rpc, runtime
from quorumdb.config import ClusterConfig, NodeConfig
from quorumdb.pb import adjudicator_pb2_grpc

log = logging.getLogger("adjudicator")

# Time in-flight RPCs get to finish when the node stops.
SHUTDOWN_GRACE_S = 0.5


async def serve(cluster: ClusterConfig, node: NodeConfig, stop: asyncio.Event) -> None:
    assert node.service == "adjudicator", node
    channels = rpc.Channels()
    timeline = CommitTimeline(metrics.current())  # batch timings: EXPLAIN ANALYZE, /metrics
    adjudicator = AdjudicatorNode(cluster, node, runtime.clock(cluster.clock_error_ns), channels,
                                  writer_factory=functools.partial(TimedJournalWriter, timeline), timeline=timeline)
    adjudicator_metrics.attach(adjudicator, timeline)
    server = rpc.new_server()
    adjudicator_pb2_grpc.add_AdjudicatorServicer_to_server(AdjudicatorService(adjudicator), server)
    rpc.add_node_port(server, cluster, node)
    await server.start()
    log.info("adjudicator %s serving on %s", node.name, node.address)
    try:
        await adjudicator.start()
        await stop.wait()
    finally:
        # Step down first (queued commits get NOT_LEADER, in-flight ones UNKNOWN), then stop serving.
        await adjudicator.close()
        await server.stop(SHUTDOWN_GRACE_S)
        await channels.close()
