"""SQL errors with PostgreSQL SQLSTATE codes.

Bad input, conflicts and unavailable quorums are ordinary results, raised as
`SqlError` and returned to the client with their SQLSTATE; assertions are kept
for bugs.
"""
from __future__ import annotations

from quorumdb import timefmt

# The SQLSTATE codes QuorumDB uses, with PostgreSQL's condition names.
SYNTAX_ERROR = "42601"
UNDEFINED_TABLE = "42P01"
UNDEFINED_COLUMN = "42703"
DUPLICATE_TABLE = "42P07"
DUPLICATE_COLUMN = "42701"
DATATYPE_MISMATCH = "42804"
INVALID_TABLE_DEFINITION = "42P16"
AMBIGUOUS_COLUMN = "42702"
GROUPING_ERROR = "42803"
UNIQUE_VIOLATION = "23505"
NOT_NULL_VIOLATION = "23502"
INVALID_TEXT_REPRESENTATION = "22P02"
NUMERIC_VALUE_OUT_OF_RANGE = "22003"
STRING_DATA_RIGHT_TRUNCATION = "22001"
DIVISION_BY_ZERO = "22012"
SERIALIZATION_FAILURE = "40001"
STATEMENT_COMPLETION_UNKNOWN = "40003"
IN_FAILED_TRANSACTION = "25P02"
ACTIVE_SQL_TRANSACTION = "25001"
NO_ACTIVE_SQL_TRANSACTION = "25P01"
PROGRAM_LIMIT_EXCEEDED = "54000"
FEATURE_NOT_SUPPORTED = "0A000"
UNDEFINED_FUNCTION = "42883"
CONNECTION_FAILURE = "08006"
CANNOT_CONNECT_NOW = "57P03"
INTERNAL_ERROR = "XX000"
QUERY_CANCELED = "57014"
INVALID_PARAMETER_VALUE = "22023"
BAD_COPY_FILE_FORMAT = "22P04"
CHARACTER_NOT_IN_REPERTOIRE = "22021"
INSUFFICIENT_PRIVILEGE = "42501"
INVALID_AUTHORIZATION_SPECIFICATION = "28000"
INVALID_PASSWORD = "28P01"
CHECK_VIOLATION = "23514"
INVALID_COLUMN_REFERENCE = "42P10"
UNDEFINED_PARAMETER = "42P02"
GENERATED_ALWAYS = "428C9"
OBJECT_NOT_IN_PREREQUISITE_STATE = "55000"   # currval before nextval
SEQUENCE_GENERATOR_LIMIT_EXCEEDED = "2200H"
UNDEFINED_OBJECT = "42704"
INVALID_SCHEMA_NAME = "3F000"
READ_ONLY_SQL_TRANSACTION = "25006"


class SqlError(Exception):
    """An error reported to the client with a SQLSTATE."""

    def __init__(self, sqlstate: str, message: str, detail: str = "", hint: str = "", context: str = ""):
        super().__init__(message)
        assert len(sqlstate) == 5, sqlstate
        self.sqlstate = sqlstate
        self.message = message
        self.detail = detail
        self.hint = hint
        # Where the error happened, as PostgreSQL's CONTEXT field says it ("COPY t, line 5001").
        self.context = context

    def __repr__(self) -> str:
        return f"SqlError({self.sqlstate!r}, {self.message!r})"


def conflict(key_description: str = "") -> SqlError:
    detail = f"Conflicting key: {key_description}" if key_description else ""
    return SqlError(
        SERIALIZATION_FAILURE,
        "change conflicts with another transaction, please retry: (OC000)",
        detail=detail,
    )


STARTED_BEFORE_BACKTRACK = "transaction started before"


def started_before_backtrack_message(to_ts: int, backtrack_ts: int) -> str:
    """Why a commit is refused after a backtrack (the adjudicator says it; 40001 at the client).

    It names OC000 like every other 40001 the adjudicator gives, so clients that retry on it do."""
    return (f"{STARTED_BEFORE_BACKTRACK} a backtrack of the database to {timefmt.format_utc(to_ts)} "
            f"(backtrack commit_ts {backtrack_ts}); it must be retried: (OC000)")


def completion_unknown(why: str) -> SqlError:
    return SqlError(
        STATEMENT_COMPLETION_UNKNOWN,
        f"statement completion unknown: the commit may or may not have happened ({why})",
        hint="Check whether the transaction's effects are present before retrying it.",
    )
