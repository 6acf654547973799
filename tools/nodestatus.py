"""Every node's Status, asked concurrently with a deadline each: what `quorumdb status` and the
recovery tools read of a running cluster. A node that does not answer in time is None.

The caller says what to present (tools/toolcreds.py): its channels, or its credentials."""
from __future__ import annotations

import asyncio
from typing import Sequence

import grpc

from quorumdb import config as config_mod
from quorumdb import credentials as credentials_mod
from quorumdb import limits, rpc
from tools import toolcreds
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


Credentials = credentials_mod.Source | credentials_mod.ClientCredentials


async def gather_statuses(nodes: Sequence[config_mod.NodeConfig], timeout_s: float = limits.STATUS_TIMEOUT_S,
                          channels: rpc.Channels | toolcreds.Channels | None = None,
                          credentials: Credentials | None = None) -> list[common_pb2.NodeStatus | None]:
    """Every node's Status, asked concurrently; None for a node that did not answer in time.
    On `channels`, else on channels of its own with `credentials`."""
    own = channels is None
    if own and credentials is None:
        raise TypeError("gather_statuses needs channels or credentials")
    channels = toolcreds.Channels(credentials) if own else channels
    try:
        return list(await asyncio.gather(*(_one_status(channels, node, timeout_s) for node in nodes)))
    finally:
        if own:
            await channels.close()


def fetch_statuses(nodes: Sequence[config_mod.NodeConfig], timeout_s: float = limits.STATUS_TIMEOUT_S, *,
                   credentials: Credentials) -> list[common_pb2.NodeStatus | None]:
    return asyncio.run(gather_statuses(nodes, timeout_s, credentials=credentials))
