"""The one catalog answer the engine cannot compute yet: queries over catalogs that are always empty.

Theory of operation
-------------------
Catalog queries run in the engine over pg_catalog's relations (pg_catalog.py). A few that
tools send read catalogs of features QuorumDB does not have (publications, policies,
statistics objects) with constructs the engine lacks: psql's \\d asks
`... FROM pg_catalog.generate_series(0, array_upper(pr.prattrs::int2[], 1)) s ...
WHERE attnum = prattrs[s]` of pg_publication_rel. Those catalogs hold no rows here, so a query
whose every UNION branch inner-joins one of them truly answers no rows, whatever the rest of
it says.

`recognise(sql)` decides that on the parse tree (never on the text): it returns an answer (no
rows, the select list's column names) or None. pgwire/bridge.py consults it only after the
engine failed to compile the statement with 0A000 / 42883, and only for statements whose
tokens name such a catalog (`mentions_empty_catalog`); anything else gets the engine's own
error, which names the missing function or construct.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Awaitable, Callable

import sqlglot
from sqlglot import exp
from sqlglot.errors import SqlglotError

from compute_node.sql import pg_catalog
from compute_node.sql.catalog import identifier_name
from quorumdb import sqllex

# Catalogs whose relation has no rows in QuorumDB (features it does not have).
ALWAYS_EMPTY_CATALOGS = frozenset(name for name, relation in pg_catalog.CATALOG_RELATIONS.items()
                                  if relation.build is pg_catalog.EMPTY_BUILD)
_EMPTY_WORDS = frozenset(name.upper() for name in ALWAYS_EMPTY_CATALOGS)


@dataclasses.dataclass
class CatalogResult:
    columns: list[tuple[str, str]]
    rows: list[tuple]
    tag: str


Answer = Callable[[Any], Awaitable[CatalogResult]]


def mentions_empty_catalog(statement: str) -> bool:
    """Whether the statement's tokens (string literals and quoted names aside) name an
    always-empty catalog: the cheap test before the engine is asked to compile it."""
    return any(word in _EMPTY_WORDS for word in sqllex.words(statement))


def recognise(sql: str) -> Answer | None:
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except SqlglotError:
        return None
    branches = _union_branches(tree)
    if not branches or not all(_inner_joins_empty_catalog(branch) for branch in branches):
        return None
    columns = [(_output_name(item), "text") for item in branches[0].expressions]

    async def answer(context: Any) -> CatalogResult:
        return CatalogResult(columns, [], "SELECT 0")

    return answer


def _union_branches(tree: exp.Expression) -> list[exp.Select]:
    """The SELECTs of a UNION [ALL] tree (an INTERSECT or EXCEPT is not decided here: [])."""
    if isinstance(tree, exp.Select):
        return [tree]
    if isinstance(tree, exp.Union) and not isinstance(tree, (exp.Intersect, exp.Except)):
        left, right = _union_branches(tree.this), _union_branches(tree.expression)
        return left + right if left and right else []
    return []


def _inner_joins_empty_catalog(select: exp.Select) -> bool:
    from_clause = select.args.get("from") or select.args.get("from_")
    if from_clause is None:
        return False
    joins = select.args.get("joins") or []
    if any(join.side or join.kind in ("OUTER", "FULL") for join in joins):
        return False  # an outer join keeps rows of the other side: not empty by construction
    items = [from_clause.this] + [join.this for join in joins]
    return any(_is_empty_catalog(item) for item in items)


def _is_empty_catalog(item: exp.Expression) -> bool:
    if not isinstance(item, exp.Table) or not isinstance(item.this, exp.Identifier):
        return False
    schema = item.args.get("db")
    if schema is not None and identifier_name(schema) != "pg_catalog":
        return False
    return identifier_name(item.this) in ALWAYS_EMPTY_CATALOGS


def _output_name(item: exp.Expression) -> str:
    from compute_node.sql.expressions import output_name
    return output_name(item)
