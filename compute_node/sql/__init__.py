"""The SQL engine of the compute node.

parser (text -> statements) -> catalog/types (schema and values) -> expressions
(typed evaluators) -> planner (point / range / full access paths, pure) -> query
(SELECT programs, pure) -> executor (the only part that awaits, over a Transaction
with its write buffer). compute_node/session.py drives it per client session.
"""
