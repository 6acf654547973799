"""What the tools present to a cluster's nodes and supervisor (quorumdb/credentials.py).

A tool that has the cluster's data directory (`quorumdb status/chaos/top/backtrack/...`) uses
it: the cluster's CA, the admin certificate (the journal, adjudicator and storage nodes require
a certificate of the cluster) and a token minted from its secret (compute nodes and the
supervisor require a token). `--token` / $QUORUMDB_TOKEN and `--ca` / $QUORUMDB_CA replace the
token and the CA: without a data directory, both are needed (`quorumdb.credentials.resolve`,
the same rule as qsql's and the Python client's). A cluster started with `quorumdb up
--insecure` is talked to in plaintext.

`Channels` has rpc.Channels' interface (get, get_remote, member, close), for the library code
the tools drive, with every channel made by `rpc.client_channel` with these credentials; a
long-running tool (top, the console's watcher) gets fresh channels with a fresh token before
the one it minted expires.
"""
from __future__ import annotations

import argparse
import asyncio
import pathlib

import grpc

from quorumdb import config as config_mod
from quorumdb import credentials as credentials_mod
from quorumdb import rpc

DEFAULT_DATA_DIR = credentials_mod.DEFAULT_DATA_DIR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """--token and --ca (their environment variables are read when the flag is absent)."""
    parser.add_argument("--token", default=None,
                        help="token for the compute nodes and the supervisor (default $QUORUMDB_TOKEN, else one "
                             "minted from the data directory's secret, as `quorumdb token` does)")
    parser.add_argument("--ca", default=None, metavar="PATH",
                        help="the cluster's CA certificate (default $QUORUMDB_CA, else DATA_DIR/certs/ca.crt)")
    parser.add_argument("--insecure", action="store_true",
                        help="plaintext, no token: for a cluster started with `quorumdb up --insecure` (found by "
                             "itself when the data directory is given)")


def source(data_dir: pathlib.Path | str | None = None, token: str | None = None,
           ca: str | None = None, required: bool = True, insecure: bool = False) -> credentials_mod.Source | None:
    """The credentials for the cluster in `data_dir` (None: $QUORUMDB_DATA_DIR, else ./quorumdb-data
    when it holds a cluster, else --token and --ca alone); when there are none, SystemExit with
    the reason (not `required`: None)."""
    if data_dir is not None and not credentials_mod.holds_cluster(data_dir):
        data_dir = None  # e.g. `status --base-port N` run elsewhere: nothing to read there
    try:
        return credentials_mod.Source(token, ca, data_dir, insecure, default_data_dir=DEFAULT_DATA_DIR)
    except credentials_mod.CredentialsError as error:
        if not required:
            return None
        raise SystemExit(f"quorumdb: {error}") from None


def for_args(args: argparse.Namespace, data_dir: pathlib.Path | str | None = None) -> credentials_mod.Source:
    """`source` with the command's --token/--ca/--insecure (flags it lacks count as absent)."""
    return source(data_dir, getattr(args, "token", None), getattr(args, "ca", None),
                  insecure=getattr(args, "insecure", False))


def for_cluster(cluster: config_mod.ClusterConfig, args: argparse.Namespace | None = None) -> credentials_mod.Source:
    """The credentials for a loaded cluster (its data directory; a default layout's has no file)."""
    return source(cluster.data_dir, getattr(args, "token", None), getattr(args, "ca", None),
                  insecure=getattr(args, "insecure", False))


def sync_channel(address: str, creds: credentials_mod.Source | credentials_mod.ClientCredentials) -> grpc.Channel:
    current = creds.current if isinstance(creds, credentials_mod.Source) else creds
    return rpc.sync_client_channel(address, current)


class Channels:
    """rpc.Channels for a tool: one channel per address, each `rpc.client_channel` with the
    tool's credentials; new ones (and a new token) shortly before a minted token expires."""

    def __init__(self, creds: credentials_mod.Source | credentials_mod.ClientCredentials) -> None:
        self._source = creds if isinstance(creds, credentials_mod.Source) else None
        self._credentials = creds.current if isinstance(creds, credentials_mod.Source) else creds
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._retired: set[asyncio.Task] = set()

    @property
    def credentials(self) -> credentials_mod.ClientCredentials:
        return self._credentials

    def get(self, address: str) -> grpc.aio.Channel:
        if self._source is not None and self._source.due():
            self._renew()
        channel = self._channels.get(address)
        if channel is None:
            channel = rpc.client_channel(address, self._credentials)
            self._channels[address] = channel
        return channel

    def get_remote(self, address: str, region: str) -> grpc.aio.Channel:
        return self.get(address)  # a tool is in no region: no WAN rules apply to its calls

    def member(self, member) -> grpc.aio.Channel:
        return self.get(member.address)

    def _renew(self) -> None:
        self._credentials = self._source.renew()
        old, self._channels = list(self._channels.values()), {}
        for channel in old:
            # Calls in flight on an old channel may finish: closed with a grace period, in the background.
            task = asyncio.get_running_loop().create_task(channel.close(grace=5.0))
            self._retired.add(task)
            task.add_done_callback(self._retired.discard)

    async def close(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close(grace=None)
        for task in list(self._retired):
            task.cancel()
