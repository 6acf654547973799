"""The SQL engine of the compute node.

parser (text -> statements) -> catalog/types (schema and values) -> expressions
(typed evaluators) -> planner (point / range / index / full access paths, pure) ->
query (the SELECT program: filter, group, sort, limit, pure) -> select (FROM clauses,
joins, subqueries, CTEs, set operations: compile, fetch, run) -> executor (DML, DDL,
EXPLAIN; with select.py's fetch phase, the only parts that await), over a Transaction
with its write buffer. compute_node/sessions/session.py drives it per client session.
This package file imports nothing: importing any module of the engine must not pull in the rest.
docs/SQL.md describes the supported surface.
"""
