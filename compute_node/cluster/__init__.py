"""The compute node's cluster client: how a transaction reaches the rest of the cluster.

Below the SQL engine and knowing nothing of SQL: `backend.py` is what a session's transaction
calls (read at a timestamp, commit a write set); `storage_reader.py` reads 3 of 6 storage copies
(or one, in single-copy mode) over `read_stream.py`, deciding with the pure `read_core.py`;
`adjudicator_client.py` sends commits to the adjudicator leader over `commit_stream.py`;
`region_view.py` keeps a secondary region's replicated point; `trace.py` records where a
transaction's time went (EXPLAIN ANALYZE).
"""
