"""What a compute node's SQL engine shares between its sessions.

One `Engine` per compute node: the schema cache (table definitions by catalog version,
schema_cache.py), the statement cache (statements parsed once per shape, statements.py) and
the counters that show them working, and the ranges of sequence values the node reserved
(sequences.py). Sessions of the gRPC API and of the
PostgreSQL endpoint use the same one. A Session built without one gets its own (tests).
"""
from __future__ import annotations

from compute_node.sql.schema_cache import SchemaCache
from compute_node.sql.sequences import NodeSequences
from compute_node.sql.statements import StatementCache


class Engine:
    def __init__(self) -> None:
        self.schema_cache = SchemaCache()
        self.statements = StatementCache()
        self.statement_retries = 0  # statements run again because the cached schema was stale
        self.sequences = NodeSequences()  # the ranges of sequence values this node reserved
        # A new catalog version (a DDL, or a backtrack that rewound the sequences' stored state):
        # the ranges reserved so far are dropped (compute_node/sql/schema_cache.py).
        self.schema_cache.version_listeners.append(self.sequences.catalog_version_changed)

    def status_detail(self) -> str:
        cache = self.schema_cache
        return (f"schema_version={cache.version} schema_tables={len(cache)} schema_hits={cache.hits} "
                f"schema_misses={cache.misses} schema_invalidations={cache.invalidations} "
                f"statement_retries={self.statement_retries} statement_shapes={len(self.statements)} "
                f"statement_hits={self.statements.hits} statement_misses={self.statements.misses}")
