"""The functions, casts and operators PostgreSQL tools use on the catalog, compiled like any expression.

Theory of operation
-------------------
psql, drivers, ORMs and pg_dump call catalog functions (format_type, pg_get_indexdef,
pg_table_is_visible, ...) inside ordinary queries over pg_catalog (pg_catalog.py), cast
between oids, names and reg* types (`'t'::regclass`, `c.oid::regclass::text`), match names
with `OPERATOR(pg_catalog.~)` and ask the session who it is (current_user, version(),
current_setting). expressions.py's Compiler hands those nodes to the compilers here; each
returns a `Compiled` as every other expression does, so they work in select lists, WHERE,
ORDER BY and joins.

Functions that need the catalog (anything resolving an oid to a name or a definition) set
`context.needs_catalog` when compiled: the fetch phase then reads the snapshot's table
definitions once (select.fetch) and they evaluate against that `pg_catalog.Snapshot`.

reg* values: an oid cast to regclass/regtype/regnamespace is a `RegOid`, an int that prints
as the object's name, so it compares and joins as the oid and reaches the client (or a
::text cast) as the name, as in PostgreSQL.

What is synthetic: sizes (pg_relation_size & co.) are 0, since QuorumDB does not track them;
privileges are all granted (every object belongs to the one role); comments are NULL.
A catalog function QuorumDB does not have is 42883 naming it (expressions.py _anonymous).

expressions.py and this module are one compiler in two files: this one builds on
expressions.py's Compiled and helpers, and installs its compilers into expressions.py's
handler table when imported (`expressions.install_catalog`, at the end of this module;
select.py imports it, and every statement is compiled below select), so the dependency
runs one way.
"""
from __future__ import annotations

import json
import sys
import operator
import re
from typing import Callable, Sequence

from sqlglot import exp

from compute_node.sql import expressions, pg_catalog, types
from compute_node.sql.expressions import (
    Compiled, _as_text, _binary, _describe_only, _no_function, _no_operator, coerce, constant,
)
from compute_node.sql.pg_catalog import RegOid
from compute_node.sql.types import Kind, SqlType
from quorumdb import errors
from quorumdb.errors import SqlError






# --- regular expressions ------------------------------------------------------------------
_REGEX_OPERATORS = {"~": (False, False), "~*": (True, False), "!~": (False, True), "!~*": (True, True)}


def regex_match(compiler, subject_node, pattern_node, operator_name: str) -> "Compiled":
    """`subject ~ pattern` and its case-insensitive (~*) and negated (!~, !~*) forms, spelled as
    OPERATOR(pg_catalog.~): compiled as the plain operators are (expressions.py _regexp_like,
    PostgreSQL's ARE translated by regex.py)."""
    insensitive, negated = _REGEX_OPERATORS[operator_name]
    node = (exp.RegexpILike if insensitive else exp.RegexpLike)(this=subject_node, expression=pattern_node)
    return compiler.compile(exp.Not(this=node) if negated else node)


def compile_operator(compiler, node: exp.Operator) -> "Compiled":
    """OPERATOR(pg_catalog.~) and friends: the schema-qualified spelling of an operator."""
    name = str(node.args.get("operator") or "").strip()
    bare = name.split(".", 1)[1].strip() if "." in name else name
    if name.count(".") and name.split(".", 1)[0].strip().lower() != "pg_catalog":
        raise SqlError(errors.UNDEFINED_FUNCTION, f"operator does not exist: {name}")
    if bare in _REGEX_OPERATORS:
        return regex_match(compiler, node.this, node.expression, bare)
    plain = {"=": exp.EQ, "<>": exp.NEQ, "!=": exp.NEQ, "<": exp.LT, "<=": exp.LTE, ">": exp.GT, ">=": exp.GTE,
             "+": exp.Add, "-": exp.Sub, "*": exp.Mul, "/": exp.Div, "||": exp.DPipe}.get(bare)
    if plain is None:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"operator OPERATOR({name}) is not supported")
    return compiler.compile(plain(this=node.this, expression=node.expression))


def compile_collate(compiler, node: exp.Collate) -> "Compiled":
    """`x COLLATE "C"` / `COLLATE pg_catalog.default`: text already compares in C (byte) order,
    which is every collation QuorumDB has; any other collation is 0A000."""
    collation = node.expression
    name = collation.name if isinstance(collation, (exp.Column, exp.Identifier, exp.Var)) else \
        collation.sql(dialect="postgres")
    name = str(name).strip('"')
    if name.lower() not in ("default", "c", "posix", "ucs_basic"):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f'collation "{name}" is not supported (text compares in C order)')
    return compiler.compile(node.this)


def compile_dot(compiler, node: exp.Dot) -> "Compiled":
    """`pg_catalog.fn(...)`: a function called by its schema-qualified name."""
    schema = node.this
    if isinstance(schema, exp.Identifier) and schema.name.lower() == "pg_catalog" and isinstance(node.expression,
                                                                                                 exp.Func):
        function = node.expression
        if isinstance(function, exp.Anonymous) and str(function.this).lower() not in FUNCTIONS:
            # sqlglot gives built-ins their own node types (ArrayAgg, Lower, ...) only unqualified:
            # `pg_catalog.array_agg(x ORDER BY y)` arrives as an anonymous call; read it again
            # from the tree's own SQL, unqualified.
            import sqlglot
            unqualified = sqlglot.parse_one(function.sql(dialect="postgres"), read="postgres")
            if not isinstance(unqualified, exp.Anonymous):
                return compiler.compile(unqualified)
        return compiler.compile(function)
    raise SqlError(errors.FEATURE_NOT_SUPPORTED, f'expression "{node.sql(dialect="postgres")}" is not supported')


# --- session functions ----------------------------------------------------------------------
def _constant(value, sql_type: SqlType):
    return constant(value, sql_type)


def _search_path(client) -> list[str]:
    """The schemas of the session's search_path that exist ("$user" names no schema here)."""
    try:
        text = client.setting("search_path")
    except SqlError:
        return ["public"]
    found = []
    for item in text.split(","):
        name = item.strip()
        name = name[1:-1].replace('""', '"') if len(name) >= 2 and name[0] == name[-1] == '"' else name.lower()
        if pg_catalog.namespace_oid(name) is not None and name not in found:
            found.append(name)
    return found


def _current_schema(client) -> str | None:
    path = _search_path(client)
    return path[0] if path else None


def _current_schemas(client, implicit: bool) -> list[str]:
    path = _search_path(client)
    return (["pg_catalog"] if implicit and "pg_catalog" not in path else []) + path


def compile_session_node(compiler, node) -> "Compiled":
    client = compiler.context.client
    if isinstance(node, exp.CurrentVersion):
        return _constant(pg_catalog.VERSION_TEXT, types.TEXT)
    if isinstance(node, (exp.CurrentUser, exp.SessionUser)):
        return _constant(client.user, types.NAME)
    if isinstance(node, exp.CurrentSchema):
        return _constant(_current_schema(client), types.NAME)
    if isinstance(node, (exp.CurrentDatabase, exp.CurrentCatalog)):
        return _constant(client.database, types.NAME)
    if isinstance(node, exp.CurrentSchemas):
        implicit = compiler.compile(node.this)
        return _constant(_current_schemas(client, bool(implicit.constant and implicit.evaluate(()))),
                         types.NAME_ARRAY)
    raise AssertionError(type(node).__name__)


# --- arrays (the catalog's: reloptions, indkey, ...) ------------------------------------------
def compile_array(compiler, node: exp.Array) -> "Compiled":
    """ARRAY(subquery) and ARRAY[a, b]: a list, typed as an array of its elements' type."""
    items = node.expressions
    if len(items) == 1 and isinstance(items[0], (exp.Select, exp.Union, exp.Subquery)):
        select = items[0].this if isinstance(items[0], exp.Subquery) else items[0]
        plan = compiler._subplan(select)
        if len(plan.columns) != 1:
            raise SqlError(errors.SYNTAX_ERROR, "subquery must return only one column")
        run = compiler._run_subplan(plan)
        element = plan.columns[0][1]
        array_type = array_of(element)
        return Compiled(lambda row: types.ArrayValue([inner[0] for inner in run(row)], array_type.element), array_type)
    elements = [compiler.compile(item) for item in items]
    common = types.common_type([e.sql_type for e in elements], "ARRAY") if elements else types.TEXT
    elements = [coerce(e, common) for e in elements]
    evals = [e.evaluate for e in elements]
    array_type = array_of(common)
    return Compiled(lambda row: types.ArrayValue([evaluate(row) for evaluate in evals], array_type.element),
                    array_type)


def array_of(element: SqlType) -> SqlType:
    """The array type of `element` (an untyped literal's is text[])."""
    return SqlType(Kind.ARRAY, element=types.TEXT if element.kind in types.UNTYPED_KINDS else element.base)


def array_element_type(array: SqlType) -> SqlType:
    return array.element if array.element is not None else types.TEXT


def compile_any(compiler, node: exp.Binary, symbol: str, compare) -> "Compiled":
    """`x op ANY (array)` / `x op ALL (array)`: PostgreSQL's rules. ANY is true if the comparison
    holds for some element, NULL if none does and an element (or x) is NULL, else false; ALL is
    false if it fails for some element, NULL if it holds for the rest but a NULL is met, else
    true (so ALL of an empty array is true). `= ANY (subquery)` is IN; ALL (subquery) is 0A000."""
    quantified = node.expression
    if isinstance(quantified, exp.Anonymous) and str(quantified.this).lower() == "all" \
            and len(quantified.expressions) == 1:
        quantified = exp.All(this=quantified.expressions[0])  # sqlglot reads ALL (ARRAY[...]) as a call
    if not isinstance(quantified, (exp.Any, exp.All)) or isinstance(node.this, (exp.Any, exp.All)):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "a quantified comparison (ANY/ALL) on the left is not supported")
    every = isinstance(quantified, exp.All)
    inner = quantified.this.this if isinstance(quantified.this, exp.Paren) else quantified.this
    if isinstance(inner, (exp.Select, exp.Subquery, exp.Union)):
        if symbol == "=" and not every:
            return compiler._in_subquery(exp.In(this=node.this, query=inner if isinstance(inner, exp.Subquery)
                                                else exp.Subquery(this=inner)))
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f"{symbol} {'ALL' if every else 'ANY'} (subquery) is not supported")
    array = compiler.compile(inner)
    if array.sql_type.kind is not Kind.ARRAY:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED,
                       f"{'ALL' if every else 'ANY'} over {array.sql_type.display_name} is not supported (arrays only)")
    element = Compiled(lambda value: value, array_element_type(array.sql_type))
    left, right = compiler.comparable(compiler.compile(node.this), element, symbol)
    left_eval, right_eval, array_eval = left.evaluate, right.evaluate, array.evaluate

    def evaluate(row):
        values = array_eval(row)
        if values is None:
            return None
        if not values:
            return every
        subject = left_eval(row)
        if subject is None:
            return None
        saw_null = False
        for value in values:
            converted = right_eval(value) if value is not None else None
            if converted is None:
                saw_null = True
            elif compare(subject, converted) != every:
                return not every
        return None if saw_null else every
    return Compiled(evaluate, types.BOOLEAN)


def compile_subscript(compiler, node: exp.Bracket) -> "Compiled":
    """array[i]: the i-th element (arrays count from 1, int2vector/oidvector from 0, as in
    PostgreSQL), NULL outside the array. Slices (a[1:2]) are 0A000."""
    if len(node.expressions) != 1 or isinstance(node.expressions[0], exp.Slice):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "array slices and multi-dimensional subscripts are not supported")
    if any(node.args.get(key) for key in ("offset", "safe", "returns_list_for_maps", "json_access")):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, f'subscript "{node.sql(dialect="postgres")}" is not supported')
    array = compiler.compile(node.this)
    if array.sql_type.pg_alias == "name":
        return _name_subscript(compiler, array, node.expressions[0])
    if array.sql_type.kind is not Kind.ARRAY:
        raise SqlError(errors.DATATYPE_MISMATCH,
                       f"cannot subscript type {array.sql_type.display_name} because it does not support subscripting")
    index_node = node.expressions[0]
    # sqlglot reads PostgreSQL's 1-based subscript into its own 0-based form by subtracting one
    # from an integer literal (and only from a literal): add it back for those.
    literal = index_node.this if isinstance(index_node, exp.Neg) else index_node  # x[0] arrives as -1
    shift = 1 if isinstance(literal, exp.Literal) and not literal.is_string else 0
    index = coerce(compiler.compile(index_node), types.INTEGER)
    if index.sql_type.kind not in types.INT_KINDS + (Kind.NULL,):
        raise SqlError(errors.DATATYPE_MISMATCH, "array subscript must have type integer")
    lower = 0 if array.sql_type.pg_alias in ("int2vector", "oidvector") else 1
    array_eval, index_eval = array.evaluate, index.evaluate

    def evaluate(row):
        values, position = array_eval(row), index_eval(row)
        if values is None or position is None:
            return None
        offset = position + shift - lower
        return values[offset] if 0 <= offset < len(values) else None
    return Compiled(evaluate, array_element_type(array.sql_type))


def compile_bitwise(compiler, node) -> "Compiled":
    """Integer & | # (Django reads pg_index.indoption's DESC bit with `option & 1`)."""
    symbol, apply = {exp.BitwiseAnd: ("&", operator.and_), exp.BitwiseOr: ("|", operator.or_),
                     exp.BitwiseXor: ("#", operator.xor)}[type(node)]
    left, right = compiler.compile(node.this), compiler.compile(node.expression)
    left, right = compiler._unify(left, right, symbol)
    if left.sql_type.kind not in types.INT_KINDS or right.sql_type.kind not in types.INT_KINDS:
        raise _no_operator(f"{left.sql_type.display_name} {symbol} {right.sql_type.display_name}")
    result = types.numeric_result(left.sql_type, right.sql_type)
    return _binary(left, right, result, apply)


def _name_subscript(compiler, name: "Compiled", index_node) -> "Compiled":
    """name[i]: PostgreSQL's name is a fixed array of char, indexed from 0 (pg_dump reads
    `typname[0] = '_'`); the i-th character as "char", '' past the end."""
    literal = index_node.this if isinstance(index_node, exp.Neg) else index_node
    shift = 1 if isinstance(literal, exp.Literal) and not literal.is_string else 0  # see compile_subscript
    index = coerce(compiler.compile(index_node), types.INTEGER)
    name_eval, index_eval = name.evaluate, index.evaluate

    def evaluate(row):
        text, position = name_eval(row), index_eval(row)
        if text is None or position is None:
            return None
        position += shift
        return text[position] if 0 <= position < len(text) else ""
    return Compiled(evaluate, types.CHAR1)


def compile_array_bound(compiler, name: str, nodes) -> "Compiled":
    """array_lower/array_upper/array_length(a, 1) and cardinality(a): catalog arrays have one
    dimension, from 1 (int2vector and oidvector from 0); NULL for an empty array or another
    dimension, as PostgreSQL (cardinality of an empty array is 0)."""
    arguments = [compiler.compile(node) for node in nodes]
    expected = 1 if name == "cardinality" else 2
    if len(arguments) != expected or arguments[0].sql_type.kind not in (Kind.ARRAY, Kind.NULL):
        raise _no_function(name, arguments)
    lower = 0 if arguments[0].sql_type.pg_alias in ("int2vector", "oidvector") else 1
    array_eval = arguments[0].evaluate
    dimension_eval = coerce(arguments[1], types.INTEGER).evaluate if expected == 2 else (lambda row: 1)

    def evaluate(row):
        values, dimension = array_eval(row), dimension_eval(row)
        if values is None or dimension is None:
            return None
        if name == "cardinality":
            return len(values)
        if dimension != 1 or not values:
            return None
        return {"array_lower": lower, "array_upper": lower + len(values) - 1, "array_length": len(values)}[name]
    return Compiled(evaluate, types.INTEGER)


def concat_arrays(left, right) -> "Compiled":
    """array || array (NULL on one side gives the other, as array_cat)."""
    if Kind.ARRAY not in (left.sql_type.kind, right.sql_type.kind) or \
            not all(side.sql_type.kind in (Kind.ARRAY, Kind.NULL) for side in (left, right)):
        raise _no_operator(f"{left.sql_type.display_name} || {right.sql_type.display_name}")
    left_eval, right_eval = left.evaluate, right.evaluate
    result_type = left.sql_type if left.sql_type.kind is Kind.ARRAY else right.sql_type

    def evaluate(row):
        a, b = left_eval(row), right_eval(row)
        if a is None and b is None:
            return None
        return types.ArrayValue(list(a or []) + list(b or []), result_type.element)
    return Compiled(evaluate, result_type)


def compile_array_to_string(compiler, node: exp.ArrayToString) -> "Compiled":
    array = compiler.compile(node.this)
    if array.sql_type.kind not in (Kind.ARRAY, Kind.NULL):
        raise SqlError(errors.UNDEFINED_FUNCTION,
                       f"function array_to_string({array.sql_type.display_name}, unknown) does not exist")
    separator = _as_text(compiler.compile(node.expression)).evaluate
    null_node = node.args.get("null")
    null_text = _as_text(compiler.compile(null_node)).evaluate if null_node is not None else None
    array_eval = array.evaluate

    def evaluate(row):
        values, sep = array_eval(row), separator(row)
        if values is None or sep is None:
            return None
        replacement = null_text(row) if null_text is not None else None
        parts = [types.format_value(v) if v is not None else replacement for v in values]
        return sep.join(part for part in parts if part is not None)
    return Compiled(evaluate, types.TEXT)


# --- casts to and from the catalog's types -----------------------------------------------------
_CATALOG_CASTS = {"regclass": types.REGCLASS, "regtype": types.REGTYPE, "regnamespace": types.REGNAMESPACE,
                  "regproc": types.REGPROC, "oid": types.OID, "name": types.NAME, '"char"': types.CHAR1}


def cast_target_name(to: exp.Expression) -> str | None:
    """The catalog type a cast names (regclass, oid, name, "char", ...), or the plain type name
    after `pg_catalog.` for a qualified one; None for a cast expressions.py handles itself."""
    if isinstance(to, exp.ObjectIdentifier):
        return to.name.lower()
    if not isinstance(to, exp.DataType):
        return None
    if to.this == exp.DataType.Type.NAME:
        return "name"
    if to.this != exp.DataType.Type.USERDEFINED:
        return None
    kind = to.args.get("kind")
    if isinstance(kind, exp.Dot) and isinstance(kind.this, exp.Identifier) \
            and kind.this.name.lower() == "pg_catalog":
        kind = kind.expression
    if isinstance(kind, exp.Identifier):
        return f'"{kind.name}"' if kind.quoted and kind.name == "char" else kind.name.lower()
    return None


def compile_catalog_cast(compiler, operand_node, target_name: str) -> "Compiled | None":
    """x::regclass, x::oid, x::name, ... (None: not a catalog type; the caller casts as usual)."""
    target = _CATALOG_CASTS.get(target_name)
    if target is None:
        return None
    operand = compiler.compile(operand_node)
    source = operand.sql_type
    if source.kind is Kind.NULL:
        return _constant(None, target)
    if source.kind is Kind.UNKNOWN and operand.param is not None:  # $n::oid: $n is an oid
        operand.param.infer(target)
        return Compiled(_describe_only, target)
    from_text = source.kind in types.TEXT_KINDS + (Kind.UNKNOWN,) and source.pg_alias is None
    if target.kind is Kind.TEXT:   # name, "char"
        text = _as_text(operand).evaluate if source.kind is not Kind.ARRAY else None
        if text is None:
            raise SqlError(errors.CANNOT_COERCE, f"cannot cast type {source.display_name} to {target.display_name}")
        width = 1 if target_name == '"char"' else 63   # "char" keeps one byte, name 63 (NAMEDATALEN - 1)
        return Compiled(lambda row: _none_or_apply(text(row), lambda v: v[:width]), target)
    if source.kind not in types.INT_KINDS and not from_text:
        raise SqlError(errors.CANNOT_COERCE, f"cannot cast type {source.display_name} to {target.display_name}")
    evaluate = operand.evaluate
    if target_name == "oid":
        if from_text:
            return Compiled(lambda row: _none_or_apply(evaluate(row), lambda v: _parse_oid(v)), target)
        return Compiled(lambda row: _none_or_apply(evaluate(row), _int_to_oid), target)
    compiler.context.needs_catalog = True
    context = compiler.context
    name_of = {"regclass": _regclass_text, "regtype": lambda snapshot, oid: pg_catalog.regtype_text(oid),
               "regnamespace": lambda snapshot, oid: pg_catalog.namespace_name(oid),
               "regproc": lambda snapshot, oid: str(oid)}[target_name]
    if from_text:
        lookup = {"regclass": _lookup_regclass, "regtype": _lookup_regtype, "regnamespace": _lookup_regnamespace,
                  "regproc": _lookup_regproc}[target_name]

        def evaluate_text(row):
            text = evaluate(row)
            if text is None:
                return None
            snapshot = context.catalog_snapshot()
            oid = _parse_oid(text) if text.strip().isdigit() else lookup(snapshot, text)
            return RegOid(oid, name_of(snapshot, oid))
        return Compiled(evaluate_text, target)

    def evaluate_oid(row):
        oid = evaluate(row)
        if oid is None:
            return None
        if isinstance(oid, RegOid) and source.pg_alias == target.pg_alias:
            return oid  # already of this reg* type: keep its name (a regproc's comes from its catalog)
        snapshot = context.catalog_snapshot()
        return RegOid(int(oid), name_of(snapshot, int(oid)) if int(oid) else "-")
    return Compiled(evaluate_oid, target)


def compile_array_cast(compiler, operand_node, to: exp.DataType) -> "Compiled":
    """x::int[] / x::pg_catalog.int2[] / '{1,2}'::text[]: an array of a built-in element type,
    from an array (elements converted) or from array text."""
    element_node = to.expressions[0] if to.expressions else None
    if not isinstance(element_node, exp.DataType) or element_node.this == exp.DataType.Type.ARRAY:
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "multi-dimensional array types are not supported")
    name = cast_target_name(element_node)
    element = _CATALOG_CASTS.get(name) if name else None
    if element is None:
        element = types.type_from_sqlglot(exp.DataType.build(name, dialect="postgres") if name else element_node)
    target = array_of(element.base)
    operand = compiler.compile(operand_node)
    source = operand.sql_type
    if source.kind is Kind.NULL:
        return _constant(None, target)
    evaluate = operand.evaluate
    if source.kind is Kind.ARRAY:
        source_element = array_element_type(source)

        def convert(row):
            values = evaluate(row)
            if values is None:
                return None
            return types.ArrayValue([None if v is None else types.cast(v, source_element, element.base)
                                     for v in values], target.element)
        return Compiled(convert, target)
    if source.kind in types.TEXT_KINDS + (Kind.UNKNOWN,):
        text_array = types.TEXT_ARRAY

        def parse(row):
            text = evaluate(row)
            if text is None:
                return None
            items = types.parse_text_as(text, text_array)
            return types.ArrayValue([None if v is None else types.cast(v, types.TEXT, element.base)
                                     for v in items], target.element)
        return Compiled(parse, target)
    raise SqlError(errors.CANNOT_COERCE, f"cannot cast type {source.display_name} to {target.display_name}")


def _none_or_apply(value, apply):
    return None if value is None else apply(value)


def _int_to_oid(value: int) -> int:
    """integer::oid: oids are unsigned 32-bit, a negative int4 wraps around as in PostgreSQL."""
    if -(1 << 31) <= value < 0:
        return value + (1 << 32)
    if not 0 <= value < (1 << 32):
        raise SqlError(errors.NUMERIC_VALUE_OUT_OF_RANGE, "OID out of range")
    return int(value)


def _parse_oid(text: str) -> int:
    stripped = text.strip()
    digits = stripped[1:] if stripped[:1] in "+-" else stripped
    if not digits.isdigit():
        raise SqlError(errors.INVALID_TEXT_REPRESENTATION, f'invalid input syntax for type oid: "{text}"')
    if not -(1 << 31) <= int(stripped) < (1 << 32):
        raise SqlError(errors.NUMERIC_VALUE_OUT_OF_RANGE, f'value "{text}" is out of range for type oid')
    return _int_to_oid(int(stripped))


def _regclass_text(snapshot: pg_catalog.Snapshot, oid: int) -> str:
    return pg_catalog.relation_text(snapshot, oid)


def _lookup_regclass(snapshot: pg_catalog.Snapshot, text: str) -> int:
    oid = pg_catalog.resolve_regclass(snapshot, text)
    if oid is None:
        raise SqlError(errors.UNDEFINED_TABLE, f'relation "{text}" does not exist')
    return oid


def _lookup_regtype(snapshot: pg_catalog.Snapshot, text: str) -> int:
    info = pg_catalog.type_named(text)
    if info is None:
        raise SqlError(errors.UNDEFINED_OBJECT, f'type "{text}" does not exist')
    return info.oid


def _lookup_regnamespace(snapshot: pg_catalog.Snapshot, text: str) -> int:
    oid = pg_catalog.namespace_oid(text.strip().strip('"'))
    if oid is None:
        raise SqlError(errors.INVALID_SCHEMA_NAME, f'schema "{text}" does not exist')
    return oid


def _lookup_regproc(snapshot: pg_catalog.Snapshot, text: str) -> int:
    raise SqlError(errors.UNDEFINED_FUNCTION, f'function "{text}" does not exist',
                   detail="pg_proc lists no functions in QuorumDB.")


# --- catalog functions by name ---------------------------------------------------------------
class Function:
    """One catalog function: its argument count range, result type, whether it reads the catalog,
    and its implementation, called with (snapshot or None, client, *argument values). Strict
    functions (PostgreSQL's STRICT) give NULL for any NULL argument without being called."""

    def __init__(self, arity: tuple[int, int], result: SqlType, apply: Callable, catalog: bool = False,
                 strict: bool = True):
        self.arity = arity
        self.result = result
        self.apply = apply
        self.catalog = catalog
        self.strict = strict


def _as_oid(value) -> int:
    if isinstance(value, str):
        return _parse_oid(value)
    return int(value)


def _table_is_visible(snapshot, client, oid):
    info = snapshot.relation(_as_oid(oid))
    return info is not None and info.namespace in (pg_catalog.PUBLIC_NAMESPACE_OID, pg_catalog.PG_CATALOG_NAMESPACE_OID)


_PRIVILEGES = {
    "table": {"SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"},
    "column": {"SELECT", "INSERT", "UPDATE", "REFERENCES"},
    "schema": {"CREATE", "USAGE"},
    "database": {"CREATE", "CONNECT", "TEMPORARY", "TEMP"},
    "sequence": {"USAGE", "SELECT", "UPDATE"},
    "function": {"EXECUTE"},
    "role": {"MEMBER", "USAGE", "SET"},
}


def _privilege(kind: str):
    """has_<kind>_privilege([user,] object, privilege): every object belongs to the connection's
    role (pg_catalog.py), which holds every privilege on it, so the answer is true -- for an
    object that exists, a known role and a valid privilege list (else PostgreSQL's errors; NULL
    for an oid that names nothing)."""
    def check(snapshot, client, *args):
        privilege = args[-1]
        for item in str(privilege).split(","):
            word = item.strip().upper().removesuffix(" WITH GRANT OPTION").removesuffix(" WITH ADMIN OPTION").strip()
            if word not in _PRIVILEGES[kind]:
                raise SqlError(errors.INVALID_PARAMETER_VALUE, f"unrecognized privilege type: \"{item.strip()}\"")
        if len(args) == (4 if kind == "column" else 3):
            user = args[0]
            if not isinstance(user, int) and user not in (client.user, "public"):
                raise SqlError(errors.UNDEFINED_OBJECT, f'role "{user}" does not exist')
        target = args[-3] if kind == "column" else args[-2]
        if kind in ("table", "column", "sequence"):
            oid = target if isinstance(target, int) else pg_catalog.resolve_regclass(snapshot, target)
            if oid is None:
                raise SqlError(errors.UNDEFINED_TABLE, f'relation "{target}" does not exist')
            relation = snapshot.relation(oid)
            if relation is None:
                return None
            if kind == "column" and not isinstance(args[-2], int):
                names = [name for name, _ in relation.columns] if relation.table is None else \
                    [column.name for column in pg_catalog.user_columns(relation.table)]
                if args[-2] not in names:
                    raise SqlError(errors.UNDEFINED_COLUMN,
                                   f'column "{args[-2]}" of relation "{relation.name}" does not exist')
        elif kind == "schema" and not isinstance(target, int) and pg_catalog.namespace_oid(target) is None:
            raise SqlError(errors.INVALID_SCHEMA_NAME, f'schema "{target}" does not exist')
        return True
    return check


def _current_setting(snapshot, client, name, missing_ok=False):
    try:
        return client.setting(name)
    except SqlError:
        if missing_ok:
            return None
        raise


def _set_config(snapshot, client, name, value, is_local):
    """set_config(name, value, is_local): SET from a query (pg_dump's `search_path` to ''). SET
    LOCAL acts as SET, as everywhere on this endpoint (docs/POSTGRES.md)."""
    if client.settings is None or not hasattr(client.settings, "set"):
        raise SqlError(errors.FEATURE_NOT_SUPPORTED, "set_config() is supported on the PostgreSQL endpoint only")
    client.settings.set(name, value)
    return client.settings.get(name)


def _quote_literal(text: str) -> str:
    """PostgreSQL's quote_literal: quotes doubled; with a backslash, the E'' form, backslashes doubled."""
    if "\\" in text:
        return "E'" + text.replace("\\", "\\\\").replace("'", "''") + "'"
    return "'" + text.replace("'", "''") + "'"


def _quote_ident(snapshot, client, text):
    return pg_catalog.quote_ident(text)


def _json_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)) and not isinstance(value, RegOid):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_json_value(item) for item in value) + "]"
    return json.dumps(types.format_value(value) if not isinstance(value, str) else value, ensure_ascii=False)


def _serial_sequence(snapshot, client, table, column):
    """pg_get_serial_sequence('t', 'id'): the sequence a serial or identity column owns, qualified
    ('public.t_id_seq'); NULL for another column; 42P01/42703 for an unknown table/column."""
    schema, name = pg_catalog._split_qualified(table)
    info = snapshot.relation_named(name, schema)
    if info is None:
        raise pg_catalog.unknown_relation_error(table)
    definition = info.table
    found = next((c for c in pg_catalog.user_columns(definition) if c.name == column), None) \
        if definition is not None else None
    if found is None:
        raise SqlError(errors.UNDEFINED_COLUMN, f'column "{column}" of relation "{name}" does not exist')
    sequence = getattr(found, "sequence", None)
    return None if sequence is None else "public." + pg_catalog.quote_ident(sequence)


_NEXTVAL_NAME = re.compile(r"nextval\('([^'.]+)'::regclass\)")


def _get_expr(client, text: str) -> str:
    """A stored expression as pg_get_expr prints it. A regclass constant prints schema-qualified
    when its schema is not on the search_path, so a DEFAULT nextval('s'::regclass) reads
    nextval('public.s'::regclass) once pg_dump has emptied search_path, as in PostgreSQL."""
    if "public" in _search_path(client):
        return text
    return _NEXTVAL_NAME.sub(lambda found: f"nextval('public.{found.group(1)}'::regclass)", text)


def _json_build_object(snapshot, client, *values):
    """PostgreSQL's json_build_object text: `{"key" : value, ...}` (its spacing)."""
    if len(values) % 2:
        raise SqlError(errors.INVALID_PARAMETER_VALUE, "argument list must have even number of elements",
                       hint="The arguments of json_build_object() must consist of alternating keys and values.")
    pairs = []
    for position in range(0, len(values), 2):
        key = values[position]
        if key is None:
            raise SqlError(errors.INVALID_PARAMETER_VALUE, "null value not allowed for object key")
        pairs.append(f"{_json_value(str(key))} : {_json_value(values[position + 1])}")
    return "{" + ", ".join(pairs) + "}"


FUNCTIONS: dict[str, Function] = {
    "format_type": Function((2, 2), types.TEXT, lambda s, c, oid, typmod: None if oid is None else
                            pg_catalog.format_type(_as_oid(oid), typmod), strict=False),
    "pg_get_indexdef": Function((1, 3), types.TEXT, lambda s, c, oid, column=0, pretty=False: pg_catalog.indexdef(
        s, _as_oid(oid), int(column), bool(pretty)), catalog=True),
    "pg_get_constraintdef": Function((1, 2), types.TEXT, lambda s, c, oid, pretty=False: pg_catalog.constraintdef(
        s, _as_oid(oid), bool(pretty)), catalog=True),
    # adbin/conbin/indpred hold SQL text here (no node trees), so pg_get_expr returns it as is,
    # but for the sequences nextval names (below).
    "pg_get_expr": Function((2, 3), types.TEXT, lambda s, c, text, relation, pretty=False: _get_expr(c, text)),
    "pg_table_is_visible": Function((1, 1), types.BOOLEAN, _table_is_visible, catalog=True),
    "pg_type_is_visible": Function((1, 1), types.BOOLEAN, lambda s, c, oid: _as_oid(oid) in pg_catalog.TYPES),
    "pg_function_is_visible": Function((1, 1), types.BOOLEAN, lambda s, c, oid: True),
    "obj_description": Function((1, 2), types.TEXT, lambda s, c, oid, catalog=None: pg_catalog.description(
        _as_oid(oid), catalog)),
    "col_description": Function((2, 2), types.TEXT, lambda s, c, *args: None),
    "shobj_description": Function((2, 2), types.TEXT, lambda s, c, *args: None),
    "pg_get_userbyid": Function((1, 1), types.NAME, lambda s, c, oid: pg_catalog.user_name(s, _as_oid(oid)),
                                catalog=True),
    "pg_encoding_to_char": Function((1, 1), types.NAME, lambda s, c, encoding: pg_catalog.encoding_name(encoding)),
    "has_table_privilege": Function((2, 3), types.BOOLEAN, _privilege("table"), catalog=True),
    "has_schema_privilege": Function((2, 3), types.BOOLEAN, _privilege("schema"), catalog=True),
    "has_database_privilege": Function((2, 3), types.BOOLEAN, _privilege("database"), catalog=True),
    "has_column_privilege": Function((3, 4), types.BOOLEAN, _privilege("column"), catalog=True),
    "has_sequence_privilege": Function((2, 3), types.BOOLEAN, _privilege("sequence"), catalog=True),
    "has_function_privilege": Function((2, 3), types.BOOLEAN, _privilege("function"), catalog=True),
    "pg_has_role": Function((2, 3), types.BOOLEAN, _privilege("role"), catalog=True),
    # Sizes are not tracked (pg_catalog.py): 0 bytes for a relation that exists.
    "pg_relation_size": Function((1, 2), types.BIGINT, lambda s, c, oid, fork="main": pg_catalog.relation_size(
        s, _as_oid(oid)), catalog=True),
    "pg_total_relation_size": Function((1, 1), types.BIGINT, lambda s, c, oid: pg_catalog.relation_size(
        s, _as_oid(oid)), catalog=True),
    "pg_table_size": Function((1, 1), types.BIGINT, lambda s, c, oid: pg_catalog.relation_size(s, _as_oid(oid)),
                              catalog=True),
    "pg_indexes_size": Function((1, 1), types.BIGINT, lambda s, c, oid: pg_catalog.relation_size(s, _as_oid(oid)),
                                catalog=True),
    "pg_database_size": Function((1, 1), types.BIGINT, lambda s, c, db: 0),
    "pg_size_pretty": Function((1, 1), types.TEXT, lambda s, c, size: pg_catalog.size_pretty(int(size))),
    "current_setting": Function((1, 2), types.TEXT, _current_setting),
    "pg_backend_pid": Function((0, 0), types.INTEGER, lambda s, c: c.process_id),
    "quote_ident": Function((1, 1), types.TEXT, _quote_ident),
    "set_config": Function((3, 3), types.TEXT, _set_config),
    "pg_is_in_recovery": Function((0, 0), types.BOOLEAN, lambda s, c: False),
    "pg_get_function_result": Function((1, 1), types.TEXT, lambda s, c, oid: None),
    "pg_get_function_arguments": Function((1, 1), types.TEXT, lambda s, c, oid: None),
    "pg_get_function_identity_arguments": Function((1, 1), types.TEXT, lambda s, c, oid: None),
    "pg_get_statisticsobjdef_columns": Function((1, 1), types.TEXT, lambda s, c, oid: None),
    "pg_relation_is_publishable": Function((1, 1), types.BOOLEAN, lambda s, c, oid: False),
    "pg_get_viewdef": Function((1, 2), types.TEXT, lambda s, c, *args: None),
    # Triggers, rules, policies, statistics objects do not exist: their catalogs are empty, so
    # these run only on no rows; NULL for an oid that names nothing, as PostgreSQL.
    "pg_get_triggerdef": Function((1, 2), types.TEXT, lambda s, c, *args: None),
    "pg_get_ruledef": Function((1, 2), types.TEXT, lambda s, c, *args: None),
    "pg_get_statisticsobjdef": Function((1, 1), types.TEXT, lambda s, c, oid: None),
    "pg_get_functiondef": Function((1, 1), types.TEXT, lambda s, c, oid: None),
    "pg_get_partkeydef": Function((1, 1), types.TEXT, lambda s, c, oid: None),
    "to_regclass": Function((1, 1), types.REGCLASS, lambda s, c, text: _to_reg(
        s, text, pg_catalog.resolve_regclass(s, text), _regclass_text), catalog=True),
    "to_regtype": Function((1, 1), types.REGTYPE, lambda s, c, text: _to_reg(
        s, text, getattr(pg_catalog.type_named(text), "oid", None), lambda snap, oid: pg_catalog.regtype_text(oid))),
    "getpgusername": Function((0, 0), types.NAME, lambda s, c: c.user),
    # The session functions sqlglot parses to nodes of their own (CurrentVersion, ...) when
    # unqualified, called here by their pg_catalog-qualified names.
    "version": Function((0, 0), types.TEXT, lambda s, c: pg_catalog.VERSION_TEXT),
    "current_database": Function((0, 0), types.NAME, lambda s, c: c.database),
    "current_schema": Function((0, 0), types.NAME, lambda s, c: _current_schema(c)),
    "current_schemas": Function((1, 1), types.NAME_ARRAY, lambda s, c, implicit: _current_schemas(c, implicit)),
    "current_user": Function((0, 0), types.NAME, lambda s, c: c.user),
    "session_user": Function((0, 0), types.NAME, lambda s, c: c.user),
    "pg_collation_is_visible": Function((1, 1), types.BOOLEAN, lambda s, c, oid: True),
    "pg_get_serial_sequence": Function((2, 2), types.TEXT, _serial_sequence, catalog=True),
    # QuorumDB has no privileges to grant: every acl column is NULL (PostgreSQL's "default
    # privileges"), and so is the default they would be compared with.
    "acldefault": Function((2, 2), types.TEXT_ARRAY, lambda s, c, kind, owner: None),
    "array_remove": Function((2, 2), types.TEXT_ARRAY, lambda s, c, array, value: None if array is None else
                             [item for item in array if item != value], strict=False),
    "quote_literal": Function((1, 1), types.TEXT, lambda s, c, text: _quote_literal(types.format_value(text))),
    "getdatabaseencoding": Function((0, 0), types.NAME, lambda s, c: "UTF8"),
    "pg_tablespace_location": Function((1, 1), types.TEXT, lambda s, c, oid: ""),  # the default location
    "pg_char_to_encoding": Function((1, 1), types.INTEGER, lambda s, c, name: {"UTF8": pg_catalog.UTF8_ENCODING,
                                    "SQL_ASCII": 0}.get(name.upper().replace("-", ""), -1)),
    "json_build_object": Function((0, 100), SqlType(Kind.TEXT, pg_alias="json"), _json_build_object, strict=False),
}


def _to_reg(snapshot, text, oid, name_of):
    return None if oid is None else RegOid(oid, name_of(snapshot, oid))


def compile_function(compiler, name: str, nodes: Sequence[exp.Expression]) -> "Compiled | None":
    """A catalog function call, or None when `name` is not one (the caller reports 42883)."""
    if name in ("array_upper", "array_lower", "array_length", "cardinality"):
        return compile_array_bound(compiler, name, nodes)
    if name == "array_to_string" and len(nodes) in (2, 3):
        return compile_array_to_string(compiler, exp.ArrayToString(
            this=nodes[0], expression=nodes[1], null=nodes[2] if len(nodes) == 3 else None))
    function = FUNCTIONS.get(name)
    if function is None:
        return None
    arguments = [compiler.compile(node) for node in nodes]
    low, high = function.arity
    if not low <= len(arguments) <= high:
        raise _no_function(name, arguments)
    arguments = [_as_text(a) if a.sql_type.kind is Kind.UNKNOWN else a for a in arguments]
    evals = [a.evaluate for a in arguments]
    context = compiler.context
    client = context.client
    if function.catalog:
        context.needs_catalog = True
    apply, strict, catalog = function.apply, function.strict, function.catalog

    def evaluate(row):
        values = [e(row) for e in evals]
        if strict and any(v is None for v in values):
            return None
        return apply(context.catalog_snapshot() if catalog else None, client, *values)
    if not catalog and all(a.constant for a in arguments) and name not in ("current_setting", "set_config"):
        return _constant(evaluate(()), function.result)
    return Compiled(evaluate, function.result)


expressions.install_catalog(sys.modules[__name__])
