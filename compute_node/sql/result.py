"""The result of one SQL statement, as the session returns it to the transport."""
from __future__ import annotations

import dataclasses

from quorumdb.errors import SqlError


class DescribeOnly(Exception):
    """A statement being described (not run) reached a point where it needs a value or a row."""


@dataclasses.dataclass
class StatementResult:
    # (name, PostgreSQL type name: integer, bigint, text, character varying, boolean, double precision)
    columns: list[tuple[str, str]]
    rows: list[tuple]          # Python values: int, float, str, bool, None
    command_tag: str           # "SELECT 3", "INSERT 0 2", "UPDATE 1", "CREATE TABLE", "BEGIN", ...
    error: SqlError | None = None

    @staticmethod
    def tag(command_tag: str) -> "StatementResult":
        return StatementResult([], [], command_tag)

    @staticmethod
    def failed(error: SqlError) -> "StatementResult":
        return StatementResult([], [], "", error)
