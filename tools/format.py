"""psql-compatible result formatting (pure: strings in, strings out).

Theory of operation
-------------------
`qsql` prints results exactly as `psql` 15 does with its default settings
(border 1, aligned), with `-A` (unaligned, `|` separator), `-t` (tuples only)
and `\\x` (expanded). The rules below were read off real psql output; the tests
in tests/test_format.py hold that output as a recorded oracle.

Values become text first (`format_value`, quorumdb/pgtext.py): NULL is empty, booleans `t`/`f`,
floats use PostgreSQL's shortest round-trip form (`1e+20`, `100`, `0.1`), bytea
is `\\x` + hex. Numeric types are right-aligned, everything else left-aligned.

Aligned layout, per physical line of a row: each cell is ` ` + content padded
to the column's display width + a marker (` `, or `+` when the cell continues
on the next line because its value contains a newline); cells are joined by `|`.
The last column is not padded when left-aligned (no trailing blanks), and a
cell whose lines are used up prints nothing in the last column. The header is
centered and fully padded; the rule line is `-` * (width + 2) joined by `+`.
Display width counts East Asian wide characters as 2 and combining marks as 0;
tabs expand to the next multiple of 8 and other control characters print as
`\\r` / `\\xNN` (psql's pg_wcsformat).

A result with columns prints the table and the footer `(N rows)` then a blank
line; a result without columns prints its command tag (`INSERT 0 3`); a
data-modifying statement with RETURNING prints both.
"""
from __future__ import annotations

import dataclasses
import unicodedata
from typing import Any, Sequence

from quorumdb.pgtext import format_float, format_value  # noqa: F401  (the printer's cells are these texts)

# Type names psql right-aligns (its column_type_alignment(): int2/4/8, float4/8,
# numeric, oid, xid, cid, money), as QuorumDB's compute nodes name them.
NUMERIC_TYPES = frozenset({
    "smallint", "integer", "bigint", "int", "int2", "int4", "int8",
    "real", "float4", "double precision", "float8", "float",
    "numeric", "decimal", "oid", "xid", "cid", "money",
})
# Commands whose result is a table even when it has no columns.
TUPLE_COMMANDS = ("SELECT", "VALUES", "SHOW", "FETCH", "TABLE", "EXPLAIN")


@dataclasses.dataclass(frozen=True)
class PrintOptions:
    aligned: bool = True        # False: psql -A
    tuples_only: bool = False   # psql -t
    expanded: bool = False      # psql -x / \x
    field_separator: str = "|"  # psql -F (unaligned only)
    null_display: str = ""      # psql \pset null


def is_numeric_type(type_name: str) -> bool:
    base = type_name.strip().lower().split("(")[0].strip()
    return base in NUMERIC_TYPES


# --- display width ------------------------------------------------------------------
def char_width(char: str) -> int:
    if unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me", "Cf"):
        return 0
    if unicodedata.east_asian_width(char) in ("W", "F"):
        return 2
    return 1


def display_lines(text: str) -> list[tuple[str, int]]:
    """Split a cell into its printed lines, each with its display width (psql's pg_wcsformat)."""
    lines: list[tuple[str, int]] = []
    for raw_line in text.split("\n"):
        out: list[str] = []
        width = 0
        for char in raw_line:
            if char == "\t":
                spaces = 8 - width % 8
                out.append(" " * spaces)
                width += spaces
            elif char == "\r":
                out.append("\\r")
                width += 2
            elif ord(char) < 0x20 or ord(char) == 0x7F:
                out.append(f"\\x{ord(char):02X}")
                width += 4
            else:
                out.append(char)
                width += char_width(char)
        lines.append(("".join(out), width))
    return lines


def display_width(text: str) -> int:
    return max(width for _, width in display_lines(text))


# --- results --------------------------------------------------------------------------
def returns_tuples(columns: Sequence[tuple[str, str]], command_tag: str) -> bool:
    return bool(columns) or command_tag.split(" ")[0].upper() in TUPLE_COMMANDS


def row_count_footer(row_count: int) -> str:
    return "(1 row)" if row_count == 1 else f"({row_count} rows)"


def format_result(
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[Any]],
    command_tag: str,
    options: PrintOptions = PrintOptions(),
) -> str:
    """Everything psql prints for one successful statement, newline-terminated (or "")."""
    parts: list[str] = []
    if returns_tuples(columns, command_tag):
        cells = [
            [format_value(value, columns[j][1] if j < len(columns) else "", options.null_display)
             for j, value in enumerate(row)]
            for row in rows
        ]
        parts.append(format_table(columns, cells, options))
    tag_word = command_tag.split(" ")[0].upper() if command_tag else ""
    if command_tag and tag_word not in TUPLE_COMMANDS:
        parts.append(command_tag + "\n")
    return "".join(parts)


def format_table(
    columns: Sequence[tuple[str, str]],
    cells: Sequence[Sequence[str]],
    options: PrintOptions,
    title: str | None = None,
    footers: Sequence[str] | None = None,
) -> str:
    """A table of already formatted cells, in the layout the options choose.

    `title` is centered above an aligned table (psql's `List of relations`);
    `footers` replace the default `(N rows)` footer (psql's `Indexes:` lines).
    """
    headers = [name for name, _ in columns]
    right_aligned = [is_numeric_type(type_name) for _, type_name in columns]
    if footers is None:
        footers = [row_count_footer(len(cells))]
    if options.expanded:
        if options.aligned:
            return _aligned_expanded(headers, cells, options.tuples_only)
        return _unaligned_expanded(headers, cells, options.field_separator)
    if options.aligned:
        return _aligned(headers, right_aligned, cells, options.tuples_only, title, footers)
    return _unaligned(headers, cells, options.tuples_only, options.field_separator, title, footers)


def _unaligned(headers: list[str], cells: Sequence[Sequence[str]], tuples_only: bool, separator: str,
               title: str | None, footers: Sequence[str]) -> str:
    lines: list[str] = []
    if not tuples_only:
        if title:
            lines.append(title)
        lines.append(separator.join(headers))
    lines += [separator.join(row) for row in cells]
    if not tuples_only:
        lines += footers
    return "".join(line + "\n" for line in lines)


def _unaligned_expanded(headers: list[str], cells: Sequence[Sequence[str]], separator: str) -> str:
    records = ["".join(f"{h}{separator}{v}\n" for h, v in zip(headers, row)) for row in cells]
    return "\n".join(records)


def _aligned(headers: list[str], right_aligned: list[bool], cells: Sequence[Sequence[str]], tuples_only: bool,
             title: str | None, footers: Sequence[str]) -> str:
    column_count = len(headers)
    if column_count == 0:
        # psql prints only a rule for a zero-column result (`SELECT;`).
        rule = "" if tuples_only else "--\n"
        footer = "" if tuples_only else row_count_footer(len(cells)) + "\n"
        return rule + footer + "\n"
    header_lines = [display_lines(h) for h in headers]
    row_lines = [[display_lines(cell) for cell in row] for row in cells]
    widths = [max(w for _, w in lines) for lines in header_lines]
    for row in row_lines:
        for j, lines in enumerate(row):
            widths[j] = max(widths[j], max(w for _, w in lines))
    out: list[str] = []
    if not tuples_only:
        if title:
            total_width = sum(widths) + 3 * (column_count - 1) + 2
            title_width = display_width(title)
            out.append(" " * max(0, (total_width - title_width) // 2) + title)
        out += _aligned_header(header_lines, widths)
        out.append("+".join("-" * (width + 2) for width in widths))
    for row in row_lines:
        out += _aligned_row(row, widths, right_aligned)
    if not tuples_only:
        out += footers
    return "".join(line + "\n" for line in out) + "\n"


def _aligned_header(header_lines: list[list[tuple[str, int]]], widths: list[int]) -> list[str]:
    height = max(len(lines) for lines in header_lines)
    out = []
    for line_no in range(height):
        pieces = []
        for j, lines in enumerate(header_lines):
            text, width = lines[line_no] if line_no < len(lines) else ("", 0)
            left = (widths[j] - width) // 2
            right = widths[j] - width - left
            marker = "+" if line_no + 1 < len(lines) else " "
            pieces.append(" " + " " * left + text + " " * right + marker)
        out.append("|".join(pieces))
    return out


def _aligned_row(row: list[list[tuple[str, int]]], widths: list[int], right_aligned: list[bool]) -> list[str]:
    height = max(len(lines) for lines in row)
    last = len(row) - 1
    out = []
    for line_no in range(height):
        line = ""
        for j, lines in enumerate(row):
            if j > 0:
                line += "|"
            line += " "
            if line_no >= len(lines):
                if j < last:
                    line += " " * (widths[j] + 1)
                continue
            text, width = lines[line_no]
            continues = line_no + 1 < len(lines)
            padding = " " * (widths[j] - width)
            if right_aligned[j]:
                line += padding + text
            elif j < last or continues:
                line += text + padding
            else:
                line += text
            if continues:
                line += "+"
            elif j < last:
                line += " "
        out.append(line)
    return out


def _record_rule(record_number: int, header_width: int, value_width: int) -> str:
    """psql's print_aligned_vertical_line for border 1 (record 0: the tuples-only separator)."""
    out = "-"
    label_length = 0
    if record_number:
        label = f"[ RECORD {record_number} ]"
        out += label
        label_length = len(label)
    label_length += 1
    out += "-" * max(0, header_width - label_length)
    label_length -= header_width
    for piece in ("-", "+", "-"):
        if label_length <= 0:
            out += piece
        label_length -= 1
    label_length = max(0, label_length)
    out += "-" * max(0, value_width - label_length)
    return out


def _aligned_expanded(headers: list[str], cells: Sequence[Sequence[str]], tuples_only: bool) -> str:
    if not cells:
        return ("" if tuples_only else row_count_footer(0) + "\n") + "\n"
    header_lines = [display_lines(h) for h in headers]
    header_width = max([0] + [w for lines in header_lines for _, w in lines])
    row_lines = [[display_lines(cell) for cell in row] for row in cells]
    value_width = max([0] + [w for row in row_lines for lines in row for _, w in lines])
    out: list[str] = []
    for record_index, row in enumerate(row_lines):
        if not tuples_only:
            out.append(_record_rule(record_index + 1, header_width, value_width))
        elif record_index > 0:
            out.append(_record_rule(0, header_width, value_width))
        for j, value_lines in enumerate(row):
            name_lines = header_lines[j]
            for line_no in range(max(len(name_lines), len(value_lines))):
                name, name_width = name_lines[line_no] if line_no < len(name_lines) else ("", 0)
                name_marker = "+" if line_no + 1 < len(name_lines) else " "
                line = name + " " * (header_width - name_width) + name_marker + "| "
                if line_no < len(value_lines):
                    text, width = value_lines[line_no]
                    if line_no + 1 < len(value_lines):
                        line += text + " " * (value_width - width) + "+"
                    else:
                        line += text
                out.append(line)
    return "".join(line + "\n" for line in out) + "\n"


# --- errors ---------------------------------------------------------------------------
def format_error(sqlstate: str, message: str, detail: str = "", hint: str = "",
                 verbose: bool = False, prefix: str = "", context: str = "") -> str:
    """An error as psql prints it on stderr (`ERROR:  msg`; verbose adds the SQLSTATE)."""
    code = f"{sqlstate}: " if verbose and sqlstate else ""
    lines = [f"{prefix}ERROR:  {code}{message}"]
    if detail:
        lines.append(f"DETAIL:  {detail}")
    if hint:
        lines.append(f"HINT:  {hint}")
    if context:
        lines.append(f"CONTEXT:  {context}")
    return "".join(line + "\n" for line in lines)
