"""Every SQLSTATE is defined once, in quorumdb/errors.py, and used by name everywhere else.

A code spelled as a literal in two places drifts (one module says 22023 where another says
22P02 for the same mistake) and cannot be found by name; so the product's source is scanned
for anything shaped like a SQLSTATE, and errors.py itself is checked: one name per code, each
the condition name PostgreSQL's errcodes.txt gives it.
"""
from __future__ import annotations

import ast
import glob
import pathlib
import re

from quorumdb import errors

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCANNED = ("quorumdb", "journal", "adjudicator", "storage_node", "compute_node", "tools")
NOT_SCANNED = (ROOT / "quorumdb" / "pb",)          # generated protobuf code
ERRORS_PY = ROOT / "quorumdb" / "errors.py"

# A quoted string that is exactly a SQLSTATE: five characters, class first.
SQLSTATE_LITERAL = re.compile(r"""['"](([0-9][0-9A-Z]|XX|HV|P0|F0|OC)[0-9A-Z]{3})['"]""")
# A check of a code's class by a quoted two-character prefix (sqlstate.startswith("08")).
CLASS_LITERAL = re.compile(r"""(?:startswith\(\s*|\[:2\]\s*(?:==|!=|in)\s*[(\[{]?\s*)['"]([0-9A-Z]{2})['"]""")
# The classes PostgreSQL defines (errcodes.txt) and DSQL's OC: a five-character literal of
# another class ("10000", a setting's default) is not a SQLSTATE.
CLASSES = frozenset(
    "00 01 02 03 08 09 0A 0B 0F 0L 0P 0Z 20 21 22 23 24 25 26 27 28 2B 2D 2F 34 38 39 3B 3D 3F "
    "40 42 44 53 54 55 57 58 72 F0 HV P0 XX OC".split())

# errors.py names that share a code on purpose: old name -> the condition name it stands for.
INTENTIONAL_ALIASES = {"IN_FAILED_TRANSACTION": "IN_FAILED_SQL_TRANSACTION"}
# Upper-case string constants in errors.py that are not codes.
NOT_CODES = {"STARTED_BEFORE_BACKTRACK"}   # the start of a message, matched by the compute node
# DSQL's reasons for a 40001; PostgreSQL has no such codes.
DSQL_CODES = {"DSQL_WRITE_CONFLICT", "DSQL_SCHEMA_CHANGED"}


def scan(paths) -> list[str]:
    """file:line: text for each SQLSTATE or class literal in the .py files under `paths`."""
    found = []
    for top in paths:
        for path in sorted(pathlib.Path(top).rglob("*.py")):
            if path == ERRORS_PY or any(path.is_relative_to(skip) for skip in NOT_SCANNED):
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                codes = [m.group(1) for m in SQLSTATE_LITERAL.finditer(line) if m.group(1)[:2] in CLASSES]
                codes += [m.group(1) for m in CLASS_LITERAL.finditer(line) if m.group(1) in CLASSES]
                if codes:
                    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
                    found.append(f"{shown}:{number}: {', '.join(codes)}: {line.strip()}")
    return found


def _errors_constants() -> tuple[dict[str, str], dict[str, str]]:
    """(name -> string literal, name -> name it aliases) of errors.py's module-level constants."""
    literals: dict[str, str] = {}
    aliases: dict[str, str] = {}
    for node in ast.parse(ERRORS_PY.read_text(encoding="utf-8")).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        name = node.targets[0].id
        if not name.isupper():
            continue
        if isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            assert name not in literals, f"errors.py assigns {name} twice"
            literals[name] = node.value.value
        elif isinstance(node.value, ast.Name):
            aliases[name] = node.value.id
    return literals, aliases


def test_no_sqlstate_literal_outside_errors_py():
    found = scan(ROOT / top for top in SCANNED)
    assert not found, ("SQLSTATE literals outside quorumdb/errors.py (use errors.<CONDITION_NAME>, adding "
                       "it there if it is new):\n" + "\n".join(found))


def test_scan_finds_a_planted_literal(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text(
        'raise SqlError("42P10", "x")\n'
        "ok = error.sqlstate == errors.UNDEFINED_TABLE\n"
        "if code.startswith('08'):\n"
        '    pass\n'
        'Setting("max_connections", "10000")\n'       # class 10 does not exist: not a code
        "RETRY = {'OC000', \"XX000\"}\n")
    found = scan([tmp_path])
    assert [entry.split(": ")[0].rsplit(":", 1)[1] for entry in found] == ["1", "3", "6"], found
    assert "42P10" in found[0] and "08" in found[1] and "OC000, XX000" in found[2], found


def test_errors_py_defines_each_code_once():
    literals, aliases = _errors_constants()
    codes = {name: value for name, value in literals.items()
             if name not in NOT_CODES and not name.startswith("CLASS_")}
    assert len(codes) > 40, codes
    bad = {name: value for name, value in codes.items() if not re.fullmatch(r"[0-9A-Z]{5}", value)}
    assert not bad, f"not five characters of [0-9A-Z]: {bad}"
    by_code: dict[str, list[str]] = {}
    for name, value in codes.items():
        by_code.setdefault(value, []).append(name)
    twice = {code: names for code, names in by_code.items() if len(names) > 1}
    assert not twice, f"codes defined under two names (keep one; an old name becomes an alias): {twice}"
    for name, target in aliases.items():
        if target in codes:
            assert INTENTIONAL_ALIASES.get(name) == target, f"{name} = {target} is not a listed alias"
    classes = {name: value for name, value in literals.items() if name.startswith("CLASS_")}
    assert classes and all(re.fullmatch(r"[0-9A-Z]{2}", value) for value in classes.values()), classes
    assert all(value[:2] in CLASSES for value in codes.values()), codes
    # What the module exports is what the source says (no reassignment later on).
    assert all(getattr(errors, name) == value for name, value in codes.items())


def test_names_are_postgresql_condition_names():
    """Each code is named as errcodes.txt names its condition (DSQL's own codes excepted)."""
    found = sorted(glob.glob("/usr/share/postgresql/*/errcodes.txt"))
    assert found, "PostgreSQL's errcodes.txt is not installed (scripts/install-postgres installs PostgreSQL)"
    conditions: dict[str, str] = {}
    for line in pathlib.Path(found[-1]).read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 4 and re.fullmatch(r"[0-9A-Z]{5}", parts[0]):
            conditions[parts[0]] = parts[3].upper()
    literals, _ = _errors_constants()
    wrong = {name: (value, conditions.get(value)) for name, value in literals.items()
             if name not in NOT_CODES | DSQL_CODES and not name.startswith("CLASS_")
             and conditions.get(value) != name}
    assert not wrong, f"name -> (code, PostgreSQL's condition name): {wrong}"
    assert {errors.DSQL_WRITE_CONFLICT[:2], errors.DSQL_SCHEMA_CHANGED[:2]} == {"OC"}


def test_class_helpers():
    assert errors.is_connection_error(errors.CONNECTION_FAILURE)
    assert errors.is_connection_error(errors.SQLCLIENT_UNABLE_TO_ESTABLISH_SQLCONNECTION)
    assert not errors.is_connection_error(errors.CANNOT_CONNECT_NOW)
    assert not errors.is_connection_error(errors.SERIALIZATION_FAILURE)
    assert errors.SERIALIZATION_FAILURE.startswith(errors.CLASS_TRANSACTION_ROLLBACK)
