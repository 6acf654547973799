"""QuorumDB: a runnable model of Aurora's quorum storage and Aurora DSQL's transactions.

This package holds what every service shares: cluster configuration, the clock,
key encoding, limits, the gRPC helpers, the generated protobuf code (`pb`), the
Python client (`connect`), the `quorumdb` CLI and the `qsql` shell. The services
themselves live in the top-level packages `journal`, `adjudicator`,
`storage_node` and `compute_node`.
"""

__version__ = "0.1.0"


def connect(host: str = "127.0.0.1", port: int = 7100, **kwargs):
    """Open a session on a compute node. See `quorumdb.client.Connection`."""
    from quorumdb.client import connect as _connect

    return _connect(host, port, **kwargs)
