"""Statements parsed once and run many times: the compute node's statement cache.

Theory of operation
-------------------
sqlglot's parse is the largest single cost of a simple statement (0.1-0.3 ms, several times the
rest of the SQL work for a point read or write). Applications repeat a few statement shapes with
different constants, so the cache is keyed by *shape*: the script's text with its numeric and
standard string literals taken out (quorumdb/sqllex.py `lift_literals`; everything else, even
whitespace and comments, stays in the key). `INSERT ... VALUES (1, 'a')` and
`INSERT ... VALUES (2, 'b')` share one entry.

An entry holds the statements parsed from the first text of that shape (compute_node/sql/parser.py,
unchanged: the cache never parses anything differently) and, for each literal of the shape,
where its value lives in the parse trees: the sqlglot Literal node(s) whose source position is
exactly that literal token and whose value is exactly what the token says (a number's text, a
string without its quotes). Only such literals are *lifted*; any other (sqlglot folded it, split
it, or rewrote the text around it) is *fixed*: the entry then only serves texts with that same
literal text there, and a text that differs gets an entry variant of its own. So a cache hit
yields exactly the trees parsing the new text would have yielded.

Parameters ($1, $2, ...: the PostgreSQL endpoint's extended protocol, the gRPC API's `params`)
are bound the same way: each arrives as the SQL literal text that stands for its value (what
pgwire's pgtypes.param_literal and sqllex.quote_literal write), is turned into the node a parse
of that text gives (`literal_node`, itself cached by shape), and replaces the `$n` node of the
tree instance. A run with parameters therefore means exactly what the old way meant (paste the
literals into the text, parse it all) without the paste or the parse.

Running a statement binds the text's literal values into a tree instance: each entry keeps a
small pool of copies of its trees; a run checks one out, sets the lifted Literal nodes' values
(`node.set`, which keeps sqlglot's cached hashes right), runs, and gives it back. A tree is used
by one run at a time, so concurrent sessions never see each other's values; the engine reads
trees and never changes them. Everything after parsing (names, types, plans) is still done per
run, from the bound trees.

Bounds: STATEMENT_CACHE_SHAPES_MAX shapes (least recently used go), STATEMENT_CACHE_VARIANTS_MAX
variants per shape, STATEMENT_CACHE_INSTANCES_MAX idle tree copies per variant (a run beyond
that uses a fresh copy, dropped afterwards). Scripts longer than STATEMENT_BYTES_MAX and scripts
that fail to parse are never cached.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Sequence

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from compute_node.sql.parser import DeclareCursor, Dialect, Explain, Statement, parse_script_spans
from quorumdb import errors, limits, sqllex
from quorumdb.errors import SqlError


@dataclasses.dataclass
class _Slot:
    ordinal: int                 # which literal of the shape
    is_string: bool
    nodes: list[exp.Literal]     # where its value goes in one set of trees


@dataclasses.dataclass
class _ParamSlot:
    number: int                  # $number
    nodes: list[exp.Expression]  # the nodes standing there now ($n, or the last value bound)


class _Instance:
    """One copy of a variant's statements, used by one run at a time."""

    def __init__(self, statements: list[Statement], slots: list[_Slot], params: list[_ParamSlot]) -> None:
        self.statements = statements
        self.slots = slots
        self.params = params

    def bind(self, sql: str, literals: tuple[sqllex.Token, ...], params: Sequence[str] | None) -> None:
        for slot in self.slots:
            token = literals[slot.ordinal]
            text = sql[token.start:token.end]
            value = sqllex.string_value(text) if slot.is_string else text
            for node in slot.nodes:
                if node.this != value:
                    node.set("this", value)
        if params is None:
            return
        for slot in self.params:
            if slot.number <= len(params):
                value = literal_node(params[slot.number - 1])
            else:  # not supplied: compiling says "there is no parameter $n"
                value = exp.Parameter(this=exp.Literal.number(slot.number))
            for position, node in enumerate(slot.nodes):
                replacement = value if position == 0 else value.copy()
                node.replace(replacement)
                slot.nodes[position] = replacement


class _Variant:
    def __init__(self, statements: list[Statement], slots: list[_Slot], fixed: dict[int, str],
                 params: list[_ParamSlot]) -> None:
        self._pristine = statements  # never bound: copied for new instances
        self._slots = slots
        self._params = params
        self.fixed = fixed           # literal ordinal -> the text it must have
        self._idle: list[_Instance] = []

    def matches(self, sql: str, literals: tuple[sqllex.Token, ...]) -> bool:
        return all(sql[literals[o].start:literals[o].end] == text for o, text in self.fixed.items())

    def checkout(self) -> _Instance:
        if self._idle:
            return self._idle.pop()
        return self._copy()

    def release(self, instance: _Instance) -> None:
        if len(self._idle) < limits.STATEMENT_CACHE_INSTANCES_MAX:
            self._idle.append(instance)

    def _copy(self) -> _Instance:
        copies: list[Statement] = []
        where: dict[int, exp.Expression] = {}  # id(pristine node) -> its copy
        for statement in self._pristine:
            tree = _tree_of(statement)
            if tree is None:
                copies.append(statement)  # transaction control: immutable
                continue
            copied = tree.copy()
            for original, duplicate in zip(tree.walk(), copied.walk()):
                where[id(original)] = duplicate
            if isinstance(statement, Explain):
                copied = Explain(copied, statement.analyze)
            elif isinstance(statement, DeclareCursor):
                copied = dataclasses.replace(statement, statement=copied)
            copies.append(copied)
        slots = [_Slot(slot.ordinal, slot.is_string, [where[id(node)] for node in slot.nodes]) for slot in self._slots]
        params = [_ParamSlot(slot.number, [where[id(node)] for node in slot.nodes]) for slot in self._params]
        return _Instance(copies, slots, params)


@dataclasses.dataclass
class Bound:
    """A script's statements with this text's literal values in place; `release()` when done."""
    statements: list[Statement]
    _variant: _Variant | None
    _instance: _Instance | None

    def release(self) -> None:
        if self._variant is not None:
            self._variant.release(self._instance)
            self._variant = self._instance = None


class StatementCache:
    def __init__(self, shapes_max: int | None = None) -> None:
        self._shapes: collections.OrderedDict[str, list[_Variant]] = collections.OrderedDict()
        self._shapes_max = shapes_max or limits.STATEMENT_CACHE_SHAPES_MAX
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._shapes)

    def bind(self, sql: str, params: Sequence[str] | None = None, shape: sqllex.Shape | None = None) -> Bound:
        """The script's statements, parsed once per shape, with `params` (SQL literal texts, one
        per $n) in place; raises SqlError as parse_script does. `shape`: lift_literals(sql), when
        the caller has it already."""
        if len(sql) > limits.STATEMENT_BYTES_MAX:
            if params:
                raise SqlError(errors.PROGRAM_LIMIT_EXCEEDED,
                               f"statement of {len(sql)} bytes exceeds the limit of {limits.STATEMENT_BYTES_MAX} bytes")
            return Bound([statement for statement, _ in parse_script_spans(sql)], None, None)
        if shape is None:
            shape = sqllex.lift_literals(sql)
        # A text run with parameters and the same text run without them are different entries:
        # an instance with bound values must never serve a run that expects `$n` nodes.
        key = shape.key if params is None else _WITH_PARAMS + shape.key
        variants = self._shapes.get(key)
        if variants is not None:
            for variant in variants:
                if variant.matches(sql, shape.literals):
                    self.hits += 1
                    self._shapes.move_to_end(key)
                    return self._checkout(variant, sql, shape, params)
        self.misses += 1
        spans = parse_script_spans(sql)  # raises on a syntax error: nothing is cached
        variant = _build_variant(sql, shape, spans)
        if variants is None:
            variants = self._shapes[key] = []
            while len(self._shapes) > self._shapes_max:
                self._shapes.popitem(last=False)
        if len(variants) < limits.STATEMENT_CACHE_VARIANTS_MAX:
            variants.append(variant)
        return self._checkout(variant, sql, shape, params)

    @staticmethod
    def _checkout(variant: _Variant, sql: str, shape: sqllex.Shape, params: Sequence[str] | None) -> Bound:
        instance = variant.checkout()
        try:
            instance.bind(sql, shape.literals, params)
        except BaseException:
            variant.release(instance)
            raise
        return Bound(instance.statements, variant, instance)


def _tree_of(statement: Statement) -> exp.Expression | None:
    if isinstance(statement, (Explain, DeclareCursor)):
        return statement.statement
    if isinstance(statement, exp.Expression):
        return statement
    return None


def _build_variant(sql: str, shape: sqllex.Shape, spans: list[tuple[Statement, int]]) -> _Variant:
    """Which literals of `shape` the parsed statements hold exactly where the text has them, and
    where their `$n` parameters are."""
    by_position = {(token.start, token.end - 1): ordinal for ordinal, token in enumerate(shape.literals)}
    found: dict[int, list[exp.Literal]] = collections.defaultdict(list)
    rejected: set[int] = set()
    parameters: dict[int, list[exp.Expression]] = collections.defaultdict(list)
    for statement, offset in spans:
        tree = _tree_of(statement)
        if tree is None:
            continue
        for node in tree.find_all(exp.Parameter):
            number = node.this
            if isinstance(number, exp.Literal) and not number.is_string and number.this.isdigit():
                parameters[int(number.this)].append(node)
        if isinstance(statement, (Explain, DeclareCursor)):
            continue  # EXPLAIN and DECLARE re-parse part of its text: positions there are not the script's
        for node in tree.find_all(exp.Literal):
            meta = node.meta
            if "start" not in meta or "end" not in meta:
                continue
            ordinal = by_position.get((meta["start"] + offset, meta["end"] + offset))
            if ordinal is None:
                continue
            token = shape.literals[ordinal]
            text = sql[token.start:token.end]
            is_string = token.kind is sqllex.STRING
            expected = sqllex.string_value(text) if is_string else text
            if bool(node.is_string) != is_string or node.this != expected:
                rejected.add(ordinal)
                continue
            found[ordinal].append(node)
    slots = [_Slot(ordinal, shape.literals[ordinal].kind is sqllex.STRING, nodes)
             for ordinal, nodes in sorted(found.items()) if ordinal not in rejected]
    lifted = {slot.ordinal for slot in slots}
    fixed = {ordinal: sql[token.start:token.end] for ordinal, token in enumerate(shape.literals)
             if ordinal not in lifted}
    params = [_ParamSlot(number, nodes) for number, nodes in sorted(parameters.items())]
    return _Variant([statement for statement, _ in spans], slots, fixed, params)


# --- parameter values as nodes ----------------------------------------------------------------
_WITH_PARAMS = "\x01"  # prefix of the keys of entries that are run with parameters


class _LiteralTemplate:
    def __init__(self, node: exp.Expression, strings: list[bool]) -> None:
        self.node = node         # the parse of the first text of this shape
        self.strings = strings   # per lifted literal, in find_all order: is it a string


_literal_templates: collections.OrderedDict[str, _LiteralTemplate | None] = collections.OrderedDict()


def literal_node(text: str) -> exp.Expression:
    """The expression a parse of the SQL literal `text` gives ('a', 5, (-5), TRUE, NULL,
    CAST('x' AS DATE), ...), built from a cached parse of the same shape when there is one."""
    shape = sqllex.lift_literals(text)
    template = _literal_templates.get(shape.key, False)
    if template is False:
        template = _literal_template(text, shape)
        _literal_templates[shape.key] = template
        while len(_literal_templates) > limits.STATEMENT_CACHE_SHAPES_MAX:
            _literal_templates.popitem(last=False)
    if template is None:
        return _parse_literal(text)
    node = template.node.copy()
    literals = list(node.find_all(exp.Literal)) if template.strings else []
    for literal, token, is_string in zip(literals, shape.literals, template.strings):
        value = text[token.start:token.end]
        literal.set("this", sqllex.string_value(value) if is_string else value)
    return node


def _literal_template(text: str, shape: sqllex.Shape) -> _LiteralTemplate | None:
    """A template when the parse holds each literal of the text, in order, exactly; else None."""
    node = _parse_literal(text)
    literals = list(node.find_all(exp.Literal))
    if len(literals) != len(shape.literals):
        return None
    strings = []
    for literal, token in zip(literals, shape.literals):
        value = text[token.start:token.end]
        is_string = token.kind is sqllex.STRING
        if bool(literal.is_string) != is_string or literal.this != (sqllex.string_value(value) if is_string else value):
            return None
        strings.append(is_string)
    return _LiteralTemplate(node, strings)


def _parse_literal(text: str) -> exp.Expression:
    """The parse of a parameter's literal text; anything but a literal (a value, a negated
    number, a cast of one) is refused: a parameter is a value, never an expression."""
    try:
        statements = sqlglot.parse(f"SELECT {text}", read=Dialect)
    except (ParseError, TokenError):
        statements = []
    if len(statements) == 1 and isinstance(statements[0], exp.Select) and len(statements[0].expressions) == 1:
        select = statements[0]
        node = select.expressions[0]
        if _is_literal(node) and not any(value for key, value in select.args.items() if key != "expressions"):
            return node
    raise SqlError(errors.INVALID_PARAMETER_VALUE, f"a parameter must be a SQL literal, not {text[:60]!r}")


def _is_literal(node: exp.Expression) -> bool:
    if isinstance(node, (exp.Literal, exp.Null, exp.Boolean)):
        return True
    if isinstance(node, (exp.Neg, exp.Paren)):
        return _is_literal(node.this)
    if isinstance(node, exp.Cast):
        return _is_literal(node.this) and isinstance(node.args.get("to"), exp.DataType)
    return False
