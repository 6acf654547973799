"""Every node's Status, asked concurrently with a deadline each: what `quorumdb status` and the
recovery tools read of a running cluster. A node that does not answer in time is None."""
from __future__ import annotations

import asyncio
from typing import Sequence

import grpc

from quorumdb import config as config_mod
from quorumdb import limits, rpc
from quorumdb.pb import adjudicator_pb2_grpc, common_pb2, compute_pb2_grpc, journal_pb2_grpc, storage_pb2_grpc

STUBS = {
    "journal": journal_pb2_grpc.JournalStub,
    "adjudicator": adjudicator_pb2_grpc.AdjudicatorStub,
    "storage": storage_pb2_grpc.StorageStub,
    "compute": compute_pb2_grpc.ComputeStub,
}


async def _one_status(channels: rpc.Channels, node: config_mod.NodeConfig,
                      timeout_s: float) -> common_pb2.NodeStatus | None:
    stub = STUBS[node.service](channels.get(node.address))
    try:
        return await stub.Status(common_pb2.StatusRequest(), timeout=timeout_s)
    except grpc.RpcError:
        return None


async def gather_statuses(nodes: Sequence[config_mod.NodeConfig], timeout_s: float = limits.STATUS_TIMEOUT_S,
                          channels: rpc.Channels | None = None) -> list[common_pb2.NodeStatus | None]:
    """Every node's Status, asked concurrently; None for a node that did not answer in time."""
    own = channels is None
    channels = rpc.Channels() if own else channels
    try:
        return list(await asyncio.gather(*(_one_status(channels, node, timeout_s) for node in nodes)))
    finally:
        if own:
            await channels.close()


def fetch_statuses(nodes: Sequence[config_mod.NodeConfig],
                   timeout_s: float = limits.STATUS_TIMEOUT_S) -> list[common_pb2.NodeStatus | None]:
    return asyncio.run(gather_statuses(nodes, timeout_s))
