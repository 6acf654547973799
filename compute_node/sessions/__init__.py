"""Client sessions of a compute node, above the SQL engine and below the protocols.

`session.py` runs one client session: transaction blocks, SET/SHOW, statement caching,
autocommit retries, EXPLAIN ANALYZE; `copy.py` is COPY FROM/TO for both endpoints (the
PostgreSQL protocol and the gRPC Copy call). The gRPC service (compute_node/service.py) and
the PostgreSQL endpoint (compute_node/pgwire/) sit on top of sessions.
"""
