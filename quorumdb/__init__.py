"""QuorumDB: a runnable model of Aurora's quorum storage and Aurora DSQL's transactions.

This package is the shared library, below every node role and tool: cluster configuration
(config, regions, members, quorum), the clock, formats every role agrees on (keys: the row
codec; pushdown: the scan filter spec; copyformat; pgtext; backup_layout), limits, errors (every
SQLSTATE), the gRPC helpers and fault injection (rpc, netfault, wan), the generated protobuf
code (`pb`), the one SQL lexer (sqllex), tokens, the object stores and the Python client
(`connect`). The node roles live in the top-level packages `journal`, `adjudicator`,
`storage_node` and `compute_node`; the command-line tools (`quorumdb`, `qsql`, bench, Jepsen,
the simulation) in `tools`. docs/ARCHITECTURE.md draws the layers.
"""

__version__ = "0.1.0"


def connect(host: str = "127.0.0.1", port: int = 7100, **kwargs):
    """Open a session on a compute node. See `quorumdb.client.Connection`."""
    from quorumdb.client import connect as _connect

    return _connect(host, port, **kwargs)
